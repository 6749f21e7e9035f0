"""eval/metrics.py against independent references (scipy, numpy, torch-fidelity) and exact synthetic cases.

torch-fidelity 0.3.0 (the pinned version) ships FID and IS but no precision/recall (metric_prc arrived in 0.4), so
precision/recall are checked against an independent numpy transcription of the standard evaluator's algorithm
(full distance matrix, np.partition, `<=`) instead.
"""
import numpy as np
import pytest
import scipy.linalg
import torch
from torch_fidelity.metric_fid import fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric

from eval.metrics import (
    feature_stats,
    frechet_distance,
    frechet_distance_torch,
    inception_score,
    knn_radii,
    precision_recall,
)


def _feats(seed, n=300, d=24, scale=1.0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)  # correlated, full-rank features
    return rng.normal(size=(n, d)) @ mix * scale + rng.normal(size=d)


def _fid_reference(x, y):
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


def test_feature_stats_match_numpy_and_torch_path():
    x = _feats(0)
    mu, sigma = feature_stats(x)
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-12)
    mu_t, sigma_t = feature_stats(torch.from_numpy(x))
    np.testing.assert_allclose(mu_t, mu, rtol=1e-12)
    np.testing.assert_allclose(sigma_t, sigma, rtol=1e-10, atol=1e-14)
    assert mu.dtype == sigma.dtype == sigma_t.dtype == np.float64


def test_fid_matches_scipy_reference_and_torch_fidelity():
    x, y = _feats(1), _feats(2, scale=1.3)
    fid = frechet_distance(*feature_stats(x), *feature_stats(y))
    assert fid > 1.0
    assert fid == pytest.approx(_fid_reference(x, y), rel=1e-9)
    s1, s2 = dict(zip(("mu", "sigma"), feature_stats(x))), dict(zip(("mu", "sigma"), feature_stats(y)))
    tf_fid = fid_statistics_to_metric(s1, s2, verbose=False)["frechet_inception_distance"]
    assert fid == pytest.approx(tf_fid, rel=1e-9)
    assert frechet_distance_torch(*feature_stats(x), *feature_stats(y)) == pytest.approx(fid, rel=1e-9)


def test_fid_identical_sets_is_zero_and_shift_adds_squared_norm():
    x = _feats(3)
    stats = feature_stats(x)
    assert abs(frechet_distance(*stats, *stats)) < 1e-8
    c = np.random.default_rng(4).normal(size=x.shape[1]) * 3
    shifted = feature_stats(x + c)
    assert frechet_distance(*shifted, *stats) == pytest.approx(float(c @ c), rel=1e-9)
    assert frechet_distance_torch(*shifted, *stats) == pytest.approx(float(c @ c), rel=1e-9)


def test_fid_singular_covariances_stay_finite():
    x, y = _feats(5, n=10, d=32), _feats(6, n=10, d=32)  # rank 9 < 32: the product is singular
    fid = frechet_distance(*feature_stats(x), *feature_stats(y))
    assert np.isfinite(fid) and fid > 0
    with pytest.raises(ValueError, match="mismatched"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def _is_reference(logits, splits):
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    n, out = len(p), []
    for i in range(splits):
        part = p[i * n // splits:(i + 1) * n // splits]
        py = part.mean(0, keepdims=True)
        kl = np.where(part > 0, part * (np.log(np.where(part > 0, part, 1)) - np.log(py)), 0.0)
        out.append(np.exp(kl.sum(1).mean()))
    return np.mean(out), np.std(out)


def test_is_uniform_is_one_and_balanced_one_hot_is_k():
    assert inception_score(np.zeros((40, 7)), splits=4) == pytest.approx((1.0, 0.0), abs=1e-12)
    k, n = 8, 8 * 5 * 4
    logits = np.full((n, k), -50.0)
    logits[np.arange(n), np.arange(n) % k] = 50.0  # every consecutive split holds each class equally often
    mean, std = inception_score(logits, splits=4)
    assert mean == pytest.approx(k, rel=1e-9) and std == pytest.approx(0, abs=1e-9)


def test_is_matches_independent_formula_and_torch_fidelity_unshuffled():
    logits = np.random.default_rng(7).normal(size=(1003, 50)) * 3  # N not divisible by splits
    mean, std = inception_score(logits, splits=10)
    ref_mean, ref_std = _is_reference(logits, 10)
    assert mean == pytest.approx(ref_mean, rel=1e-10) and std == pytest.approx(ref_std, rel=1e-8)
    tf = isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=False)
    assert mean == pytest.approx(tf["inception_score_mean"], rel=1e-10)
    assert std == pytest.approx(tf["inception_score_std"], rel=1e-8)


def test_is_splits_are_consecutive_not_shuffled():
    logits = np.full((100, 2), -30.0)
    logits[:50, 0] = logits[50:, 1] = 30.0  # first half class 0, second half class 1
    assert inception_score(logits, splits=2)[0] == pytest.approx(1.0, abs=1e-9)  # a shuffle would give ~2


def _pr_reference(real, fake, k):
    """Standard evaluator's algorithm in numpy: full squared-distance matrices, np.partition at index k."""
    def sq(a, b):
        return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    r_real = np.partition(sq(real, real), k, axis=1)[:, k]
    r_fake = np.partition(sq(fake, fake), k, axis=1)[:, k]
    precision = (sq(fake, real) <= r_real[None]).any(1).mean()
    recall = (sq(real, fake) <= r_fake[None]).any(1).mean()
    return precision, recall


@pytest.mark.parametrize("k", [1, 3, 5])
def test_precision_recall_match_reference_and_blocking(k):
    real, fake = _feats(8, n=150, d=8), _feats(9, n=120, d=8, scale=1.4)
    ref = _pr_reference(real, fake, k)
    assert 0.05 < ref[0] < 0.95 and 0.05 < ref[1] < 0.95  # a non-trivial case
    full = precision_recall(real=torch.from_numpy(real), fake=torch.from_numpy(fake), k=k, block_size=10000)
    blocked = precision_recall(real=torch.from_numpy(real), fake=torch.from_numpy(fake), k=k, block_size=7)
    assert full == pytest.approx(ref, abs=1e-12)
    assert blocked == full


@pytest.mark.parametrize("k", [3, 5])
def test_precision_recall_equal_torch_fidelity(k):
    """torch-fidelity's own implementation (features_1 = generated, features_2 = real) gives the same numbers."""
    from torch_fidelity.metric_prc import calculate_precision_recall_full
    real, fake = _feats(12, n=140, d=6), _feats(13, n=110, d=6, scale=1.1)
    ours = precision_recall(real=torch.from_numpy(real), fake=torch.from_numpy(fake), k=k)
    theirs = calculate_precision_recall_full(torch.from_numpy(fake), torch.from_numpy(real), neighborhood=k)
    assert 0.05 < ours[0] < 0.95 and 0.05 < ours[1] < 0.95
    # Both are fractions of samples; torch-fidelity averages in float32, so compare the counts exactly.
    assert round(ours[0] * 110) == round(theirs[0] * 110) and round(ours[1] * 140) == round(theirs[1] * 140)


def test_knn_radius_excludes_self():
    pts = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    assert knn_radii(pts, k=1).tolist() == [1.0, 1.0, 4.0, 16.0]
    assert knn_radii(pts, k=2, block_size=3).tolist() == [9.0, 4.0, 9.0, 36.0]
    # 0.5 lies within 1 of real point 0; with the self distance counted as the 1st neighbour it would be outside.
    assert precision_recall(real=pts, fake=torch.tensor([[0.5], [0.6]], dtype=torch.float64), k=1)[0] == 1.0


def test_mode_collapse_gives_high_precision_low_recall():
    real = torch.from_numpy(_feats(10, n=200, d=16))
    noise = torch.from_numpy(np.random.default_rng(11).normal(size=(100, 16))) * 1e-3
    fake = real[:1] + noise  # many near-copies of one real point
    precision, recall = precision_recall(real=real, fake=fake, k=3)
    assert precision == 1.0
    assert recall <= 0.02  # swapped arguments would give (<=0.02, 1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_precision_recall_on_gpu_matches_cpu():
    real, fake = torch.from_numpy(_feats(12, n=500, d=32)), torch.from_numpy(_feats(13, n=400, d=32, scale=1.2))
    cpu = precision_recall(real=real, fake=fake, k=3, block_size=64)
    gpu = precision_recall(real=real.cuda(), fake=fake.cuda(), k=3, block_size=64)
    assert gpu == pytest.approx(cpu, abs=1e-12)
    mu, sigma = feature_stats(real.numpy())
    mu2, sigma2 = feature_stats(fake.numpy())
    assert frechet_distance_torch(mu, sigma, mu2, sigma2, device="cuda") == pytest.approx(
        frechet_distance(mu, sigma, mu2, sigma2), rel=1e-9)
