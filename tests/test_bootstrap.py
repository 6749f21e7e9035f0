"""eval/bootstrap.py: every fast path equals the metric recomputed on the resampled array, and the FD interval
covers a closed-form FD at the stated rate."""
import numpy as np
import pytest
import torch

from eval.bootstrap import (
    BootstrapConfig,
    _resample_radii,
    bootstrap_fd,
    bootstrap_generic,
    bootstrap_kid,
    bootstrap_knn,
    counts_of,
    percentile_interval,
    resample_indices,
)
from eval.kid import mmd2_unbiased
from eval.metrics import FrechetReference, feature_stats, frechet_distance, precision_recall
from eval.prdc import density_coverage


def _sets(seed=0, n=160, m=120, d=5):
    rng = np.random.default_rng(seed)
    return (torch.from_numpy(rng.normal(size=(n, d))),
            torch.from_numpy(rng.normal(size=(m, d)) * 1.15 + 0.2))


def _knn_metrics(real, fake):
    precision, recall = precision_recall(real=real, fake=fake, k=3)
    return {"precision": precision, "recall": recall, **density_coverage(real=real, fake=fake, k=5)}


@pytest.mark.parametrize("neighbours", [None, 3])
def test_knn_fast_paths_equal_recomputation_on_each_resample(neighbours):
    # neighbours=3 makes the per-sample lists too short for most resamples: the brute-force branch then decides.
    real, fake = _sets()
    idx = resample_indices(len(fake), BootstrapConfig(resamples=12, seed=3))
    want = bootstrap_generic(_knn_metrics, real, fake, idx)
    got = bootstrap_knn(real=real, fake=fake, counts_RM=counts_of(idx, len(fake)), block_size=37,
                        neighbours=neighbours)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert np.ptp(want["recall"]) > 0 and np.ptp(want["coverage"]) > 0  # the resamples really differ
    ones = np.ones((1, len(fake)), dtype=np.int64)  # a row of ones is the full set
    full = bootstrap_knn(real=real, fake=fake, counts_RM=ones)
    assert {k: v[0] for k, v in full.items()} == _knn_metrics(real, fake)


def test_recall_radius_fallback_is_exercised_and_copies_count_as_neighbours():
    _, fake = _sets(1, m=40)
    c = np.zeros(40, dtype=np.int64)
    c[:5] = [4, 2, 1, 1, 1]  # sample 0 drawn 4 times: 3 copies >= k=3 neighbours at distance 0
    d = ((fake[:, None] - fake[None]) ** 2).sum(-1).numpy()
    order = np.argsort(np.where(np.eye(40, dtype=bool), np.inf, d), axis=1)[:, :2]  # lists of 2: too short
    radii, brute = _resample_radii(c, np.take_along_axis(d, order, 1), order, 3, fake)
    assert radii[0] == 0.0 and np.isnan(radii[5:]).all()
    # sample 1 (2 copies) needs 2 more neighbours among the drawn samples 0, 2, 3, 4 (with multiplicity)
    others = np.repeat(d[1, [0, 2, 3, 4]], [4, 1, 1, 1])
    assert radii[1] == pytest.approx(np.sort(others)[1], rel=1e-12)  # brute force uses the GEMM form
    assert len(brute) > 0


def test_fd_and_kid_fast_paths_equal_recomputation():
    real, fake = _sets(2, d=4)
    idx = resample_indices(len(fake), BootstrapConfig(resamples=10, seed=5))
    counts = counts_of(idx, len(fake))
    ref_stats = feature_stats(real)
    want_fd = [frechet_distance(*feature_stats(fake[torch.from_numpy(i)]), *ref_stats) for i in idx]
    np.testing.assert_allclose(bootstrap_fd(FrechetReference(*ref_stats), fake, counts), want_fd, rtol=1e-10)
    np.testing.assert_allclose(bootstrap_fd(FrechetReference(*ref_stats), fake, counts, max_batch_elements=1),
                               want_fd, rtol=1e-10)  # the per-resample (large-D) branch
    want_kid = [mmd2_unbiased(real=real, fake=fake[torch.from_numpy(i)]) for i in idx]
    np.testing.assert_allclose(bootstrap_kid(real=real, fake=fake, counts_RM=counts, block_size=17), want_kid,
                               rtol=1e-10)


def test_resampling_is_seeded_and_percentile_interval_is_numpys():
    cfg = BootstrapConfig(resamples=5, seed=7)
    np.testing.assert_array_equal(resample_indices(50, cfg), resample_indices(50, cfg))
    assert not np.array_equal(resample_indices(50, cfg), resample_indices(50, BootstrapConfig(resamples=5, seed=8)))
    assert (counts_of(resample_indices(50, cfg), 50).sum(1) == 50).all()
    # quantiles 0.05 and 0.95 of 0..100, by hand
    assert percentile_interval(np.arange(101.0), 0.9) == pytest.approx((5.0, 95.0), rel=1e-12)
    with pytest.raises(ValueError):
        BootstrapConfig(level=1.0)


def test_fd_interval_covers_closed_form_fd_at_the_stated_rate():
    """Generated ~ N(mu2, S2), reference = the exact statistics (0, S1), S1, S2 diagonal (they commute), so
    FD = |mu2|^2 + sum_i (sqrt(S1_ii) - sqrt(S2_ii))^2 in closed form. With M = 1000 and D = 2 the FD's finite-M
    bias (~Tr(S2)/M = 0.002) is small against its spread (~2 sqrt(mu2' S2 mu2 / M) = 0.08), the regime where a
    percentile interval is expected to cover at its level. Rate: 90% intervals over T = 200 independent draws; the
    hit count is Binomial(200, 0.9), sd sqrt(0.9 * 0.1 / 200) = 0.021, so the rate must lie within 3 sd:
    [0.836, 0.964] (fails by chance with probability ~0.3%; also fails for an interval that is much too wide)."""
    s1, s2, mu2 = np.array([1.0, 2.0]), np.array([1.5, 0.8]), np.array([1.0, 0.5])
    true_fd = mu2 @ mu2 + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum()
    assert true_fd == pytest.approx(frechet_distance(mu2, np.diag(s2), np.zeros(2), np.diag(s1)), rel=1e-12)
    reference = FrechetReference(np.zeros(2), np.diag(s1))
    hits, T, m = 0, 200, 1000
    for t in range(T):
        fake = np.random.default_rng(1000 + t).normal(size=(m, 2)) * np.sqrt(s2) + mu2
        cfg = BootstrapConfig(resamples=100, level=0.9, seed=t)
        lo, hi = percentile_interval(bootstrap_fd(reference, fake, counts_of(resample_indices(m, cfg), m)), 0.9)
        hits += lo <= true_fd <= hi
    assert 0.836 <= hits / T <= 0.964, hits / T


def test_memory_budget_blocks_give_the_same_numbers(monkeypatch):
    # With a budget of 64 entries per block every distance / kernel pass runs in blocks of one or a few rows.
    import eval.metrics
    real, fake = _sets(4, n=70, m=60, d=3)
    counts = counts_of(resample_indices(60, BootstrapConfig(resamples=4, seed=1)), 60)
    ref = FrechetReference(*feature_stats(real))
    before = (bootstrap_knn(real=real, fake=fake, counts_RM=counts), density_coverage(real=real, fake=fake),
              bootstrap_kid(real=real, fake=fake, counts_RM=counts), bootstrap_fd(ref, fake, counts, 1))
    monkeypatch.setattr(eval.metrics, "MAX_BLOCK_ELEMENTS", 64)
    assert eval.metrics.block_rows(2048, 60) == 1
    after = (bootstrap_knn(real=real, fake=fake, counts_RM=counts), density_coverage(real=real, fake=fake),
             bootstrap_kid(real=real, fake=fake, counts_RM=counts), bootstrap_fd(ref, fake, counts, 1))
    for name in before[0]:
        np.testing.assert_array_equal(after[0][name], before[0][name])
    assert after[1] == before[1]
    np.testing.assert_allclose(after[2], before[2], rtol=1e-12)
    np.testing.assert_allclose(after[3], before[3], rtol=1e-12)
