"""Density and coverage (Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for Generative Models",
arXiv:2002.09797, eqs. 4-5), next to the k-NN precision/recall of eval/metrics.py.

With real features X_1..X_N, generated Y_1..Y_M and NND_k(X_i) the distance from X_i to its k-th nearest other real
sample (the paper's k = 5):

    density  = 1/(k M) sum_j sum_i 1[ d(Y_j, X_i) < NND_k(X_i) ]      (how many real balls hold each generated sample)
    coverage = 1/N     sum_i 1[ min_j d(X_i, Y_j) < NND_k(X_i) ]      (fraction of real balls holding some sample)

Balls are open (`<`) as in the authors' implementation (clovaai/generative-evaluation-prdc), so with fake == real
and distinct points each ball holds exactly its centre and k-1 others and density is exactly 1. (The standard
evaluator's precision/recall in eval/metrics.py use closed balls, `<=`; for continuous features ties have measure 0.)
Only REAL radii enter: a real outlier has a huge radius, which inflates precision (one ball swallows many generated
samples) but adds at most 1/k per sample to density (the paper's Sec. 3.1 motivation).

Distances are squared Euclidean distances from one GEMM per block of `block_size` query rows, the same formulation
as the k-NN precision/recall, so memory is O(block_size * N) and the result does not depend on the block size.
`real_ball_pairs` is public because the bootstrap (eval/bootstrap.py) reuses it: the pairs (real ball, generated
sample inside it) do not depend on the other generated samples, so every resample of the generated set only
reweights them.
"""
from __future__ import annotations

import numpy as np
import torch

from eval.metrics import _sq_dists, block_rows, knn_radii

KEY_DENSITY = "density"
KEY_COVERAGE = "coverage"
NEAREST_K = 5  # Naeem et al.'s k for density and coverage
BLOCK_SIZE = 2048


def _features(real, fake) -> tuple[torch.Tensor, torch.Tensor]:
    real, fake = torch.as_tensor(real), torch.as_tensor(fake)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"need (N, D) features of equal D, got real {tuple(real.shape)}, fake {tuple(fake.shape)}")
    return real, fake.to(real.device, real.dtype)


def _real_ball_masks(real_ND: torch.Tensor, fake_MD: torch.Tensor, sq_radii_N: torch.Tensor, block_size: int):
    # Real rows against all generated columns, the orientation of `knn_radii`: with fake == real the distances
    # compared to the radii are bit-identical to those the radii came from, so ties resolve consistently.
    rows = block_rows(block_size, fake_MD.shape[0])
    for i in range(0, real_ND.shape[0], rows):
        yield i, _sq_dists(real_ND[i:i + rows], fake_MD) < sq_radii_N[i:i + rows, None]


def real_ball_pairs(real_ND: torch.Tensor, fake_MD: torch.Tensor, sq_radii_N: torch.Tensor,
                    block_size: int = BLOCK_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Sparse (real_idx, fake_idx) of every pair with d(X_i, Y_j)^2 < sq_radii_N[i] (generated sample j inside the
    open ball of real sample i). There are density * k * M of them."""
    ri, fj = [], []
    for i, inside_BM in _real_ball_masks(real_ND, fake_MD, sq_radii_N, block_size):
        b, j = torch.nonzero(inside_BM, as_tuple=True)
        ri.append((b + i).cpu().numpy())
        fj.append(j.cpu().numpy())
    return np.concatenate(ri), np.concatenate(fj)


@torch.no_grad()
def density_coverage(*, real, fake, k: int = NEAREST_K, block_size: int = BLOCK_SIZE) -> dict[str, float]:
    """{KEY_DENSITY, KEY_COVERAGE} of generated features `fake` (M, D) against reference features `real` (N, D)
    (numpy or torch; computed where `real` lives, in its dtype). See the module docstring for the definitions."""
    real, fake = _features(real, fake)
    sq_radii_N = knn_radii(real, k, block_rows(block_size, real.shape[0]))
    inside, covered = 0, []
    for _, inside_BM in _real_ball_masks(real, fake, sq_radii_N, block_size):
        inside += int(inside_BM.sum())
        covered.append(inside_BM.any(1))
    return {KEY_DENSITY: inside / (k * fake.shape[0]), KEY_COVERAGE: float(torch.cat(covered).double().mean())}
