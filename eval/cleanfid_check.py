"""Optional cross-check of the Inception FID with clean-fid in `legacy_tensorflow` mode, strictly offline.

What it is. clean-fid (Parmar et al., CVPR 2022; `clean-fid==0.1.35`) in mode "legacy_tensorflow" follows the TF
FID recipe with its own code from end to end: its own feature extractor (`cleanfid.inception_torchscript.
InceptionV3W`, a wrapper of StyleGAN2-ADA's TorchScript translation of TF Inception 2015-12-05 that resizes
inside the network, `resize_inside=True`), its own folder reader (`cleanfid.fid.get_folder_features`: PIL ->
RGB, no resize outside the network in this mode), its own batch call (`cleanfid.fid.get_batch_features`) and its
own statistics and distance (`cleanfid.fid.fid_from_feats`: np.mean, np.cov, `cleanfid.fid.frechet_distance`).
None of torch-fidelity (eval/inception.py) or eval/metrics.py is involved, so agreement with `fid_inception` is
evidence that neither path has a plumbing bug (reading, value range, resize convention, statistics). Both are
ports of the same TF graph, so a large relative difference means a bug. The usual size of the small gap has not
been measured here: this was written without the real weights.

The value is reported under its own key, `fid_cleanfid_legacy_tf` (see `report`), next to `fid_inception` and
never in its place. The key has underscores after `fid_`, so eval/tables.py can never take it for a
`fid_<extractor>` key.

Weights (clean-fid documents neither a hash nor a size for this file):
    file name : inception-2015-12-05.pt (the name `InceptionV3W` joins to the folder it is given)
    origin    : https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt
                (`inception_url` in cleanfid/downloads_helper.py of clean-fid 0.1.35; StyleGAN2-ADA's metrics
                use the same URL)
    sha256    : not known here: neither clean-fid nor StyleGAN2-ADA publishes one, and this was written without
                network access. It must be pinned (params: `score.cleanfid_weights_sha256`, the full 64 hex
                digits) before the file is loaded at all; the refusal message prints the file's digest to check
                against a trusted copy. Every report records it (`cleanfid_crosscheck.weights_sha256`).
    size      : not published either, so not checked.
    where     : any path, given as `weights_path` (params: `score.cleanfid_weights`). A missing file raises
                `MissingWeightsError` naming the file, its origin and the configured path.

Why the pin is required. The file is a TorchScript archive, and `torch.jit.load` runs the archive's code: a
`__setstate__` in it runs during the load, and TorchScript can call `aten::save` / `aten::from_file` (write / read
any file), which is enough to plant Python code (tests/test_weights_safety.py builds such an archive and shows
`torch.jit.load` writing a file from `__setstate__`). Its tensors could be read without running it, but the forward
(TF-style resize inside the network, then the layers) would have to be re-implemented, unverifiable without the
file, and no longer clean-fid's own code, which is the point of the cross-check. So the archive is loaded only when
its full sha256 is pinned (`var.weights.read_pinned_torchscript`): a substituted or tampered file is refused before
any of its code runs, and archives whose code uses `__setstate__` or file operators are refused even when pinned.
The checked bytes (not the path) are what `InceptionV3W` loads, from a private temporary folder.

Why not `cleanfid.features.build_feature_extractor`: it hard-codes the folder (/tmp, or ./ on Windows) and calls
`check_download_inception`, which fetches the file with urllib (no timeout, no hash check) whenever it is missing
there. `load_extractor` builds exactly what that function builds for this mode, `InceptionV3W(folder,
download=False, resize_inside=True)`, without the DataParallel wrapper (tests/test_cleanfid_check.py pins the
equivalence against the installed clean-fid); with `download=False` clean-fid never touches the network.
`cleanfid.features.get_reference_statistics` is not used either: it serves clean-fid's precomputed statistics of
named datasets (downloaded); here the reference statistics come from the reference images, through clean-fid.

clean-fid is imported lazily, so `import eval.score` does not pay for it (or for torchvision) unless the
cross-check runs.
"""
from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from eval.features import open_images
from var.precision import fp32_precision
from var.weights import MissingWeightsError, WeightsHashError, read_pinned_torchscript  # noqa: F401 (re-exported)

MODE = "legacy_tensorflow"
WEIGHTS_FILE_NAME = "inception-2015-12-05.pt"
WEIGHTS_URL = ("https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
               "inception-2015-12-05.pt")  # documentation only: never fetched (a test pins it to clean-fid's)
FEATURE_DIM = 2048  # InceptionV3W reshapes the network's output to (B, 2048)

# Keys of the metrics JSON. The FID key is not of the form fid_<extractor> (see the module docstring).
FID_KEY = "fid_cleanfid_legacy_tf"
REL_DIFF_KEY = f"{FID_KEY}_rel_diff"
PRIMARY_KEY = "fid_inception"


def clean_fid_version() -> str:
    return version("clean-fid")


PARAMS_KEY = "score.cleanfid_weights"


def read_weights(weights_path: str | Path | None, expected_sha256: str | None) -> tuple[Path, bytes, str]:
    """(path, bytes, sha256) of the configured archive, refused unless its full sha256 is `expected_sha256`."""
    hint = (f"the clean-fid cross-check needs {WEIGHTS_FILE_NAME} (clean-fid's TorchScript Inception, from "
            f"{WEIGHTS_URL}): put it on disk and pass its path as weights_path (params: {PARAMS_KEY}). Nothing is "
            f"downloaded at run time.")
    data, digest = read_pinned_torchscript(weights_path, expected_sha256, key=PARAMS_KEY,
                                           what="clean-fid Inception weights", hint=hint)
    return Path(weights_path), data, digest


@dataclass(frozen=True)
class CleanFIDExtractor:
    model: nn.Module  # cleanfid.inception_torchscript.InceptionV3W, resize_inside=True (legacy_tensorflow)
    weights_path: Path
    weights_sha256: str
    device: torch.device


def load_extractor(weights_path: str | Path | None, expected_sha256: str | None = None, *,
                   device: str | torch.device = "cpu") -> CleanFIDExtractor:
    """clean-fid's legacy_tensorflow feature extractor from a local file whose full sha256 is pinned; never
    downloads."""
    from cleanfid.inception_torchscript import InceptionV3W
    path, data, digest = read_weights(weights_path, expected_sha256)
    with tempfile.TemporaryDirectory(prefix="cleanfid-weights-") as tmp:   # created 0700: only we can swap it
        (Path(tmp) / WEIGHTS_FILE_NAME).write_bytes(data)   # InceptionV3W only takes a folder holding that name
        try:
            # What build_feature_extractor("legacy_tensorflow") builds, minus the /tmp download and DataParallel.
            model = InceptionV3W(tmp, download=False, resize_inside=True)
        except (RuntimeError, AttributeError, ValueError) as e:  # not that network
            raise ValueError(f"{path} could not be loaded as clean-fid's TorchScript Inception ({WEIGHTS_FILE_NAME} "
                             f"from {WEIGHTS_URL}): {e}") from e
    device = torch.device(device)
    return CleanFIDExtractor(model.to(device).eval(), path, digest, device)


def features(images, extractor: CleanFIDExtractor, *, batch_size: int = 250, num_workers: int = 0) -> np.ndarray:
    """(N, 2048) float32 clean-fid features of an image folder, a uint8 (N, H, W, 3) array or our .npz.

    Folders are read by clean-fid itself. Arrays go batch by batch to `cleanfid.fid.get_batch_features` as float
    (B, 3, H, W) in [0, 255]: in this mode clean-fid applies no resize outside the network, and its folder reader
    hands the network ToTensor()(uint8) * 255, which equals the uint8 values exactly in float32 (all 256 of them),
    so both routes feed the network identical tensors."""
    from cleanfid import fid as cfid
    # fp32 convolutions as in our extractor: cuDNN would otherwise use TF32 on Ampere+ (~1e-3 relative error),
    # adding an error of its own to the difference this check measures.
    with fp32_precision(False):
        if isinstance(images, (str, Path)) and Path(images).is_dir():
            try:
                feats_ND = cfid.get_folder_features(str(images), extractor.model, num_workers=num_workers,
                                                    batch_size=batch_size, device=extractor.device, mode=MODE,
                                                    verbose=False)
            except ValueError as e:  # e.g. np.concatenate of nothing: no image file clean-fid recognises
                raise ValueError(f"{images}: clean-fid could not read images from this folder ({e})") from e
        else:
            arr_NHW3 = open_images(images)  # uint8 (N, H, W, 3), checked
            parts = [cfid.get_batch_features(torch.from_numpy(arr_NHW3[i:i + batch_size]).permute(0, 3, 1, 2)
                                             .float(), extractor.model, extractor.device)
                     for i in range(0, len(arr_NHW3), batch_size)]
            feats_ND = np.concatenate(parts) if parts else np.zeros((0, FEATURE_DIM), np.float32)
    if feats_ND.shape[0] < 2:
        src = images if isinstance(images, (str, Path)) else "the array"
        raise ValueError(f"FID needs at least 2 images, got {feats_ND.shape[0]} from {src}")
    return feats_ND


def fid_from_features(gen_feats_ND: np.ndarray, ref_feats_MD: np.ndarray) -> float:
    """clean-fid's own statistics and Frechet distance, generated first (as its compare_folders does)."""
    from cleanfid import fid as cfid
    try:
        with warnings.catch_warnings():
            # clean-fid 0.1.35 calls sqrtm(..., disp=False): deprecated in SciPy 1.16 (a DeprecationWarning each
            # call), removed in 1.18 (then a TypeError, caught below).
            warnings.filterwarnings("ignore", message=".*`disp` argument is deprecated", category=DeprecationWarning)
            return float(cfid.fid_from_feats(gen_feats_ND, ref_feats_MD))
    except TypeError as e:
        if "disp" in str(e):
            raise RuntimeError(f"clean-fid {clean_fid_version()} calls scipy.linalg.sqrtm(disp=False), which this "
                               f"SciPy no longer accepts; the cross-check needs scipy<1.18") from e
        raise


def cleanfid_fid(samples, reference, extractor: CleanFIDExtractor, *, batch_size: int = 250,
                 num_workers: int = 0) -> dict:
    """{'fid', 'num_samples', 'num_reference'} of `samples` (generated) vs `reference` (real), both through clean-fid.

    Each is an image folder, a uint8 (N, H, W, 3) array, or an .npz with `images` (ours) or `arr_0` (ADM)."""
    gen_ND = features(samples, extractor, batch_size=batch_size, num_workers=num_workers)
    ref_MD = features(reference, extractor, batch_size=batch_size, num_workers=num_workers)
    return {"fid": fid_from_features(gen_ND, ref_MD), "num_samples": int(gen_ND.shape[0]),
            "num_reference": int(ref_MD.shape[0])}


def report(samples, reference, extractor: CleanFIDExtractor, primary_fid: float, *, batch_size: int = 250,
           num_workers: int = 0) -> dict:
    """The metrics-JSON entries of the cross-check: `fid_cleanfid_legacy_tf`, its relative difference to the primary
    `fid_inception`, and a `cleanfid_crosscheck` record of how it was computed (clean-fid version, weights' sha256)."""
    out = cleanfid_fid(samples, reference, extractor, batch_size=batch_size, num_workers=num_workers)
    rel = (out["fid"] - primary_fid) / abs(primary_fid) if primary_fid != 0 else None
    return {
        FID_KEY: out["fid"],
        REL_DIFF_KEY: rel,
        "cleanfid_crosscheck": {
            "role": f"cross-check only; the reported FID is {PRIMARY_KEY}",
            "mode": MODE,
            "clean_fid_version": clean_fid_version(),
            "weights_file": str(extractor.weights_path),
            "weights_sha256": extractor.weights_sha256,
            "rel_diff": f"({FID_KEY} - {PRIMARY_KEY}) / |{PRIMARY_KEY}|",
            "reference_stats": "computed by clean-fid from the reference images (stored ADM statistics unused)",
            "num_samples": out["num_samples"],
            "num_reference": out["num_reference"],
        },
    }
