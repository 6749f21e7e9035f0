"""Kernel Inception Distance (Binkowski et al. 2018, arXiv:1801.01401): unbiased MMD^2 with a cubic polynomial kernel.

    k(x, y) = (x . y / d + 1)^3,   d = feature dimension.

MMD^2_u (Gretton et al. 2012, eq. 3) of X (m samples) and Y (n samples):
    sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (n (n - 1)) - 2 sum_{i, j} k(x_i, y_j) / (m n).

KID is that estimator averaged over `subsets` random subsets of `subset_size` samples of each set, as torch-fidelity
computes it (`torch_fidelity.metric_kid.kid_features_to_metric`): one `np.random.RandomState(seed)`, and for every
subset first the GENERATED indices, then the REAL ones, each `rng.choice(n, subset_size, replace=False)`; the result
is the mean and the population std (ddof=0) of the per-subset values. With the same seed and features this gives
torch-fidelity's numbers (it computes in the features' dtype; pass float64 to compare at rounding level).

Kernel sums are taken in blocks of rows, so memory is O(block_size * n) whatever the set sizes; nothing here reads
files or picks devices (torch tensors are reduced where they live).
"""
from __future__ import annotations

import numpy as np
import torch

from eval.metrics import block_rows

KEY_KID = "kid"            # mean over subsets
KEY_KID_STD = "kid_std"    # std over subsets (ddof=0, torch-fidelity's)
SUBSETS = 100              # torch-fidelity's defaults (kid_subsets, kid_subset_size, rng_seed)
SUBSET_SIZE = 1000
SEED = 2020


def _as_tensor(feats_ND, dtype: torch.dtype, device=None) -> torch.Tensor:
    x = torch.as_tensor(feats_ND)
    return x.to(device=x.device if device is None else device, dtype=dtype)


def polynomial_kernel(a_AD: torch.Tensor, b_BD: torch.Tensor) -> torch.Tensor:
    """(A, B) kernel matrix (a . b / d + 1)^3: torch-fidelity's `kernel_poly` with its defaults (gamma = 1/d)."""
    return (a_AD @ b_BD.T / a_AD.shape[1] + 1.0) ** 3


def kernel_row_sums(x_MD: torch.Tensor, y_ND: torch.Tensor, block_size: int = 4096) -> torch.Tensor:
    """(M,) sums sum_j k(x_i, y_j), in row blocks of x (at most block_size rows and MAX_BLOCK_ELEMENTS entries)."""
    rows = block_rows(block_size, y_ND.shape[0])
    return torch.cat([polynomial_kernel(x_MD[i:i + rows], y_ND).sum(1) for i in range(0, x_MD.shape[0], rows)])


def kernel_diag(x_MD: torch.Tensor) -> torch.Tensor:
    """(M,) k(x_i, x_i)."""
    return ((x_MD * x_MD).sum(1) / x_MD.shape[1] + 1.0) ** 3


def offdiag_sum(x_MD: torch.Tensor, block_size: int = 4096) -> torch.Tensor:
    """sum_{i != j} k(x_i, x_j) (the diagonal terms k(x_i, x_i) removed), in row blocks."""
    return kernel_row_sums(x_MD, x_MD, block_size).sum() - kernel_diag(x_MD).sum()


def mmd2_unbiased(*, real, fake, block_size: int = 4096, dtype: torch.dtype = torch.float64) -> float:
    """MMD^2_u of the full sets with the KID kernel (module docstring). This is the expectation of the subset KID
    over its random subsets, computed without subsampling. real: (N, D) reference features; fake: (M, D) generated
    features, same D; any sizes >= 2. The estimator is symmetric in its two sets; the names document the roles."""
    x, y = _check(real, fake, dtype)
    m, n = y.shape[0], x.shape[0]
    return float(offdiag_sum(y, block_size) / (m * (m - 1)) + offdiag_sum(x, block_size) / (n * (n - 1))
                 - 2 * kernel_row_sums(y, x, block_size).sum() / (m * n))


def _check(real, fake, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    x = _as_tensor(real, dtype)
    y = _as_tensor(fake, dtype, x.device)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(x.shape[0], y.shape[0]) < 2:
        raise ValueError(f"need (N>=2, D) features of equal D, got real {tuple(x.shape)}, fake {tuple(y.shape)}")
    return x, y


def subset_indices(n_real: int, n_fake: int, subsets: int = SUBSETS, subset_size: int = SUBSET_SIZE,
                   seed: int = SEED) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(fake_idx, real_idx)] per subset, drawn in torch-fidelity's order from RandomState(seed)."""
    if subset_size > min(n_real, n_fake) or subset_size < 2:
        raise ValueError(f"KID subset_size {subset_size} must be in [2, min(N_real={n_real}, N_fake={n_fake})]")
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(subsets):
        fake_idx = rng.choice(n_fake, subset_size, replace=False)
        out.append((fake_idx, rng.choice(n_real, subset_size, replace=False)))
    return out


def kid_subset_values(*, real, fake, subsets: int = SUBSETS, subset_size: int = SUBSET_SIZE, seed: int = SEED,
                      block_size: int = 4096, dtype: torch.dtype = torch.float64) -> np.ndarray:
    """(subsets,) MMD^2_u of each subset pair (module docstring for the draw order)."""
    x, y = _check(real, fake, dtype)
    vals = []
    for fake_idx, real_idx in subset_indices(x.shape[0], y.shape[0], subsets, subset_size, seed):
        f = torch.from_numpy(fake_idx).to(y.device)
        r = torch.from_numpy(real_idx).to(x.device)
        vals.append(mmd2_unbiased(real=x[r], fake=y[f], block_size=block_size, dtype=dtype))
    return np.asarray(vals)


def kid(*, real, fake, subsets: int = SUBSETS, subset_size: int = SUBSET_SIZE, seed: int = SEED,
        block_size: int = 4096, dtype: torch.dtype = torch.float64) -> dict[str, float]:
    """{KEY_KID: mean, KEY_KID_STD: std} of the subset MMD^2_u values.

    real: (N, D) reference features; fake: (M, D) generated features (numpy or torch; computed in `dtype` where the
    real features live). Same numbers as torch-fidelity's `kid_features_to_metric(fake, real, kid_subsets=subsets,
    kid_subset_size=subset_size, rng_seed=seed)` on float64 features."""
    vals = kid_subset_values(real=real, fake=fake, subsets=subsets, subset_size=subset_size, seed=seed,
                             block_size=block_size, dtype=dtype)
    return {KEY_KID: float(np.mean(vals)), KEY_KID_STD: float(np.std(vals))}
