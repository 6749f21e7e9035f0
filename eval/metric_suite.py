"""All the uncertainty-aware metrics of one feature space in one call, as a flat dict with explicit keys.

`suite(real=..., fake=..., ext=...)` returns, for the extractor short name `ext` ('inception', 'evalnet', 'dinov2'):

    fd_{ext}                          Frechet distance of the full sets (eigh-based; equals `fid_{ext}` of
                                      eval/score.py to ~1e-9 relative on the same statistics). Never called FID
                                      outside the Inception space: in DINOv2 space it is `fd_dinov2`.
    fd_{ext}_at_{n}, fd_{ext}_inf,    FD at 15 generated-set sizes and its 1/N extrapolation (eval/fd_bias.py)
    fd_{ext}_inf_slope
    kid_{ext}, kid_{ext}_std          subset KID as torch-fidelity (eval/kid.py)
    kid_{ext}_fullset                 full-set MMD^2_u, the value the subset KID estimates and the centre of its
                                      bootstrap interval
    precision_{ext}, recall_{ext}     k-NN precision/recall (k = pr_k, eval/metrics.py)
    density_{ext}, coverage_{ext}     Naeem et al. (k = dc_k, eval/prdc.py)
    is_{ext}                          Inception Score of the generated `logits` (eval/metrics.py), when given
    {m}_ci_low, {m}_ci_high           percentile bootstrap interval over the generated set (eval/bootstrap.py) for
                                      m in fd_{ext}, kid_{ext} (of the full-set MMD^2_u), precision_{ext},
                                      recall_{ext}, density_{ext}, coverage_{ext}, and is_{ext} with `logits`
    bootstrap_level, bootstrap_resamples

Every interval uses the same R resamples of the generated set (one index draw, `cfg.bootstrap.seed`).

Read the intervals with eval/bootstrap.py's caveats: they show the spread of each number at THIS generated-set size.
FD is biased upward at finite M (fd_{ext}_inf shows by how much), and a resample's FD more so, so the FD interval
brackets FD_M, not FD_inf, and covers the infinite-sample FD only when that bias is small against the spread.
Recall and coverage replicates sit below the full-set value (a resample holds ~63% distinct samples).

Argument roles: `real` (N, D) reference features, `fake` (M, D) generated features (numpy or torch; computed where
`real` lives). `reference_stats=(mu, sigma)` replaces the reference's statistics for FD only (e.g. the stored
statistics of an ADM reference batch); KID and the k-NN metrics always use the reference features.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from eval.bootstrap import (
    BootstrapConfig,
    bootstrap_fd,
    bootstrap_generic,
    bootstrap_kid,
    bootstrap_knn,
    counts_of,
    percentile_interval,
    resample_indices,
)
from eval.config import BOOTSTRAPPED  # noqa: E402  (the metrics with intervals; torch-free for params)
from eval.fd_bias import MIN_SIZE, NUM_POINTS, fd_extrapolation, fd_sizes
from eval.kid import KEY_KID, KEY_KID_STD, SUBSET_SIZE, SUBSETS, kid
from eval.kid import SEED as KID_SEED
from eval.metrics import FrechetReference, feature_stats, inception_score
from eval.prdc import BLOCK_SIZE, NEAREST_K


@dataclass(frozen=True)
class SuiteConfig:
    kid_subsets: int = SUBSETS            # torch-fidelity's KID defaults
    kid_subset_size: int = SUBSET_SIZE
    kid_seed: int = KID_SEED
    is_splits: int = 10                   # the standard evaluator's IS splits (as eval/score.py)
    pr_k: int = 3                         # the standard evaluator's precision/recall k (as eval/score.py)
    dc_k: int = NEAREST_K                 # Naeem et al.'s density/coverage k
    fd_num_points: int = NUM_POINTS       # Chong & Forsyth's FD-vs-N design
    fd_min_size: int = MIN_SIZE
    fd_seed: int = 0
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    bootstrap_metrics: tuple[str, ...] = BOOTSTRAPPED  # drop expensive ones on a CPU (benchmarks/bench_metric_suite.py)
    block_size: int = BLOCK_SIZE          # rows per distance / kernel block: memory ~ block_size * max(N, M) floats

    def __post_init__(self):
        unknown = sorted(set(self.bootstrap_metrics) - set(BOOTSTRAPPED))
        if unknown:
            raise ValueError(f"unknown bootstrap_metrics {unknown}; choose from {list(BOOTSTRAPPED)}")


@torch.no_grad()
def suite(*, real, fake, ext: str, cfg: SuiteConfig = SuiteConfig(), reference_stats=None,
          logits=None) -> dict[str, float]:
    """The flat metric dict of the module docstring. logits: (M, K) classifier logits of the same generated
    samples, row for row (IS is resampled with them)."""
    real, fake = torch.as_tensor(real), torch.as_tensor(fake)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"need (N, D) features of equal D, got real {tuple(real.shape)}, fake {tuple(fake.shape)}")
    if not ext.isidentifier() or ext.startswith("fid"):
        raise ValueError(f"ext must be an extractor short name like 'inception' or 'dinov2', got {ext!r}")
    fake = fake.to(real.device)
    m = fake.shape[0]
    boot = cfg.bootstrap
    ones_1M = np.ones((1, m), dtype=np.int64)
    counts_RM = np.concatenate([ones_1M, counts_of(resample_indices(m, boot), m)])  # row 0: the full set
    out: dict[str, float] = {}
    intervals: dict[str, np.ndarray] = {}

    reference = FrechetReference(*(reference_stats if reference_stats is not None else feature_stats(real)),
                                 device=real.device)
    fd_counts = counts_RM if "fd" in cfg.bootstrap_metrics else ones_1M
    fd_R = bootstrap_fd(reference, fake, fd_counts)
    out[f"fd_{ext}"] = float(fd_R[0])
    intervals[f"fd_{ext}"] = fd_R[1:]
    curve = fd_extrapolation(reference, fake, fd_sizes(m, cfg.fd_num_points, cfg.fd_min_size), cfg.fd_seed)
    out.update({f"fd_{ext}_at_{n}": v for n, v in curve["fd_at"].items()})
    out[f"fd_{ext}_inf"], out[f"fd_{ext}_inf_slope"] = curve["fd_inf"], curve["slope"]

    kid_subsets = kid(real=real, fake=fake, subsets=cfg.kid_subsets, subset_size=cfg.kid_subset_size,
                      seed=cfg.kid_seed, block_size=cfg.block_size)
    out[f"kid_{ext}"], out[f"kid_{ext}_std"] = kid_subsets[KEY_KID], kid_subsets[KEY_KID_STD]
    kid_R = bootstrap_kid(real=real, fake=fake, block_size=cfg.block_size,
                          counts_RM=counts_RM if "kid" in cfg.bootstrap_metrics else ones_1M)
    out[f"kid_{ext}_fullset"] = float(kid_R[0])
    intervals[f"kid_{ext}"] = kid_R[1:]

    knn_boot = any(name in cfg.bootstrap_metrics for name in ("precision", "recall", "density", "coverage"))
    knn = bootstrap_knn(real=real, fake=fake, counts_RM=counts_RM if knn_boot else ones_1M, pr_k=cfg.pr_k,
                        dc_k=cfg.dc_k, block_size=cfg.block_size)
    for name in ("precision", "recall", "density", "coverage"):
        out[f"{name}_{ext}"] = float(knn[name][0])
        intervals[f"{name}_{ext}"] = knn[name][1:]

    if logits is not None:
        logits = torch.as_tensor(logits)
        if logits.ndim != 2 or logits.shape[0] != m:
            raise ValueError(f"logits must be (M={m}, K) for the generated samples, got {tuple(logits.shape)}")
        out[f"is_{ext}"] = inception_score(logits, cfg.is_splits)[0]
        if "is" in cfg.bootstrap_metrics:
            intervals[f"is_{ext}"] = bootstrap_generic(
                lambda real, fake: {"is": inception_score(fake, cfg.is_splits)[0]}, None, logits,
                resample_indices(m, boot))["is"]
    for name in cfg.bootstrap_metrics:
        key = f"{name}_{ext}"
        if key not in intervals:  # IS without logits
            continue
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = percentile_interval(intervals[key], boot.level)
    out["bootstrap_level"], out["bootstrap_resamples"] = boot.level, float(boot.resamples)
    return out
