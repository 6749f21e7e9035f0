"""Bootstrap intervals over the generated set: resample the generated samples with replacement, recompute the metric.

Each metric m(real, fake) is recomputed on R resamples fake[idx_r] (idx_r: M indices drawn uniformly with
replacement from `numpy.random.default_rng(seed)`), the reference set held fixed, and the percentile interval at
`level` is reported: the (1 - level)/2 and (1 + level)/2 quantiles of the R values (numpy's linear interpolation).
The interval describes how much the number moves with the finite generated set; it does not include the
reference set's own sampling noise, nor the sampler's seed (see eval/seeds.py for that).

A resample is exactly the array fake[idx_r], so every replicate equals the metric computed on that array by the
plain functions (`bootstrap_generic` does just that; the tests check every fast path against it). The fast paths
avoid recomputing what does not change between resamples; a resample differs only in the counts c_j of each
generated sample:
  FD         weighted mean / covariance from the counts; the reference's sqrtm is computed once (FrechetReference).
  precision  whether a generated sample is inside the real manifold does not depend on the other generated samples:
             mean of a fixed per-sample indicator, weighted by counts. Density likewise (per-sample ball counts).
  coverage   the (real ball, generated sample inside it) pairs are fixed; a ball is covered when one of its samples
             is drawn.
  recall     the generated k-NN radii change: a drawn copy is a neighbour at distance 0 (as an exact duplicate is in
             the standard evaluator), absent samples are not neighbours. Each sample's nearest other generated
             samples are found once; a resample's radius is read off them (brute force in the rare case they do not
             hold enough drawn neighbours).
  KID        the replicate is the full-set MMD^2_u of the resample (the quantity the subset KID estimates, see
             eval/kid.py): c^T K c over one pass of the generated kernel, blocked, for all resamples at once.
Known behaviour of the bootstrap here. FD is biased upward at finite M (eval/fd_bias.py) and a resample, with about
63.2% distinct samples, more so: the FD interval brackets FD_M and sits slightly above it; it covers the
infinite-sample FD at the stated rate only when that bias is small against the spread (the tests build such a
case). For the same reason coverage and recall replicates sit below the full-set value and their intervals are
shifted down. Copies also enter KID's off-diagonal generated pairs (a shift of about
(mean k(y, y) - mean k(y, y')) / M). Precision and density are means of per-sample quantities that do not depend on
the other generated samples: their intervals have no such artefact.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from eval.kid import kernel_diag, kernel_row_sums, offdiag_sum, polynomial_kernel
from eval.metrics import FrechetReference, _inside, _sq_dists, block_rows, knn_radii
from eval.prdc import BLOCK_SIZE, real_ball_pairs


@dataclass(frozen=True)
class BootstrapConfig:
    resamples: int = 100   # R; the percentile interval's ends move by ~1/sqrt(R) of the spread
    level: float = 0.95    # two-sided percentile interval
    seed: int = 0          # numpy default_rng seed of the resampling indices

    def __post_init__(self):
        if self.resamples < 2 or not 0 < self.level < 1:
            raise ValueError(f"need resamples >= 2 and 0 < level < 1, got {self.resamples}, {self.level}")


def resample_indices(n_fake: int, cfg: BootstrapConfig) -> np.ndarray:
    """(R, M) int64 indices, uniform with replacement."""
    return np.random.default_rng(cfg.seed).integers(0, n_fake, size=(cfg.resamples, n_fake))


def counts_of(idx_RM: np.ndarray, n_fake: int) -> np.ndarray:
    """(R, M) how often each generated sample is drawn in each resample."""
    return np.stack([np.bincount(idx_M, minlength=n_fake) for idx_M in idx_RM])


def percentile_interval(values_R, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(np.asarray(values_R, dtype=np.float64), [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_generic(metric: Callable[..., dict], real, fake, idx_RM: np.ndarray) -> dict[str, np.ndarray]:
    """{name: (R,)} of metric(real=real, fake=fake[idx_r]): the definition the fast paths reproduce."""
    rows = [metric(real=real, fake=fake[torch.as_tensor(idx_M) if isinstance(fake, torch.Tensor) else idx_M])
            for idx_M in idx_RM]
    return {name: np.array([r[name] for r in rows]) for name in rows[0]}


def bootstrap_fd(reference: FrechetReference, fake, counts_RM: np.ndarray,
                 max_batch_elements: int = 1 << 26) -> np.ndarray:
    """(R,) FD of each resample's (mean, covariance with ddof=1) against `reference`, in batches of resamples
    holding at most `max_batch_elements` covariance entries (512 MiB of float64; 16 resamples at D = 2048)."""
    y_MD = torch.as_tensor(fake).to(reference.device, torch.float64)
    m, d = y_MD.shape
    centre_D = y_MD.mean(0)
    y_MD = y_MD - centre_D  # covariance is shift-invariant; centring first keeps the sums below well conditioned
    c_RM = torch.as_tensor(counts_RM, dtype=torch.float64, device=reference.device)
    step = max(1, max_batch_elements // (d * d))
    # Small D: all second moments y_j y_j^T as one (M, D*D) matrix, so a batch is one GEMM with the counts.
    outer_MDD = (y_MD[:, :, None] * y_MD[:, None, :]).reshape(m, d * d) if m * d * d <= max_batch_elements else None
    out = []
    for c_rM in c_RM.split(step):
        mu_rD = c_rM @ y_MD / m
        if outer_MDD is not None:
            sigma_rDD = (c_rM @ outer_MDD).reshape(-1, d, d)
        else:
            rows = block_rows(m, d)  # Y^T diag(c) Y over row blocks: no (M, D) temporary per resample
            sigma_rDD = torch.stack([sum((y_MD[i:i + rows] * c_M[i:i + rows, None]).T @ y_MD[i:i + rows]
                                         for i in range(0, m, rows)) for c_M in c_rM])
        sigma_rDD = (sigma_rDD - m * mu_rD[:, :, None] * mu_rD[:, None, :]) / (m - 1)
        out.append(reference.distances(mu_rD + centre_D, sigma_rDD))
    return torch.cat(out).cpu().numpy()


@torch.no_grad()
def bootstrap_kid(*, real, fake, counts_RM: np.ndarray, block_size: int = 4096,
                  dtype: torch.dtype = torch.float64) -> np.ndarray:
    """(R,) full-set MMD^2_u (eval/kid.py) of the real set against each resample of the generated set."""
    x_ND = torch.as_tensor(real).to(dtype=dtype)
    y_MD = torch.as_tensor(fake).to(x_ND.device, dtype)
    c_RM = torch.as_tensor(counts_RM, dtype=dtype, device=x_ND.device)
    n, m = x_ND.shape[0], y_MD.shape[0]
    quad_R = torch.zeros(c_RM.shape[0], dtype=dtype, device=x_ND.device)
    rows = block_rows(block_size, m)
    for i in range(0, m, rows):  # c^T K c, one (rows, M) kernel block at a time
        quad_R += (c_RM[:, i:i + rows] * (polynomial_kernel(y_MD[i:i + rows], y_MD) @ c_RM.T).T).sum(1)
    fake_pairs_R = quad_R - c_RM @ kernel_diag(y_MD)  # position pairs a != b; copies of one sample included
    cross_R = c_RM @ kernel_row_sums(y_MD, x_ND, block_size)
    real_term = offdiag_sum(x_ND, block_size) / (n * (n - 1))
    return (fake_pairs_R / (m * (m - 1)) + real_term - 2 * cross_R / (m * n)).cpu().numpy()


def _neighbour_lists(fake_MD: torch.Tensor, size: int, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    # (M, size) squared distances and indices of each sample's nearest OTHER samples, ascending.
    dists, idx = [], []
    for i in range(0, fake_MD.shape[0], block_size):  # block_size already bounded by the caller
        d_BM = _sq_dists(fake_MD[i:i + block_size], fake_MD)
        rows = torch.arange(d_BM.shape[0], device=d_BM.device)
        d_BM[rows, rows + i] = float("inf")
        top = torch.topk(d_BM, size, dim=1, largest=False)
        dists.append(top.values)
        idx.append(top.indices)
    return torch.cat(dists), torch.cat(idx)


def _resample_radii(c_M: np.ndarray, nbr_d: np.ndarray, nbr_i: np.ndarray, k: int, fake_MD: torch.Tensor):
    """k-NN radii (squared) of the drawn samples in a resample with counts c_M; NaN for samples not drawn."""
    need_M = k - (c_M - 1)                      # copies of the sample itself are neighbours at distance 0
    radii_M = np.where(need_M <= 0, 0.0, np.nan)
    todo = np.flatnonzero((c_M > 0) & (need_M > 0))
    cum = np.cumsum(c_M[nbr_i[todo]], axis=1)
    hit = cum >= need_M[todo, None]
    found = hit.any(1)
    radii_M[todo[found]] = nbr_d[todo[found], hit[found].argmax(1)]
    for j in todo[~found]:                      # not enough drawn neighbours in the list: all of them
        d_M = _sq_dists(fake_MD[j:j + 1], fake_MD)[0].cpu().numpy()
        reps = c_M.copy()
        reps[j] = 0
        radii_M[j] = np.sort(np.repeat(d_M, reps))[need_M[j] - 1]
    return radii_M, todo[~found]


@torch.no_grad()
def bootstrap_knn(*, real, fake, counts_RM: np.ndarray, pr_k: int = 3, dc_k: int = 5,
                  block_size: int = BLOCK_SIZE, neighbours: int | None = None) -> dict[str, np.ndarray]:
    """{'precision', 'recall' (k = pr_k, eval/metrics.py), 'density', 'coverage' (k = dc_k, eval/prdc.py)}: (R,)
    each, the metrics of the real set against each resample of the generated set. A row of ones in `counts_RM`
    gives the full-set values. `neighbours`: length of the per-sample neighbour lists (default 4 pr_k + 16)."""
    real, fake = torch.as_tensor(real), torch.as_tensor(fake)
    fake = fake.to(real.device, real.dtype)
    c_RM = np.asarray(counts_RM)
    n, m = real.shape[0], fake.shape[0]
    rows_n, rows_m = block_rows(block_size, n), block_rows(block_size, m)  # blocks against N / M columns
    inside_M = _inside(fake, real, knn_radii(real, pr_k, rows_n), rows_n).cpu().numpy()
    ri, fj = real_ball_pairs(real, fake, knn_radii(real, dc_k, rows_n), block_size)
    out = {"precision": c_RM @ inside_M / m, "density": c_RM @ np.bincount(fj, minlength=m) / (dc_k * m)}
    coverage, recall = [], []
    # P(fewer than k drawn among the list) ~ P(Poisson(size) < k): ~3e-10 for k = 3 and the default size 28.
    size = min(4 * pr_k + 16 if neighbours is None else neighbours, m - 1)
    nbr_d, nbr_i = (t.cpu().numpy() for t in _neighbour_lists(fake, size, rows_m))
    # Candidate (real, generated) pairs: a radius read off the lists is at most the list's last distance.
    cand_r, cand_f, cand_d = [], [], []
    bound_M = torch.from_numpy(nbr_d[:, -1]).to(real.device, real.dtype)
    for i in range(0, n, rows_m):
        d_BM = _sq_dists(real[i:i + rows_m], fake)
        b, j = torch.nonzero(d_BM <= bound_M[None], as_tuple=True)
        cand_r.append((b + i).cpu().numpy())
        cand_f.append(j.cpu().numpy())
        cand_d.append(d_BM[b, j].cpu().numpy())
    cand_r, cand_f, cand_d = np.concatenate(cand_r), np.concatenate(cand_f), np.concatenate(cand_d)
    for c_M in c_RM:
        covered_N = np.zeros(n, dtype=bool)
        covered_N[ri[c_M[fj] > 0]] = True
        coverage.append(covered_N.mean())
        radii_M, brute = _resample_radii(c_M, nbr_d, nbr_i, pr_k, fake)
        ok = c_M[cand_f] > 0
        inside = ok & (cand_d <= np.nan_to_num(radii_M, nan=-1.0)[cand_f])
        recalled_N = np.zeros(n, dtype=bool)
        recalled_N[cand_r[inside]] = True
        if len(brute):                           # radii beyond the lists' bound: their full columns
            d_NB = _sq_dists(real, fake[torch.from_numpy(brute).to(real.device)]).cpu().numpy()
            recalled_N |= (d_NB <= radii_M[brute][None]).any(1)
        recall.append(recalled_N.mean())
    out["coverage"], out["recall"] = np.array(coverage), np.array(recall)
    return out
