"""The clean-fid (legacy_tensorflow) cross-check on CPU, without downloaded weights, never skipped.

A TorchScript module with the call interface clean-fid uses for StyleGAN2-ADA's Inception (`net(img,
return_features=True)` on float images in [0, 255], a `layers` attribute) but small random weights is saved where
the configured path points, and drives the real code path: clean-fid's InceptionV3W, its folder reader, its batch
feature call and its own statistics / Frechet distance.

Cost: clean-fid always forms 2048-D statistics, and scipy's sqrtm of a 2048 x 2048 product takes 7-15 s on a 2-core
CPU, so the tests here do three of them (two FIDs through clean-fid, one reference FID) and nothing else slow.
"""
from __future__ import annotations

import argparse
import json
import logging
import urllib.request
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import eval.cleanfid_check as cc
from eval.features import Extractor
from eval.inception import MissingWeightsError, WeightsHashError, sha256_file
from eval.metrics import feature_stats, frechet_distance
from eval.score import score, write_scores
from eval.tables import extractor_of
from pipeline.params import ConfigError, build_params, load_params, load_raw
from var.weights import RefusedWeightsError

ROOT = Path(__file__).resolve().parents[1]
ACTIVE = 16  # features of the fake that vary; N images > ACTIVE + 1 keeps their covariance block non-singular
N = 24


class FakeTFInception(nn.Module):
    """Stand-in for inception-2015-12-05.pt with the interface clean-fid relies on (random weights).

    Only the first ACTIVE of the 2048 features vary, the rest are 0: the product of two covariances then has real,
    non-negative eigenvalues, so scipy's sqrtm stays on its real path (about half the time of the complex path a
    rank-deficient dense 2048-D product takes). clean-fid reshapes the output to (B, 2048), so D cannot shrink."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.Tanh(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                    nn.Linear(32, ACTIVE))

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        # Fail loudly if clean-fid calls it otherwise than the real network expects: features, float in [0, 255].
        if not return_features:
            raise RuntimeError("the fake only provides features (return_features=True)")
        if img.dtype != torch.float32 or float(img.min()) < 0.0 or float(img.max()) > 255.0 or float(img.max()) <= 1.0:
            raise RuntimeError("expected float32 images with values in [0, 255]")
        feat_BA = self.layers((img - 128.0) / 128.0)
        pad_BZ = torch.zeros(feat_BA.shape[0], 2048 - feat_BA.shape[1], dtype=feat_BA.dtype, device=feat_BA.device)
        return torch.cat([feat_BA, pad_BZ], dim=1)


def write_fake_weights(path: Path, seed: int = 0) -> str:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = torch.jit.script(FakeTFInception().eval())
    path.parent.mkdir(parents=True, exist_ok=True)
    net.save(str(path))
    return sha256_file(path)


def fake_features(path: Path, images_NHW3: np.ndarray) -> np.ndarray:
    """What the fake network yields for these images, called directly (no clean-fid code involved)."""
    net = torch.jit.load(str(path)).eval()
    with torch.no_grad():
        return net(torch.from_numpy(images_NHW3).permute(0, 3, 1, 2).float(), return_features=True).numpy()


def _images(n, seed, size=32, brightness=1.0):
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size)[None, :, None, None] * rng.integers(0, 256, (n, 1, 1, 3))
    img = 0.5 * rng.integers(0, 256, (n, 1, 1, 3)) + 0.5 * ramp + rng.integers(0, 40, (n, size, size, 3))
    return np.clip(img * brightness, 0, 255).astype(np.uint8)


def _png_folder(folder: Path, images_NHW3: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    for i, img in enumerate(images_NHW3):
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any download attempt (clean-fid uses urllib) fails the test instead of hanging on a machine without network."""
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr("cleanfid.inception_torchscript.check_download_inception", refuse)
    monkeypatch.setattr("cleanfid.features.check_download_url", refuse)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cleanfid")
    weights = root / "weights" / cc.WEIGHTS_FILE_NAME
    sha = write_fake_weights(weights)
    samples, reference = _images(N, seed=1), _images(N, seed=2, brightness=0.7)
    np.savez(root / "samples.npz", images=samples, labels=np.zeros(N, np.int64))  # our sample-file layout
    np.savez(root / "ref.npz", arr_0=reference)                                     # ADM reference layout
    return {"root": root, "weights": weights, "sha": sha, "samples": samples, "reference": reference,
            "samples_npz": root / "samples.npz", "ref_npz": root / "ref.npz",
            "samples_png": _png_folder(root / "samples_png", samples)}


class StandInInception(nn.Module):
    """Cheap primary extractor posing as Inception (7-D pool, 5 logits): the cross-check's hook is what is tested."""

    def forward(self, img_B3HW):
        x = img_B3HW.float().mean((2, 3)) / 255
        pool = torch.cat([x, x ** 2, x.prod(1, keepdim=True)], 1)
        return {"pool": pool, "logits": pool[:, :5] * 10}


def stand_in():
    return Extractor("inception-v3-compat", StandInInception(), None, torch.device("cpu"))


def test_extractor_is_clean_fids_legacy_tensorflow_extractor(files, monkeypatch):
    import cleanfid.downloads_helper
    import cleanfid.features
    from cleanfid.inception_torchscript import InceptionV3W
    from cleanfid.resize import build_resizer
    ex = cc.load_extractor(files["weights"], files["sha"])
    assert isinstance(ex.model, InceptionV3W) and ex.model.resize_inside and ex.weights_sha256 == files["sha"]
    # build_feature_extractor("legacy_tensorflow") builds InceptionV3W("/tmp", download=True, resize_inside=True):
    # the same network and flag as ours, but from a fixed folder it downloads into; that is why it is not called.
    built = []
    monkeypatch.setattr(cleanfid.features, "InceptionV3W",
                        lambda path, download=True, resize_inside=False: built.append((download, resize_inside))
                        or nn.Identity())
    cleanfid.features.build_feature_extractor(cc.MODE, device=torch.device("cpu"), use_dataparallel=False)
    assert built == [(True, True)]
    assert cleanfid.downloads_helper.inception_url == cc.WEIGHTS_URL
    x = np.zeros((4, 4, 3), np.uint8)
    assert build_resizer(cc.MODE)(x) is x  # no resize outside the network in this mode
    # clean-fid's folder reader feeds ToTensor()(uint8) * 255: exactly the uint8 values, as the array route feeds
    import torchvision
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, 2)
    assert torch.equal(torchvision.transforms.ToTensor()(ramp) * 255, torch.from_numpy(ramp).permute(2, 0, 1).float())
    # any file name works (InceptionV3W itself only accepts a folder holding inception-2015-12-05.pt)
    other = files["root"] / "elsewhere" / "stylegan-inception.pt"
    other.parent.mkdir()
    other.write_bytes(files["weights"].read_bytes())
    assert cc.load_extractor(other, files["sha"]).weights_sha256 == files["sha"]


def test_score_reports_crosscheck_separately_and_equal_to_reference_fid(files):
    samples_npz, ref_npz = files["samples_npz"], files["ref_npz"]
    out = write_scores(files["root"] / "scores.json", samples_npz, ref_npz, extractor=stand_in(), is_splits=2,
                       batch_size=10, cleanfid_weights=files["weights"], cleanfid_sha256=files["sha"])
    assert json.loads((files["root"] / "scores.json").read_text()) == json.loads(json.dumps(out))
    # The headline check: clean-fid's FID equals eval.metrics.frechet_distance on the fake network's features.
    gen, ref = fake_features(files["weights"], files["samples"]), fake_features(files["weights"], files["reference"])
    expected = frechet_distance(*feature_stats(gen), *feature_stats(ref))
    assert expected > 0.01
    assert out[cc.FID_KEY] == pytest.approx(expected, rel=1e-6)
    # Labelled separately; the primary FID is untouched and is still the table's FID.
    plain = score(samples_npz, ref_npz, extractor=stand_in(), is_splits=2, batch_size=10)
    assert out["fid_inception"] == plain["fid_inception"] and cc.FID_KEY not in plain
    assert extractor_of(out) == "inception"
    assert out[cc.REL_DIFF_KEY] == pytest.approx((out[cc.FID_KEY] - out["fid_inception"]) / out["fid_inception"],
                                                 rel=1e-12)
    rec = out["cleanfid_crosscheck"]
    assert rec["mode"] == "legacy_tensorflow" and rec["weights_sha256"] == files["sha"]
    assert rec["clean_fid_version"] == out["versions"]["clean_fid"] == version("clean-fid")
    assert (rec["num_samples"], rec["num_reference"]) == (N, N) and "fid_inception" in rec["role"]


def test_identical_sets_give_zero_across_npz_and_folder(files):
    ex = cc.load_extractor(files["weights"], files["sha"])
    out = cc.cleanfid_fid(files["samples_npz"], files["samples_png"], ex, batch_size=7)  # npz vs clean-fid's reader
    assert (out["num_samples"], out["num_reference"]) == (N, N)
    assert abs(out["fid"]) < 1e-9


def test_missing_weights_fail_clearly(files, tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / cc.WEIGHTS_FILE_NAME
    with pytest.raises(MissingWeightsError) as err:
        cc.load_extractor(missing)
    msg = str(err.value)
    assert cc.WEIGHTS_FILE_NAME in msg and str(missing) in msg and cc.WEIGHTS_URL in msg
    assert "score.cleanfid_weights" in msg
    with pytest.raises(MissingWeightsError, match=r"needs inception-2015-12-05\.pt"):
        cc.load_extractor(None)
    # Through the scoring entry point it fails before any feature extraction.
    monkeypatch.setattr("eval.score.extract_features", lambda *a, **k: pytest.fail("features extracted"))
    with pytest.raises(MissingWeightsError, match=r"inception-2015-12-05\.pt"):
        score(files["samples_npz"], files["ref_npz"], extractor=stand_in(), cleanfid_weights=missing)


def test_wrong_hash_or_file_fail_clearly(files, tmp_path):
    with pytest.raises(WeightsHashError, match="does not match"):
        cc.load_extractor(files["weights"], "0" * 64)
    for unpinned in (None, "", files["sha"][:16]):   # TorchScript runs code: only a full pin lets it load
        with pytest.raises(RefusedWeightsError, match=f"only with its full sha256 pinned.*{files['sha']}"):
            cc.load_extractor(files["weights"], unpinned)
    bogus = tmp_path / cc.WEIGHTS_FILE_NAME
    bogus.write_bytes(b"not a TorchScript archive")
    with pytest.raises(RefusedWeightsError, match="not a TorchScript archive"):
        cc.load_extractor(bogus, sha256_file(bogus))
    with pytest.raises(ValueError, match="checks the Inception FID"):
        score(files["samples_npz"], files["ref_npz"], extractor=Extractor("evalnet", StandInInception(), None,
              torch.device("cpu")), cleanfid_weights=files["weights"])


def _raw_with_score(**score_keys) -> dict:
    raw = load_raw(ROOT / "params.yaml")
    raw["score"] = {**raw.get("score", {}), **score_keys}
    return raw


def test_params_keys_are_validated():
    p = build_params(_raw_with_score(extractor="inception", inception_weights="w.pth", cleanfid_crosscheck=True,
                                     cleanfid_weights="weights/inception-2015-12-05.pt",
                                     cleanfid_weights_sha256="abcdef0123456789" * 4))
    assert p.score.cleanfid_crosscheck and p.score.cleanfid_weights.endswith(cc.WEIGHTS_FILE_NAME)
    assert load_params(ROOT / "params.yaml").score.cleanfid_crosscheck is False  # off by default
    for bad, needle in [({"cleanfid_crosschek": True}, "score.cleanfid_crosschek"),
                        ({"cleanfid_weigths": "x.pt"}, "score.cleanfid_weigths"),
                        ({"cleanfid_crosscheck": "yes"}, "score.cleanfid_crosscheck"),
                        ({"cleanfid_crosscheck": True, "cleanfid_weights": "x.pt"}, "extractor 'inception'"),
                        ({"extractor": "inception", "inception_weights": "w.pth", "cleanfid_crosscheck": True},
                         "score.cleanfid_weights"),
                        ({"cleanfid_weights_sha256": "not-hex"}, "cleanfid_weights_sha256"),
                        ({"cleanfid_weights_sha256": "abcdef0123456789"}, "cleanfid_weights_sha256")]:
        with pytest.raises(ConfigError) as e:
            build_params(_raw_with_score(**bad))
        assert needle in str(e.value), (bad, str(e.value))
    with pytest.raises(ConfigError, match="valid keys of 'score'.*cleanfid_crosscheck"):
        build_params(_raw_with_score(cleanfid_crosschek=True))


def test_score_stage_passes_the_crosscheck_keys(files, tmp_path, monkeypatch):
    import pipeline.stages.score as stage
    over = tmp_path / "over.yaml"
    over.write_text("score: {extractor: inception, inception_weights: w.pth, cleanfid_crosscheck: true, "
                    f"cleanfid_weights: {files['weights']}, cleanfid_weights_sha256: '{files['sha']}'}}\n")
    calls = []

    def spy(samples, real, **kwargs):
        calls.append(kwargs)
        return {"fid_inception": 2.0, cc.FID_KEY: 2.1, cc.REL_DIFF_KEY: 0.05}
    monkeypatch.setattr(stage, "score", spy)
    monkeypatch.setattr(stage, "load_extractor", lambda *a, **k: "inception")   # the stage loads it before scoring
    args = argparse.Namespace(params=str(ROOT / "params.yaml"), configfile=[str(over)], device="cpu", setting="",
                              scales="all", job="", name="m", samples=str(tmp_path / "s.npz"), seed_samples="",
                              sample_metrics="", real=str(files["ref_npz"]),
                              evalnet="unused.pt", untrained=None, scores=str(tmp_path / "scores.json"))
    np.savez(args.samples, images=files["samples"])  # no labels: no evalnet class accuracy
    summary = stage.main(args, logging.getLogger("test"))
    assert calls[0]["cleanfid_weights"] == str(files["weights"]) and calls[0]["cleanfid_sha256"] == files["sha"]
    assert summary["fid_inception"] == 2.0 and summary[cc.FID_KEY] == 2.1
    over.write_text("score: {extractor: inception, inception_weights: w.pth}\n")  # off: no cross-check arguments
    stage.main(args, logging.getLogger("test"))
    assert "cleanfid_weights" not in calls[1]
