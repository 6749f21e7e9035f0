"""Error bars over sampling seeds, and when a row's change against the previous row counts as significant.

A table row is generated with S sampler seeds, each giving one value of a metric. `summarize` gives the mean, the
sample standard deviation (ddof=1) and S. `compare(previous, current)` applies the project's rule:

    delta = mean_current - mean_previous,   sd_of_difference = sqrt(sd_previous^2 + sd_current^2),
    the change is significant when |delta| > 2 * sd_of_difference.

The sds are the spread of ONE seed's value (not the standard error of the mean), so the rule asks the change to
stand out of the seed-to-seed noise of a single run: with independent, roughly normal values the difference of two
single runs has sd = sd_of_difference, and 2 sd is a ~95% two-sided band. It is conservative for means over many
seeds (their standard error is sd / sqrt(S)). A row with one seed has no sd: the change is "not assessable", never
"not significant".
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z_SIGNIFICANT = 2.0  # |delta| > 2 sd_of_difference


@dataclass(frozen=True)
class SeedSummary:
    mean: float
    sd: float    # ddof=1; NaN when n == 1
    n: int


@dataclass(frozen=True)
class Change:
    delta: float                 # current - previous
    sd_of_difference: float      # NaN when either side has one seed
    significant: bool | None     # None: not assessable

    @property
    def verdict(self) -> str:
        if self.significant is None:
            return "not assessable (one seed)"
        return "significant" if self.significant else "not significant"


def summarize(values) -> SeedSummary:
    """Mean, sd (ddof=1) and count of per-seed values of one metric; NaN or inf values are refused."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0 or not np.isfinite(v).all():
        raise ValueError(f"need one or more finite per-seed values, got {v.tolist()}")
    return SeedSummary(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan, int(v.size))


def compare(previous: SeedSummary, current: SeedSummary, z: float = Z_SIGNIFICANT) -> Change:
    """The change of `current` against `previous` under the rule of the module docstring."""
    delta = current.mean - previous.mean
    if previous.n < 2 or current.n < 2:
        return Change(delta, math.nan, None)
    sd_diff = math.sqrt(previous.sd ** 2 + current.sd ** 2)
    return Change(delta, sd_diff, abs(delta) > z * sd_diff)
