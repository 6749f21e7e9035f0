"""eval/prdc.py against a direct O(N^2) transcription of Naeem et al.'s definitions, and exact synthetic cases."""
import numpy as np
import pytest
import torch

from eval.metrics import precision_recall
from eval.prdc import density_coverage


def _dc_plain(real, fake, k):
    """Naeem et al. 2020 eqs. 4-5 written out: full distance matrices, k-th neighbour excluding the point itself."""
    d_rr = np.sqrt(((real[:, None] - real[None]) ** 2).sum(-1))
    radius = np.sort(d_rr, axis=1)[:, k]                  # column 0 is the point itself
    d_rf = np.sqrt(((real[:, None] - fake[None]) ** 2).sum(-1))
    inside = d_rf < radius[:, None]                        # (N, M): fake j in the open ball of real i
    density = inside.sum() / (k * len(fake))
    coverage = (d_rf.min(1) < radius).mean()
    return density, coverage


@pytest.mark.parametrize("k", [1, 3, 5])
def test_density_coverage_match_plain_definition_and_blocking(k):
    rng = np.random.default_rng(k)
    real = rng.normal(size=(180, 7))
    fake = rng.normal(size=(150, 7)) * 1.2 + 0.3
    want = _dc_plain(real, fake, k)
    assert 0.2 < want[0] < 1.5 and 0.1 < want[1] < 1.0  # not a degenerate case
    for block in (13, 2048):
        got = density_coverage(real=real, fake=fake, k=k, block_size=block)
        assert (got["density"], got["coverage"]) == pytest.approx(want, abs=1e-12)
    got32 = density_coverage(real=torch.from_numpy(real).float(), fake=torch.from_numpy(fake).float(), k=k)
    assert (got32["density"], got32["coverage"]) == pytest.approx(want, abs=1e-12)


def test_fake_equal_to_real_gives_density_and_coverage_one():
    # Each open ball holds its centre and exactly k-1 other points: density = k N / (k N) = 1 exactly.
    x = np.random.default_rng(0).normal(size=(300, 10))
    assert density_coverage(real=x, fake=x, k=5) == {"density": 1.0, "coverage": 1.0}


def test_real_outlier_inflates_precision_but_not_density():
    """Naeem et al. Sec. 3.1. Real set: 60 points in a unit cluster at the origin plus ONE outlier at distance 50.
    The outlier's 5-th neighbour is in the cluster, so its ball has radius ~50 and swallows every generated sample
    near it, while the cluster's balls have radius ~1. Generated set: 40 points in a small cloud around the
    outlier (spread 0.5, far from the cluster). Then
      precision (k=5): every generated sample is in the outlier's ball            -> 1.0
      density   (k=5): each generated sample is in exactly one ball (the outlier's) -> 1/5 = 0.2
      coverage  (k=5): only the outlier's ball holds a generated sample           -> 1/61
    and without the outlier all three are 0: the single outlier alone moved precision from 0 to 1."""
    rng = np.random.default_rng(1)
    d = 4
    cluster = rng.normal(size=(60, d))
    outlier = np.zeros((1, d))
    outlier[0, 0] = 50.0
    real = np.concatenate([cluster, outlier])
    fake = outlier + rng.normal(size=(40, d)) * 0.5
    precision, _ = precision_recall(real=torch.from_numpy(real), fake=torch.from_numpy(fake), k=5)
    dc = density_coverage(real=real, fake=fake, k=5)
    assert precision == 1.0
    assert dc["density"] == pytest.approx(0.2, abs=1e-15)
    assert dc["coverage"] == pytest.approx(1 / 61, abs=1e-15)
    precision0, _ = precision_recall(real=torch.from_numpy(cluster), fake=torch.from_numpy(fake), k=5)
    assert precision0 == 0.0 and density_coverage(real=cluster, fake=fake, k=5) == {"density": 0.0, "coverage": 0.0}


def test_density_counts_overlapping_balls_and_rejects_bad_shapes():
    # Real: the 6 points +-e1, +-e2, +-e3. Each has 4 neighbours at sqrt(2) and 1 at 2, so its 5-NN radius is 2.
    # Generated: 3 samples near the centre (distance ~1 < 2 from every real point): each lies in all 6 balls, so
    # density = 6 / 5 = 1.2 (density is not bounded by 1) and every ball is covered.
    real = np.concatenate([np.eye(3), -np.eye(3)])
    fake = np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, -0.2, 0.1]])
    assert density_coverage(real=real, fake=fake, k=5) == pytest.approx({"density": 1.2, "coverage": 1.0}, abs=1e-15)
    with pytest.raises(ValueError, match="equal D"):
        density_coverage(real=real, fake=fake[:, :2])
