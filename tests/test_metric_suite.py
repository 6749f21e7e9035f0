"""eval/metric_suite.py: one call gives every new metric under explicit keys, equal to the individual functions."""
import numpy as np
import pytest
import torch

from eval.bootstrap import BootstrapConfig
from eval.fd_bias import fd_extrapolation, fd_sizes
from eval.kid import kid, mmd2_unbiased
from eval.metric_suite import SuiteConfig, suite
from eval.metrics import FrechetReference, feature_stats, frechet_distance, precision_recall
from eval.prdc import density_coverage

CFG = SuiteConfig(kid_subsets=5, kid_subset_size=100, fd_num_points=4, fd_min_size=100,
                  bootstrap=BootstrapConfig(resamples=20, level=0.9, seed=3))


def _sets():
    rng = np.random.default_rng(0)
    return (torch.from_numpy(rng.normal(size=(260, 6)).astype(np.float32)),
            torch.from_numpy((rng.normal(size=(240, 6)) * 1.1 + 0.2).astype(np.float32)))


def test_suite_keys_and_values_equal_the_individual_metrics():
    real, fake = _sets()
    out = suite(real=real, fake=fake, ext="dinov2", cfg=CFG)
    sizes = fd_sizes(240, 4, 100)
    expected_keys = {"fd_dinov2", "fd_dinov2_inf", "fd_dinov2_inf_slope", "kid_dinov2", "kid_dinov2_std",
                     "kid_dinov2_fullset", "precision_dinov2", "recall_dinov2", "density_dinov2", "coverage_dinov2",
                     "bootstrap_level", "bootstrap_resamples", *(f"fd_dinov2_at_{n}" for n in sizes),
                     *(f"{m}_dinov2_ci_{e}" for m in ("fd", "kid", "precision", "recall", "density", "coverage")
                       for e in ("low", "high"))}
    assert set(out) == expected_keys
    assert not any("fid" in k for k in out)  # DINOv2-space distances are never called FID
    assert all(isinstance(v, float) for v in out.values())

    assert out["fd_dinov2"] == pytest.approx(frechet_distance(*feature_stats(fake), *feature_stats(real)), rel=1e-9)
    curve = fd_extrapolation(FrechetReference(*feature_stats(real)), fake, sizes, seed=0)
    assert out["fd_dinov2_inf"] == pytest.approx(curve["fd_inf"], rel=1e-12)
    assert out["fd_dinov2_at_240"] == pytest.approx(out["fd_dinov2"], rel=1e-9)
    k = kid(real=real, fake=fake, subsets=5, subset_size=100)
    assert (out["kid_dinov2"], out["kid_dinov2_std"]) == pytest.approx((k["kid"], k["kid_std"]), rel=1e-12)
    assert out["kid_dinov2_fullset"] == pytest.approx(mmd2_unbiased(real=real, fake=fake), rel=1e-9)
    p, r = precision_recall(real=real, fake=fake, k=3)
    assert (out["precision_dinov2"], out["recall_dinov2"]) == (p, r)
    dc = density_coverage(real=real, fake=fake, k=5)
    assert (out["density_dinov2"], out["coverage_dinov2"]) == (dc["density"], dc["coverage"])
    for m in ("fd", "kid", "precision", "density"):  # intervals without the set-coverage shift bracket the value
        assert out[f"{m}_dinov2_ci_low"] <= out[f"{m}_dinov2"] <= out[f"{m}_dinov2_ci_high"], m
    assert out["bootstrap_level"] == 0.9 and out["bootstrap_resamples"] == 20.0


def test_suite_reference_stats_bootstrap_selection_and_names():
    real, fake = _sets()
    mu, sigma = np.zeros(6), np.eye(6)
    cfg = SuiteConfig(**{**CFG.__dict__, "bootstrap_metrics": ("precision",)})
    out = suite(real=real, fake=fake, ext="inception", cfg=cfg, reference_stats=(mu, sigma))
    assert out["fd_inception"] == pytest.approx(frechet_distance(*feature_stats(fake), mu, sigma), rel=1e-9)
    assert {k for k in out if k.endswith(("_ci_low", "_ci_high"))} == {"precision_inception_ci_low",
                                                                       "precision_inception_ci_high"}
    with pytest.raises(ValueError, match="ext"):
        suite(real=real, fake=fake, ext="fid_dinov2", cfg=CFG)
    with pytest.raises(ValueError, match="unknown bootstrap_metrics"):
        SuiteConfig(bootstrap_metrics=("sfid",))


def test_suite_inception_score_and_its_interval_from_logits():
    from eval.bootstrap import percentile_interval, resample_indices
    from eval.metrics import inception_score
    real, fake = _sets()
    logits = torch.from_numpy(np.random.default_rng(5).normal(size=(240, 12)) * 2)
    cfg = SuiteConfig(**{**CFG.__dict__, "bootstrap_metrics": ("is",), "is_splits": 4})
    out = suite(real=real, fake=fake, ext="evalnet", cfg=cfg, logits=logits)
    assert out["is_evalnet"] == inception_score(logits, 4)[0]
    idx = resample_indices(240, cfg.bootstrap)  # the same draw as every other interval
    by_hand = [inception_score(logits[torch.from_numpy(i)], 4)[0] for i in idx]
    assert (out["is_evalnet_ci_low"], out["is_evalnet_ci_high"]) == pytest.approx(
        percentile_interval(by_hand, 0.9), rel=1e-12)
    assert "is_evalnet_ci_low" not in suite(real=real, fake=fake, ext="evalnet", cfg=CFG)  # no logits, no IS
    with pytest.raises(ValueError, match="logits"):
        suite(real=real, fake=fake, ext="evalnet", cfg=cfg, logits=logits[:10])
