"""FD's sample-size bias made visible: FD at several generated-set sizes N and the extrapolation FD_inf.

Chong & Forsyth 2020 ("Effectively Unbiased FID and Inception Score and where to find them", arXiv:1911.07023,
Sec. 3) show that FD computed from N generated samples is, to first order, FD_N = FD_inf + c / N with a c that
depends on the generator: two models compared at one N can swap order at another. They fit a line of FD_N against
1/N over N in [5000, 50000] (15 points) and report the intercept, FD_inf. Here the sizes are `fd_sizes(M)`: 15
evenly spaced N from min(5000, M // 10) to M, one subset per N drawn without replacement from the M generated
samples (`numpy.random.default_rng(seed)`), all against the same reference statistics. The reference set's own
finite-sample bias is not extrapolated away (its statistics are fixed), so FD_inf is "FD at infinitely many
GENERATED samples against this reference".
"""
from __future__ import annotations

import numpy as np
import torch

from eval.metrics import FrechetReference, feature_stats

NUM_POINTS = 15     # Chong & Forsyth's 15 sizes
MIN_SIZE = 5000     # ... from 5000 (or M // 10 when fewer samples exist) to M


def fd_sizes(n_fake: int, num_points: int = NUM_POINTS, min_size: int = MIN_SIZE) -> list[int]:
    """Distinct, increasing subset sizes (at least 2 each) ending at n_fake."""
    lo = min(min_size, max(n_fake // 10, 2))
    return sorted({int(n) for n in np.linspace(lo, n_fake, num_points).astype(np.int64)})


def fd_at_sizes(reference: FrechetReference, fake, sizes, seed: int = 0) -> dict[int, float]:
    """{N: FD of a random N-subset of the generated features `fake` (M, D) against `reference`}."""
    fake = torch.as_tensor(fake)
    rng = np.random.default_rng(seed)
    out = {}
    for n in sizes:
        if not 2 <= n <= fake.shape[0]:
            raise ValueError(f"FD subset size {n} outside [2, {fake.shape[0]}]")
        idx = torch.from_numpy(rng.choice(fake.shape[0], int(n), replace=False)).to(fake.device)
        out[int(n)] = reference.distance(*feature_stats(fake[idx]))
    return out


def fd_infinity(sizes, fds) -> tuple[float, float]:
    """(FD_inf, c): least-squares line FD_N = FD_inf + c / N; FD_inf is its value at 1/N = 0."""
    inv_n = 1.0 / np.asarray(sizes, dtype=np.float64)
    if inv_n.size < 2 or np.unique(inv_n).size < 2:
        raise ValueError(f"FD_inf needs at least two distinct sizes, got {list(sizes)}")
    slope, intercept = np.polyfit(inv_n, np.asarray(fds, dtype=np.float64), 1)
    return float(intercept), float(slope)


def fd_extrapolation(reference: FrechetReference, fake, sizes=None, seed: int = 0) -> dict:
    """{'fd_at': {N: FD_N}, 'fd_inf': intercept, 'slope': c} for generated features `fake` against `reference`
    (the real set's `FrechetReference(*feature_stats(real))`, or stored reference statistics)."""
    sizes = fd_sizes(len(fake)) if sizes is None else sizes
    fd_at = fd_at_sizes(reference, fake, sizes, seed)
    fd_inf, slope = fd_infinity(list(fd_at), list(fd_at.values()))
    return {"fd_at": fd_at, "fd_inf": fd_inf, "slope": slope}
