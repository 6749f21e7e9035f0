"""Pure metric functions on feature arrays: FID / sFID, Inception Score, improved precision and recall.

Conventions follow the standard ImageNet evaluator (OpenAI guided-diffusion `evaluations/evaluator.py`), so that
numbers computed here from the same features agree with it:

- FID: Frechet distance between Gaussians fitted to features (mean, covariance with ddof=1 as `np.cov`), float64,
  matrix square root by `scipy.linalg.sqrtm` with the eps-offset retry when the product is singular.
  sFID is the same distance on the spatial features (see `eval/inception.py`).
- IS: softmax of the logits, exp(E_x KL(p(y|x) || p(y))) over consecutive, unshuffled splits. The standard
  evaluator's logits are pool3 x softmax weights WITHOUT the bias; producing them is the extractor's job.
- Precision / recall: Kynkaenniemi et al. 2019 (arXiv:1904.06991), k-th nearest neighbour radii with the point
  itself excluded (k=3 -> third neighbour other than itself), a point is inside a manifold when its distance to
  some member is <= that member's radius.

Nothing here reads files or picks devices: precision/recall run wherever the given tensors live (GPU included).
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

FID_EPS = 1e-6  # diagonal offset of the standard evaluator's retry when sqrtm(sigma1 @ sigma2) is not finite


def feature_stats(feats_ND: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(mu_D, sigma_DD) in float64; sigma uses ddof=1 like `np.cov(rowvar=False)`.

    Torch tensors are reduced on their own device (a GPU does the 50k x 2048 covariance in milliseconds)."""
    if isinstance(feats_ND, torch.Tensor):
        x_ND = feats_ND.detach().to(torch.float64)
        if x_ND.ndim != 2 or x_ND.shape[0] < 2:
            raise ValueError(f"feature_stats needs (N>=2, D) features, got {tuple(x_ND.shape)}")
        mu_D = x_ND.mean(0)
        xc_ND = x_ND - mu_D
        sigma_DD = xc_ND.T @ xc_ND / (x_ND.shape[0] - 1)
        return mu_D.cpu().numpy(), sigma_DD.cpu().numpy()
    x_ND = np.asarray(feats_ND, dtype=np.float64)
    if x_ND.ndim != 2 or x_ND.shape[0] < 2:
        raise ValueError(f"feature_stats needs (N>=2, D) features, got {x_ND.shape}")
    return x_ND.mean(0), np.cov(x_ND, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = FID_EPS) -> float:
    """||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrtm(sigma1 @ sigma2)), float64.

    Argument order: (mu1, sigma1) are the GENERATED samples' statistics, (mu2, sigma2) the REFERENCE's, as the
    standard evaluator calls `sample_stats.frechet_distance(ref_stats)`. The value is symmetric in exact arithmetic;
    the order only matters at rounding level, and is fixed here so our numbers round like the evaluator's."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs "
                         f"{sigma2.shape}")
    diff_D = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        # Singular product (e.g. fewer samples than dimensions): same retry as the standard evaluator.
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        # sqrtm of a product of PSD matrices is real up to rounding; a large imaginary part means broken inputs.
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm has imaginary component {np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    return float(diff_D.dot(diff_D) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def psd_sqrt(sigma_DD: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a PSD matrix by `eigh`; rounding-level negative eigenvalues are clamped to 0."""
    evals_D, evecs_DD = torch.linalg.eigh(sigma_DD)
    return (evecs_DD * evals_D.clamp_min(0).sqrt()) @ evecs_DD.T


def _trace_sqrt_product(sigma1: torch.Tensor, sigma2: torch.Tensor, root1: torch.Tensor | None = None) -> torch.Tensor:
    root1_DD = psd_sqrt(sigma1) if root1 is None else root1
    return torch.linalg.eigvalsh(root1_DD @ sigma2 @ root1_DD).clamp_min(0).sqrt().sum()


def frechet_distance_torch(mu1, sigma1, mu2, sigma2, device: str | torch.device = "cpu") -> float:
    """The same distance (same argument order) via symmetric eigendecompositions in float64 on `device`.

    Tr sqrtm(s1 s2) = sum_i sqrt(lambda_i(s1^1/2 s2 s1^1/2)) for PSD s1, s2: two `eigh` calls instead of a
    non-symmetric Schur decomposition, so a GPU does 2048-D in well under a second where scipy's sqrtm takes
    tens of CPU seconds. Agrees with `frechet_distance` to ~1e-9 relative on full-rank covariances; rounding-level
    negative eigenvalues are clamped to 0 (rank-deficient covariances may differ from scipy at that level)."""
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64, device=device)  # noqa: E731
    mu1, sigma1, mu2, sigma2 = t(mu1), t(sigma1), t(mu2), t(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched statistics: mu {tuple(mu1.shape)} vs {tuple(mu2.shape)}")
    try:
        tr_covmean = _trace_sqrt_product(sigma1, sigma2)
    except torch.linalg.LinAlgError:  # degenerate spectra (few samples): the evaluator's eps-offset retry
        offset = torch.eye(sigma1.shape[0], dtype=torch.float64, device=device) * FID_EPS
        tr_covmean = _trace_sqrt_product(sigma1 + offset, sigma2 + offset)
    diff_D = mu1 - mu2
    return float(diff_D @ diff_D + sigma1.trace() + sigma2.trace() - 2 * tr_covmean)


class FrechetReference:
    """Reference (real) statistics with sqrtm(sigma) precomputed, for many Frechet distances against one reference.

    `distance(mu, sigma)` of GENERATED statistics is `frechet_distance_torch(mu, sigma, *reference)` with the
    reference's root reused, Tr sqrtm(s_gen s_ref) = Tr sqrtm(s_ref^1/2 s_gen s_ref^1/2): one `eigvalsh` per call
    instead of an `eigh` plus an `eigvalsh` (the bootstrap and the FD-vs-N curve call it hundreds of times; at
    D = 2048 on a 2-core CPU this is ~5 s instead of ~20 s)."""

    def __init__(self, mu, sigma, device: str | torch.device = "cpu"):
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64, device=device)  # noqa: E731
        self.mu_D, self.sigma_DD, self.device = t(mu), t(sigma), device
        if self.sigma_DD.shape != self.mu_D.shape * 2 or self.mu_D.ndim != 1:
            raise ValueError(f"reference statistics mismatch: mu {tuple(self.mu_D.shape)}, sigma "
                             f"{tuple(self.sigma_DD.shape)}")
        self.root_DD = psd_sqrt(self.sigma_DD)
        self.trace = float(self.sigma_DD.trace())

    def distance(self, mu, sigma) -> float:
        mu_D = torch.as_tensor(np.asarray(mu), dtype=torch.float64, device=self.device)
        sigma_DD = torch.as_tensor(np.asarray(sigma), dtype=torch.float64, device=self.device)
        if mu_D.shape != self.mu_D.shape or sigma_DD.shape != self.sigma_DD.shape:
            raise ValueError(f"mismatched statistics: mu {tuple(mu_D.shape)} vs reference {tuple(self.mu_D.shape)}")
        try:
            tr_covmean = _trace_sqrt_product(self.sigma_DD, sigma_DD, self.root_DD)
        except torch.linalg.LinAlgError:  # degenerate spectra: the same eps-offset retry as frechet_distance_torch
            offset = torch.eye(sigma_DD.shape[0], dtype=torch.float64, device=self.device) * FID_EPS
            tr_covmean = _trace_sqrt_product(self.sigma_DD + offset, sigma_DD + offset)
        diff_D = mu_D - self.mu_D
        return float(diff_D @ diff_D + sigma_DD.trace() + self.trace - 2 * tr_covmean)

    def distances(self, mu_RD: torch.Tensor, sigma_RDD: torch.Tensor) -> torch.Tensor:
        """(R,) distances of R generated statistics at once (one batched `eigvalsh`), float64 on the device."""
        m_RDD = self.root_DD @ sigma_RDD.to(self.device, torch.float64) @ self.root_DD
        tr_covmean_R = torch.linalg.eigvalsh(m_RDD).clamp_min(0).sqrt().sum(-1)
        diff_RD = mu_RD.to(self.device, torch.float64) - self.mu_D
        trace_R = sigma_RDD.diagonal(dim1=-2, dim2=-1).sum(-1).to(self.device, torch.float64)
        return (diff_RD * diff_RD).sum(-1) + trace_R + self.trace - 2 * tr_covmean_R


def inception_score(logits_NK: np.ndarray | torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """(mean, std) of exp(E KL(p(y|x) || p(y))) over `splits` CONSECUTIVE, UNSHUFFLED chunks [i*N//s, (i+1)*N//s).

    With 50k samples and splits=10 these are the standard evaluator's chunks of 5000. The logits are softmaxed
    here (in float64, via log_softmax so one-hot-like logits give exact zeros instead of log(0) NaNs)."""
    logits = torch.as_tensor(logits_NK).detach().to(torch.float64)
    n = logits.shape[0]
    if logits.ndim != 2 or n < splits or splits < 1:
        raise ValueError(f"inception_score needs (N>=splits, K) logits, got {tuple(logits.shape)}, splits={splits}")
    log_p_NK = torch.log_softmax(logits, dim=1)
    scores = []
    for i in range(splits):
        log_p = log_p_NK[i * n // splits:(i + 1) * n // splits]
        log_py_K = torch.logsumexp(log_p, dim=0) - np.log(log_p.shape[0])  # log of the split's marginal p(y)
        kl_N = (log_p.exp() * (log_p - log_py_K)).sum(1)
        scores.append(float(kl_N.mean().exp()))
    return float(np.mean(scores)), float(np.std(scores))


MAX_BLOCK_ELEMENTS = 1 << 24  # one distance / kernel block: 16M entries (64 MiB float32, 128 MiB float64)


def block_rows(block_size: int, cols: int) -> int:
    """Rows per block so a (rows, cols) block stays under MAX_BLOCK_ELEMENTS (and at most block_size rows): the
    peak memory of blocked distance and kernel sums is then a few such blocks, whatever the set sizes."""
    return max(1, min(block_size, MAX_BLOCK_ELEMENTS // max(cols, 1)))


def _sq_dists(a_BD: torch.Tensor, b_MD: torch.Tensor) -> torch.Tensor:
    # |a|^2 - 2ab + |b|^2, clamped at 0: the evaluator's formulation (one GEMM, no (B, M, D) intermediate).
    d = (a_BD * a_BD).sum(1, keepdim=True) - 2 * a_BD @ b_MD.T + (b_MD * b_MD).sum(1)[None]
    return d.clamp_min_(0)


def knn_radii(feats_ND: torch.Tensor, k: int = 3, block_size: int = 10000) -> torch.Tensor:
    """Squared distance of every point to its k-th nearest neighbour OTHER than itself, (N,), on feats' device.

    The point's own zero distance is the smallest entry of its row, so the (k+1)-th smallest is the k-th other
    neighbour (an exact duplicate counts as a neighbour, as in the standard evaluator)."""
    if feats_ND.shape[0] <= k:
        raise ValueError(f"need more than k={k} points for k-NN radii, got {feats_ND.shape[0]}")
    out = [torch.topk(_sq_dists(feats_ND[i:i + block_size], feats_ND), k + 1, dim=1, largest=False).values[:, -1]
           for i in range(0, feats_ND.shape[0], block_size)]
    return torch.cat(out)


def _inside(query_QD: torch.Tensor, support_MD: torch.Tensor, radii_M: torch.Tensor, block_size: int) -> torch.Tensor:
    # Whether each query lies in some ball around a support point; blocked over queries to bound memory.
    return torch.cat([(_sq_dists(query_QD[i:i + block_size], support_MD) <= radii_M[None]).any(1)
                      for i in range(0, query_QD.shape[0], block_size)])


@torch.no_grad()
def precision_recall(*, real: torch.Tensor, fake: torch.Tensor, k: int = 3,
                     block_size: int = 10000) -> tuple[float, float]:
    """Improved precision and recall (Kynkaenniemi et al. 2019) of generated features vs real features.

    real: (N_real, D) reference features; fake: (N_fake, D) generated features, same device and dtype.
    precision = fraction of FAKE samples inside the REAL manifold (fidelity);
    recall    = fraction of REAL samples inside the FAKE manifold (coverage).
    Distances are computed in blocks of `block_size` rows; the result does not depend on the block size."""
    real, fake = torch.as_tensor(real), torch.as_tensor(fake)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"need (N, D) features of equal D, got real {tuple(real.shape)}, fake {tuple(fake.shape)}")
    fake = fake.to(real.device, real.dtype)
    precision = _inside(fake, real, knn_radii(real, k, block_size), block_size).double().mean()
    recall = _inside(real, fake, knn_radii(fake, k, block_size), block_size).double().mean()
    return float(precision), float(recall)
