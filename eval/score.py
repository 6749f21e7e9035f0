"""Score generated samples against a reference: FID, sFID (Inception only), IS, precision, recall.

Scoring is its own stage: it reads a sample file written by the sampling stage and never generates anything.
Metric keys carry the extractor's short name (`fid_inception`, `fid_evalnet`, ...), so an evaluation-network FID can
never be mistaken for an Inception FID.

Reference: a uint8 (N, H, W, 3) array, an .npz with `images`, or an ADM-style reference batch (`arr_0` images plus
Inception statistics `mu`, `sigma`, `mu_s`, `sigma_s`). As in the standard evaluator, Inception FID / sFID use the
stored statistics and precision/recall use features of `arr_0`. The stored statistics are Inception's, so the
evaluation network always recomputes its own from the images. Statistics computed from images are cached in
`cache_dir` under a key made of the extractor, its weights' sha256 and the images' content sha256.

Optional cross-check (`cleanfid_weights=`): the same FID computed by clean-fid in `legacy_tensorflow` mode
(eval/cleanfid_check.py) is added as `fid_cleanfid_legacy_tf`, with its relative difference to `fid_inception` and
a `cleanfid_crosscheck` record (clean-fid version, weights' sha256). It never replaces `fid_inception`.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import scipy
import torch
import torch_fidelity

from eval import cleanfid_check
from eval.features import Extractor, content_sha256, extract_features, load_extractor, open_images
from eval.metric_suite import SuiteConfig, suite
from eval.metrics import feature_stats, frechet_distance, frechet_distance_torch, inception_score, precision_recall
from eval.released import STORED_REFERENCE_STATS
from var.io import atomic_savez, atomic_write_json, load_npz

ADM_STAT_KEYS = ("mu", "sigma", "mu_s", "sigma_s")

LOG = logging.getLogger(__name__)   # phase times, into the stage's log


def _reference_arrays(reference) -> dict[str, np.ndarray]:
    if isinstance(reference, np.ndarray):
        return {"images": open_images(reference)}
    path = Path(reference)
    if path.is_dir():
        raise ValueError(f"{path}: reference must be an array or .npz (its content hash keys the statistics cache)")
    arrays = load_npz(path)
    arrays["images"] = open_images(path)
    return arrays


def _reference_features(images: np.ndarray, extractor: Extractor, cache_dir, batch_size: int) -> dict[str, np.ndarray]:
    """{'pool': (N, D) float32, 'mu', 'sigma'[, 'mu_s', 'sigma_s']} of the reference images, cached by content."""
    cache = None
    if cache_dir is not None:
        key = f"{extractor.short_name}-{(extractor.weights_sha256 or 'unhashed')[:16]}-{content_sha256(images)[:32]}"
        cache = Path(cache_dir) / f"refstats-{key}.npz"
        if cache.is_file():
            return load_npz(cache)
    feats = extract_features(images, extractor, batch_size=batch_size)
    out = {"pool": feats["pool"].cpu().numpy()}
    out["mu"], out["sigma"] = feature_stats(feats["pool"])
    if "spatial" in feats:
        out["mu_s"], out["sigma_s"] = feature_stats(feats["spatial"])
    if cache is not None and extractor.weights_sha256 is not None:  # an unhashed stand-in must not poison the cache
        atomic_savez(cache, **out)
    return out


def score(samples, reference, *, extractor: str | Extractor, device: str | torch.device = "cpu",
          weights_path: str | Path | None = None, expected_sha256: str | None = None, cache_dir=None,
          batch_size: int = 250, k: int = 3, pr_block_size: int = 10000, is_splits: int = 10,
          fid_backend: str = "scipy", cleanfid_weights: str | Path | None = None,
          cleanfid_sha256: str | None = None, uncertainty: SuiteConfig | None = None,
          extra_extractors: tuple[Extractor, ...] = ()) -> dict:
    """Metrics of `samples` (generated) vs `reference` (real), both uint8 images (see module docstring).

    extractor: 'inception-v3-compat' / 'evalnet', or an already loaded `Extractor` (then device/weights are its own).
    Precision/recall use k-NN radii with k=`k` on pool features, in blocks of `pr_block_size` rows on the device.
    fid_backend: 'scipy' (scipy.linalg.sqrtm on CPU, exactly the standard evaluator's computation) or 'torch'
    (`frechet_distance_torch` on the extractor's device: same value to ~1e-9 relative, seconds faster on a GPU).
    cleanfid_weights: path of clean-fid's `inception-2015-12-05.pt`; when given, the clean-fid cross-check of the
    Inception FID runs too (checked against `cleanfid_sha256` if given; see eval/cleanfid_check.py).
    uncertainty: also KID, density/coverage, the FD sample-size curve with FD_inf, and bootstrap intervals over the
    generated set (eval/metric_suite.py); the Frechet distance's keys there are `fid_<extractor>_...` (the same
    distance as `fid_<extractor>`). extra_extractors: further feature spaces (DINOv2), reported under their own
    names (`fd_dinov2`, `kid_dinov2`, ...), never as FID."""
    if fid_backend not in ("scipy", "torch"):
        raise ValueError(f"fid_backend must be 'scipy' or 'torch', got {fid_backend!r}")
    if isinstance(extractor, str):
        extractor = load_extractor(extractor, device=device, weights_path=weights_path,
                                   expected_sha256=expected_sha256)
    name = extractor.short_name
    crosscheck = None
    if cleanfid_weights is not None:
        if name != "inception":
            raise ValueError(f"the clean-fid cross-check checks the Inception FID; the extractor is {extractor.name!r}")
        # Loaded (and its weights hashed) before any feature extraction: a missing file fails in seconds.
        crosscheck = cleanfid_check.load_extractor(cleanfid_weights, cleanfid_sha256, device=extractor.device)
    t0 = time.perf_counter()
    ref = _reference_arrays(reference)
    ref_feats = _reference_features(ref["images"], extractor, cache_dir, batch_size)
    LOG.info("reference features (%s): %.1f s", name, time.perf_counter() - t0)
    stats_source = "computed from reference images"
    if extractor.short_name == "inception" and all(key in ref for key in ADM_STAT_KEYS):
        ref_feats.update({key: ref[key] for key in ADM_STAT_KEYS})  # the evaluator's FID uses the stored stats
        stats_source = STORED_REFERENCE_STATS

    t0 = time.perf_counter()
    feats = extract_features(samples, extractor, batch_size=batch_size)
    LOG.info("features of %d samples (%s): %.1f s", feats["pool"].shape[0], name, time.perf_counter() - t0)
    t0 = time.perf_counter()

    def fid(feats_ND, mu_ref, sigma_ref):  # generated first, reference second, as in the standard evaluator
        mu, sigma = feature_stats(feats_ND)
        if fid_backend == "torch":
            return frechet_distance_torch(mu, sigma, mu_ref, sigma_ref, device=extractor.device)
        return frechet_distance(mu, sigma, mu_ref, sigma_ref)

    metrics = {f"fid_{name}": fid(feats["pool"], ref_feats["mu"], ref_feats["sigma"])}
    if "spatial" in feats:
        metrics[f"sfid_{name}"] = fid(feats["spatial"], ref_feats["mu_s"], ref_feats["sigma_s"])
    metrics[f"is_{name}"], metrics[f"is_std_{name}"] = inception_score(feats["logits"], splits=is_splits)
    real_ND = torch.from_numpy(ref_feats["pool"]).to(feats["pool"].device)
    metrics[f"precision_{name}"], metrics[f"recall_{name}"] = precision_recall(
        real=real_ND, fake=feats["pool"], k=k, block_size=pr_block_size)
    LOG.info("FID, sFID, IS, precision/recall: %.1f s", time.perf_counter() - t0)
    if uncertainty is not None:
        t0 = time.perf_counter()
        stored = (ref_feats["mu"], ref_feats["sigma"]) if stats_source == STORED_REFERENCE_STATS else None
        metrics.update(_suite_keys(real_ND, feats, name, uncertainty, stored, primary=True))
        for ext in extra_extractors:
            real_x = extract_features(ref["images"], ext, batch_size=batch_size)["pool"]
            fake_x = extract_features(samples, ext, batch_size=batch_size)["pool"].to(real_x.device)
            metrics.update(_suite_keys(real_x, {"pool": fake_x}, ext.short_name, uncertainty, None, primary=False))
        LOG.info("metric suite (KID, density/coverage, FD curve, %d bootstrap resamples): %.1f s",
                 uncertainty.bootstrap.resamples, time.perf_counter() - t0)
    if crosscheck is not None:  # its own keys after the primary metrics; fid_inception is left as computed
        metrics.update(cleanfid_check.report(samples, ref["images"], crosscheck, metrics["fid_inception"],
                                             batch_size=batch_size))
    versions = {"torch": torch.__version__, "torch_fidelity": torch_fidelity.__version__, "numpy": np.__version__,
                "scipy": scipy.__version__}
    if crosscheck is not None:
        versions["clean_fid"] = cleanfid_check.clean_fid_version()
    return {
        **metrics,
        "extractor": extractor.name,
        "weights_sha256": extractor.weights_sha256,
        "num_samples": int(feats["pool"].shape[0]),
        "num_reference": int(real_ND.shape[0]),
        "reference_stats": stats_source,
        "settings": {"k": k, "is_splits": is_splits, "batch_size": batch_size, "pr_block_size": pr_block_size,
                     "fid_backend": fid_backend},
        "versions": versions,
    }


def _suite_keys(real_ND, feats: dict, name: str, cfg: SuiteConfig, stored_stats, primary: bool) -> dict:
    """The metric suite's keys for one feature space. In the primary space FD is the FID already reported, so its
    keys read `fid_<name>...`; precision / recall / IS keep the values computed above (same definitions)."""
    m, n = feats["pool"].shape[0], real_ND.shape[0]
    cfg = dataclasses.replace(cfg, kid_subset_size=min(cfg.kid_subset_size, m, n))
    out = suite(real=real_ND, fake=feats["pool"], ext=name, cfg=cfg, reference_stats=stored_stats,
                logits=feats.get("logits") if primary else None)
    if not primary:
        return out
    keep = {}
    for k, v in out.items():
        if k == f"fd_{name}" or k in (f"precision_{name}", f"recall_{name}", f"is_{name}"):
            continue                      # the values of the standard computation above stay the reported ones
        keep[f"fid{k[2:]}" if k.startswith(f"fd_{name}") else k] = v
    return keep


def write_scores(out_path: str | Path, samples, reference, **kwargs) -> dict:
    """Entry point of the score stage: `score(...)` then write the metrics JSON atomically to `out_path`."""
    result = score(samples, reference, **kwargs)
    for role, src in (("samples", samples), ("reference", reference)):
        result[role] = str(src) if isinstance(src, (str, Path)) else "<in-memory array>"
    atomic_write_json(out_path, result)
    return result
