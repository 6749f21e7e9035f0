"""Scaling laws (paper Sec. 5, Fig. 5-6, eq. 11-16): analytic training compute, Pareto frontier, power-law fits.

Pure functions on numbers; the stages `scaling_train` and `scaling` (pipeline/stages/) train the sweep and call
them.

Training compute C (FLOPs): `train_flops` of eval/complexity.py, the project's one analytic counter
(C = 3 * F_fwd * sequences seen, sequences seen = batch_size * steps).

Fits: L = (beta * X)^alpha, i.e. log L = alpha log X + alpha log beta, by least squares in log-log space (what
the paper's straight lines in Fig. 5/6 are); Pearson r is that of (log X, log L).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from eval.complexity import attention_pairs, forward_flops, train_flops  # noqa: F401 (the counter, re-exported)
from eval.config import ScalingConfig  # noqa: F401 (re-exported)
from eval.paper import SCALING_FITS, SCALING_PEARSON

# The paper's eq. 11-16 fits (eval/paper.py) use N in billions of parameters and C in PFLOPs (units of the axes of
# Fig. 5/6 as we read them), so beta is comparable only in those units; alpha and r are unit-free.
X_UNITS = {"N": 1e9, "C": 1e15}       # the fits below are done in these units too (N in B params, C in PFLOPs)
TARGETS = ("L_last", "L_mean", "err_last", "err_mean")


# ------------------------------------------------------------------------------------------------ fits
@dataclass(frozen=True)
class PowerLaw:
    alpha: float
    beta: float
    pearson_r: float
    n: int

    def __call__(self, x):
        return (self.beta * np.asarray(x, dtype=np.float64)) ** self.alpha


def fit_power_law(x, y) -> PowerLaw:
    """Least squares of log y = alpha log x + alpha log beta; x, y > 0 (at least 2 distinct x)."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if x.shape != y.shape or len(x) < 2 or np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("fit_power_law needs >= 2 points with x > 0 and y > 0")
    lx, ly = np.log(x), np.log(y)
    mx, my = lx.mean(), ly.mean()
    sxx, sxy, syy = ((lx - mx) ** 2).sum(), ((lx - mx) * (ly - my)).sum(), ((ly - my) ** 2).sum()
    if sxx == 0:
        raise ValueError("fit_power_law: all x are equal")
    alpha = sxy / sxx
    intercept = my - alpha * mx
    log_beta = intercept / alpha if alpha != 0 else float("nan")
    beta = math.exp(log_beta) if log_beta < 700 else float("inf")   # a near-flat fit has an astronomic beta
    r = sxy / math.sqrt(sxx * syy) if syy > 0 else float("nan")
    return PowerLaw(float(alpha), float(beta), float(r), int(len(x)))


def pareto_frontier(cost, value) -> np.ndarray:
    """Indices (ascending cost) of the points no other point beats: none has cost <= and value < (or cost < and
    value <=). This is C_min: for each compute budget the lowest loss reached by any checkpoint of any size."""
    cost, value = np.asarray(cost, np.float64), np.asarray(value, np.float64)
    order = np.lexsort((value, cost))          # by cost, ties by value
    keep, best = [], math.inf
    for i in order:
        if value[i] < best:
            keep.append(int(i))
            best = value[i]
    return np.asarray(keep, dtype=np.int64)


def fit_table(points: list[dict]) -> list[dict]:
    """Rows (x, target, alpha, beta, r, n, paper alpha/beta/r) from sweep points.

    `points`: dicts with depth, N, C, fraction, L_last, L_mean, err_last, err_mean. X = N uses each model's final
    checkpoint (fraction 1); X = C uses the Pareto frontier of all checkpoints, separately for each target.
    """
    rows = []
    final = [p for p in points if p["fraction"] == 1.0]
    for xname in ("N", "C"):
        for t in TARGETS:
            sel = final if xname == "N" else [points[i] for i in pareto_frontier([p["C"] for p in points],
                                                                                  [p[t] for p in points])]
            xs = [p[xname] / X_UNITS[xname] for p in sel]
            try:
                fit = fit_power_law(xs, [p[t] for p in sel])
                a, b, r = fit.alpha, fit.beta, fit.pearson_r
            except ValueError:
                a = b = r = float("nan")
            pb, pa = SCALING_FITS[(xname, t)]
            rows.append({"x": xname, "target": t, "alpha": a, "beta": b, "pearson_r": r, "points": len(sel),
                         "paper_alpha": pa, "paper_beta": pb, "paper_pearson_r": SCALING_PEARSON[xname]})
    return rows


__all__ = ["ScalingConfig", "attention_pairs", "forward_flops", "train_flops", "PowerLaw", "fit_power_law",
           "pareto_frontier", "fit_table", "X_UNITS", "TARGETS"]
