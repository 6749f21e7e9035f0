"""The Inception / evaluation-network paths end to end on CPU, without downloaded weights.

A state dict with Inception's exact layout but random values (written to tmp_path, sha256 computed) drives the real
code path: torch-fidelity's extractor, the sFID hook, scoring and the JSON entry point.
"""
import json
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

import eval.features as features_mod
from eval.features import check_uint8_images, content_sha256, extract_features, load_extractor
from eval.inception import (
    WEIGHTS_FILE_NAME,
    MissingWeightsError,
    WeightsHashError,
    resize_like_tf1,
    write_random_inception_weights,
)
from eval.metrics import feature_stats, frechet_distance, frechet_distance_torch
from eval.score import score, write_scores


def _images(n, seed, size=32):
    """Smooth colour ramps plus noise: diverse enough for non-degenerate features, cheap to make."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size)[None, :, None, None] * rng.integers(0, 256, (n, 1, 1, 3))
    img = 0.5 * rng.integers(0, 256, (n, 1, 1, 3)) + 0.5 * ramp + rng.integers(0, 40, (n, size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _tf1_resize_reference(img_CHW, out):
    """TF1 resize_bilinear, align_corners=False, half_pixel_centers=False: src = dst * in/out, float32 math."""
    def axis(n_in):
        src = np.arange(out, dtype=np.float32) * np.float32(n_in / out)
        lo = np.floor(src).astype(np.int64)
        return lo, np.minimum(lo + 1, n_in - 1), (src - lo).astype(np.float32)
    y0, y1, fy = axis(img_CHW.shape[1])
    x0, x1, fx = axis(img_CHW.shape[2])
    img = img_CHW.astype(np.float32)
    top = img[:, y0][:, :, x0] + (img[:, y0][:, :, x1] - img[:, y0][:, :, x0]) * fx
    bottom = img[:, y1][:, :, x0] + (img[:, y1][:, :, x1] - img[:, y1][:, :, x0]) * fx
    return top + (bottom - top) * fy[:, None]


@pytest.mark.parametrize("hw", [(17, 23), (320, 310)])
def test_resize_is_tf1_bilinear(hw):
    img = np.random.default_rng(0).integers(0, 256, (2, 3, *hw)).astype(np.float32)
    ours = resize_like_tf1(torch.from_numpy(img)).numpy()
    ref = np.stack([_tf1_resize_reference(x, 299) for x in img])
    assert ours.shape == (2, 3, 299, 299)
    assert np.abs(ours - ref).max() < 1e-3
    half_pixel = F.interpolate(torch.from_numpy(img), size=(299, 299), mode="bilinear", align_corners=False)
    assert np.abs(half_pixel.numpy() - ref).max() > 1.0  # the reference tells the two conventions apart


def test_non_uint8_input_is_rejected():
    with pytest.raises(TypeError, match="uint8.*float"):
        check_uint8_images(np.random.rand(2, 8, 8, 3).astype(np.float32))
    with pytest.raises(TypeError, match="out of range"):
        check_uint8_images(np.full((2, 8, 8, 3), 300, dtype=np.int16))
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        check_uint8_images(np.zeros((2, 3, 8, 8), dtype=np.uint8))


def test_missing_weights_fail_clearly_without_network(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("a download was attempted")
    monkeypatch.setattr("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(MissingWeightsError) as err:
        load_extractor("inception-v3-compat")
    assert WEIGHTS_FILE_NAME in str(err.value) and str(tmp_path / "hub" / "checkpoints") in str(err.value)
    with pytest.raises(MissingWeightsError, match="elsewhere.pth"):
        load_extractor("inception-v3-compat", weights_path=tmp_path / "elsewhere.pth")


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "random-inception.pth"
    sha = write_random_inception_weights(path, seed=0)
    return path, sha, load_extractor("inception-v3-compat", weights_path=path, expected_sha256=sha)


def test_weights_are_verified_by_sha256(random_inception):
    path, sha, _ = random_inception
    with pytest.raises(WeightsHashError):  # the official file's hash prefix does not match random weights
        load_extractor("inception-v3-compat", weights_path=path)
    with pytest.raises(WeightsHashError):
        load_extractor("inception-v3-compat", weights_path=path, expected_sha256="0" * 64)


def test_inception_features_match_torch_fidelity_and_hook(random_inception):
    path, sha, ex = random_inception
    img = _images(3, seed=1)
    feats = extract_features(img, ex, batch_size=2)
    assert feats["pool"].shape == (3, 2048) and feats["logits"].shape == (3, 1008)
    assert feats["spatial"].shape == (3, 17 * 17 * 7)
    # Independent route: torch-fidelity's extractor built directly, its own hook on mixed_6/conv.
    net = FeatureExtractorInceptionV3("direct", ["2048", "logits"], feature_extractor_weights_path=str(path)).eval()
    seen = {}
    net.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: seen.setdefault("x", o.clone()))
    with torch.no_grad():
        pool, logits_biased = net(torch.from_numpy(img).permute(0, 3, 1, 2))
    torch.testing.assert_close(feats["pool"], pool, rtol=1e-5, atol=1e-6)
    nhwc = seen["x"].permute(0, 2, 3, 1)[..., :7].reshape(3, -1)  # TF tensor order (N, H, W, C)
    torch.testing.assert_close(feats["spatial"], nhwc, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(feats["logits"], logits_biased - net.fc.bias, rtol=1e-4, atol=1e-4)  # no bias
    assert net.fc.bias.abs().min() > 0
    with pytest.raises(ValueError, match="uint8"):
        ex.module(torch.rand(1, 3, 32, 32))


def test_score_inception_end_to_end(random_inception, tmp_path, monkeypatch):
    path, sha, ex = random_inception
    samples, ref_images = _images(8, seed=2), _images(8, seed=3)
    stored = {"mu": np.full(2048, 0.5), "sigma": np.eye(2048) * 1e-3, "mu_s": np.full(2023, 0.1),
              "sigma_s": np.eye(2023) * 1e-4}
    ref_path = tmp_path / "VIRTUAL_ref.npz"  # ADM-style reference batch: images + Inception statistics
    np.savez(ref_path, arr_0=ref_images, **stored)
    calls = []  # spy on the real Frechet computation to see which statistics the evaluator path feeds it
    monkeypatch.setattr("eval.score.frechet_distance_torch",
                        lambda *a, **k: calls.append(a) or frechet_distance_torch(*a, **k))
    out = write_scores(tmp_path / "scores.json", samples, ref_path, extractor=ex, is_splits=2, k=3,
                       fid_backend="torch", cache_dir=tmp_path / "cache")
    assert json.loads((tmp_path / "scores.json").read_text()) == json.loads(json.dumps(out))
    keys = ["fid_inception", "sfid_inception", "is_inception", "precision_inception", "recall_inception"]
    assert all(np.isfinite(out[k]) for k in keys) and not any("evalnet" in k for k in out)
    assert out["weights_sha256"] == sha and out["extractor"] == "inception-v3-compat"
    assert (out["num_samples"], out["num_reference"]) == (8, 8) and "torch_fidelity" in out["versions"]
    assert "stored" in out["reference_stats"] and out["samples"] == "<in-memory array>"
    (mu1, _, mu2, sigma2, *_), (mu1_s, _, mu2_s, sigma2_s, *_) = calls  # FID then sFID, generated first
    assert mu1.shape == (2048,) and mu1_s.shape == (2023,)
    assert mu2 is not None and np.array_equal(mu2, stored["mu"]) and np.array_equal(sigma2, stored["sigma"])
    assert np.array_equal(mu2_s, stored["mu_s"]) and np.array_equal(sigma2_s, stored["sigma_s"])
    assert 0.0 <= out["precision_inception"] <= 1.0 and 0.0 <= out["recall_inception"] <= 1.0
    assert out["is_inception"] >= 1.0 and out["fid_inception"] > 0 and out["sfid_inception"] > 0
    assert len(list((tmp_path / "cache").iterdir())) == 1  # arr_0 features cached by content hash


class TinyEvalNet(nn.Module):
    """Stand-in honouring eval/evalnet.py's contract: features(img in [-1, 1]) -> (feat_BD, logits_BK)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.head, self.seen = nn.Conv2d(3, 6, 3, stride=2), nn.Linear(6, 5), []

    def features(self, img_B3HW):
        self.seen.append((img_B3HW.min().item(), img_B3HW.max().item()))
        feat_BD = self.conv(img_B3HW).relu().mean((2, 3))
        return feat_BD, self.head(feat_BD)


@pytest.fixture
def fake_evalnet(tmp_path, monkeypatch):
    net = TinyEvalNet()
    monkeypatch.setitem(sys.modules, "eval.evalnet", types.SimpleNamespace(load_evalnet=lambda path: net))
    ckpt = tmp_path / "evalnet.pt"
    ckpt.write_bytes(b"stand-in checkpoint")
    return ckpt, net


def test_evalnet_scores_are_labelled_and_cached(fake_evalnet, tmp_path, monkeypatch):
    ckpt, net = fake_evalnet
    samples, ref = _images(12, seed=4), _images(12, seed=5)
    samples[0, 0, 0], samples[0, 0, 1] = 0, 255
    out = score(samples, ref, extractor="evalnet", weights_path=ckpt, cache_dir=tmp_path / "c", is_splits=3)
    assert {"fid_evalnet", "is_evalnet", "precision_evalnet", "recall_evalnet"} <= set(out)
    assert not any("inception" in k for k in out) and "sfid_evalnet" not in out
    assert min(s[0] for s in net.seen) == -1.0 and max(s[1] for s in net.seen) == 1.0
    ex = load_extractor("evalnet", weights_path=ckpt)
    fs, fr = extract_features(samples, ex)["pool"], extract_features(ref, ex)["pool"]
    assert out["fid_evalnet"] == pytest.approx(frechet_distance(*feature_stats(fs), *feature_stats(fr)), rel=1e-9)
    cached = list((tmp_path / "c").iterdir())
    assert len(cached) == 1 and content_sha256(ref)[:32] in cached[0].name
    calls = []
    real_extract = features_mod.extract_features
    monkeypatch.setattr("eval.score.extract_features", lambda *a, **k: calls.append(1) or real_extract(*a, **k))
    again = score(samples, ref, extractor="evalnet", weights_path=ckpt, cache_dir=tmp_path / "c", is_splits=3)
    assert len(calls) == 1 and again["fid_evalnet"] == out["fid_evalnet"]  # reference came from the cache
    ref[0, 0, 0, 0] ^= 1  # one changed value -> a new cache entry
    score(samples, ref, extractor="evalnet", weights_path=ckpt, cache_dir=tmp_path / "c", is_splits=3)
    assert len(list((tmp_path / "c").iterdir())) == 2
    with pytest.raises(TypeError, match="uint8"):
        score(samples.astype(np.float32) / 255, ref, extractor="evalnet", weights_path=ckpt)


def test_evalnet_ignores_adm_inception_statistics(fake_evalnet, tmp_path):
    ckpt, _ = fake_evalnet
    samples, ref = _images(12, seed=6), _images(12, seed=7)
    np.savez(tmp_path / "adm.npz", arr_0=ref, mu=np.zeros(2048), sigma=np.eye(2048),
             mu_s=np.zeros(2023), sigma_s=np.eye(2023))
    from_adm = score(samples, tmp_path / "adm.npz", extractor="evalnet", weights_path=ckpt, is_splits=3)
    from_array = score(samples, ref, extractor="evalnet", weights_path=ckpt, is_splits=3)
    assert from_adm["fid_evalnet"] == from_array["fid_evalnet"] and "computed" in from_adm["reference_stats"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_inception_features_on_gpu_match_cpu(random_inception):
    path, sha, ex = random_inception
    img = _images(4, seed=8)
    gpu = extract_features(img, load_extractor("inception-v3-compat", device="cuda", weights_path=path,
                                               expected_sha256=sha))
    cpu = extract_features(img, ex)
    for k in cpu:
        torch.testing.assert_close(gpu[k].cpu(), cpu[k], rtol=1e-3, atol=1e-4)
