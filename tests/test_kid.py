"""eval/kid.py against torch-fidelity's KID (same subsets, same RNG) and a plain O(N^2) MMD^2_u written here."""
import numpy as np
import pytest
import torch
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

from eval.kid import kid, kid_subset_values, mmd2_unbiased


def _sets(seed=0, n_real=400, n_fake=300, d=24):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_real, d)), rng.normal(size=(n_fake, d)) * 1.1 + 0.15


def _mmd2_plain(x, y):
    # Gretton et al. 2012 eq. 3 with k(a, b) = (a.b/d + 1)^3, every kernel value written out.
    d = x.shape[1]
    kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    n, m = len(x), len(y)
    return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * kxy.mean())


def test_kid_equals_torch_fidelity_with_the_same_subsets():
    real, fake = _sets()
    tf = kid_features_to_metric(torch.from_numpy(fake), torch.from_numpy(real), kid_subsets=8,
                                kid_subset_size=150, rng_seed=11, verbose=False)
    ours = kid(real=real, fake=fake, subsets=8, subset_size=150, seed=11, block_size=64)
    assert tf[KEY_METRIC_KID_MEAN] > 0.01  # a real difference, not rounding
    assert ours["kid"] == pytest.approx(tf[KEY_METRIC_KID_MEAN], rel=1e-11)
    assert ours["kid_std"] == pytest.approx(tf[KEY_METRIC_KID_STD], rel=1e-9)
    # a different seed draws different subsets: the match above is not an accident of the defaults
    other = kid(real=real, fake=fake, subsets=8, subset_size=150, seed=12)
    assert other["kid"] != pytest.approx(tf[KEY_METRIC_KID_MEAN], rel=1e-6)


def test_kid_defaults_are_torch_fidelitys():
    from torch_fidelity.defaults import DEFAULTS

    from eval import kid as kid_module
    assert (kid_module.SUBSETS, kid_module.SUBSET_SIZE, kid_module.SEED) == (
        DEFAULTS["kid_subsets"], DEFAULTS["kid_subset_size"], DEFAULTS["rng_seed"])
    assert (DEFAULTS["kid_kernel"], DEFAULTS["kid_kernel_poly_degree"], DEFAULTS["kid_kernel_poly_gamma"],
            DEFAULTS["kid_kernel_poly_coef0"]) == ("poly", 3, None, 1)  # (x.y/d + 1)^3, the kernel used here


def test_full_set_mmd2_matches_plain_formula_and_is_block_independent():
    real, fake = _sets(2, n_real=130, n_fake=90)
    ref = _mmd2_plain(real, fake)
    assert ref > 0.01
    for block in (7, 64, 4096):
        assert mmd2_unbiased(real=real, fake=fake, block_size=block) == pytest.approx(ref, rel=1e-12)
    # symmetric in the two sets (the roles only document which is which)
    assert mmd2_unbiased(real=fake, fake=real) == pytest.approx(ref, rel=1e-12)


def test_subset_values_are_plain_mmd_of_torch_fidelity_subsets():
    real, fake = _sets(3, n_real=60, n_fake=50, d=5)
    vals = kid_subset_values(real=real, fake=fake, subsets=3, subset_size=20, seed=5)
    rng = np.random.RandomState(5)  # torch-fidelity's order: generated indices first, then real
    for v in vals:
        f = fake[rng.choice(50, 20, replace=False)]
        r = real[rng.choice(60, 20, replace=False)]
        assert v == pytest.approx(_mmd2_plain(r, f), rel=1e-12)


def test_identical_distributions_give_near_zero_and_refuse_bad_sizes():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2000, 6))
    y = rng.normal(size=(2000, 6))
    assert abs(mmd2_unbiased(real=x, fake=y)) < 2e-3  # unbiased: centred on 0, can be slightly negative
    with pytest.raises(ValueError, match="subset_size"):
        kid(real=x[:50], fake=y, subset_size=100)
    with pytest.raises(ValueError, match="equal D"):
        mmd2_unbiased(real=x, fake=y[:, :5])
