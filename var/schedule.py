"""The project's learning-rate and weight-decay schedules: the reference VAR training's (`lr_wd_annealing`), and
the tokenizer trainer's warm-up + cosine (`warmup_cosine_factor`, at the end).

The formulas, boundaries and the order of the float operations follow the reference exactly, so the values match
its recorded samples to float64 rounding (`tests/data/fixture_lr_schedule.json`, and the per-step lr / wd of the
training fixture, tests/test_train_parity.py):

    peak_lr   = base_lr_per_256 * global_batch / 256
    warmup_it = round(warmup_epochs * iters_per_epoch)          (reference: warmup_epochs = epochs / 50)
    it <  warmup_it:  f = wp0 + (1 - wp0) * it / warmup_it      (wp0 = 0.005; linear, f(warmup_it) would be 1)
    it >= warmup_it:  p = (it - warmup_it) / (max_it - 1 - warmup_it)          (0 at warm-up end, 1 at last it)
                      f by schedule (wpe = final_lr_ratio):
                      'lin0'   1 if p < 0.05, else wpe + (1 - wpe) * (1 - p) / 0.95   (the reference default)
                      'lin'    the same with a 15% plateau
                      'lin00'  wpe + (1 - wpe) * (1 - p)                               (no plateau)
                      'cos'    wpe + (1 - wpe) * (1 + cos(pi p)) / 2
                      'exp'    1 if p < 0.15, else exp((p - 0.15) / 0.85 * ln wpe)
                      'const'  1 (not in the reference)
    lr = f * peak_lr
    wd = wd_end + (wd - wd_end) * (0.5 + 0.5 * cos(pi * it / (max_it - 1)))   (cosine over the whole run)

Differences from the reference: the post-warm-up denominator is at least 1 (the reference divides by zero when the
warm-up ends at the last iteration); 'const' exists; 'lin<T>' (a plateau-free two-piece ramp that the reference's
progressive training selects, which is not implemented here) does not.
"""
from __future__ import annotations

import math

SCHEDULES = ("lin0", "lin", "lin00", "cos", "exp", "const")


def peak_lr_for(base_lr_per_256: float, global_batch: int) -> float:
    """Linear scaling rule (reference: peak_lr = tblr * glb_bs / 256)."""
    return base_lr_per_256 * global_batch / 256


def _plateau_then_linear(pasd: float, wpe: float, T: float) -> float:
    """1 on [0, T), then linear from 1 at p = T to wpe at p = 1."""
    return 1.0 if pasd < T else wpe + (1 - wpe) * (1 - pasd) / (1 - T)


def lr_factor_at(it: int, *, max_it: int, warmup_it: float, warmup_start_ratio: float = 0.005,
                 final_lr_ratio: float = 0.01, schedule: str = "lin0") -> float:
    """The lr multiplier of `peak_lr` at iteration `it` (0-based)."""
    wp_it = round(warmup_it)  # the reference rounds a fractional (ep/50 * iters) warm-up length (ties to even)
    wp0, wpe = warmup_start_ratio, final_lr_ratio
    if it < wp_it:
        return wp0 + (1 - wp0) * it / wp_it
    if schedule == "const":
        return 1.0
    # Fraction of the post-warm-up run already done; the denominator uses max_it - 1 so that the last iteration
    # (max_it - 1) lands exactly on wpe.
    pasd = (it - wp_it) / max(max_it - 1 - wp_it, 1)
    if schedule == "lin0":
        return _plateau_then_linear(pasd, wpe, 0.05)
    if schedule == "lin":
        return _plateau_then_linear(pasd, wpe, 0.15)
    if schedule == "lin00":
        return wpe + (1 - wpe) * (1 - pasd)
    if schedule == "cos":
        return wpe + (1 - wpe) * (0.5 + 0.5 * math.cos(math.pi * pasd))
    if schedule == "exp":
        T = 0.15
        return 1.0 if pasd < T else math.exp((pasd - T) / (1 - T) * math.log(wpe))
    raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")


def wd_at(it: int, *, max_it: int, wd: float, wd_end: float) -> float:
    """Cosine from `wd` at it=0 to `wd_end` at it=max_it-1 (exactly `wd` throughout when wd_end == wd)."""
    pasd = it / max(max_it - 1, 1)
    return wd_end + (wd - wd_end) * (0.5 + 0.5 * math.cos(math.pi * pasd))


def lr_wd_at(it: int, *, peak_lr: float, max_it: int, warmup_it: float, wd: float, wd_end: float,
             warmup_start_ratio: float = 0.005, final_lr_ratio: float = 0.01,
             schedule: str = "lin0") -> tuple[float, float]:
    """(lr, weight_decay) at iteration `it`, for a param group with lr/wd scale 1."""
    f = lr_factor_at(it, max_it=max_it, warmup_it=warmup_it, warmup_start_ratio=warmup_start_ratio,
                     final_lr_ratio=final_lr_ratio, schedule=schedule)
    return f * peak_lr, wd_at(it, max_it=max_it, wd=wd, wd_end=wd_end)


def warmup_cosine_factor(step: int, *, max_it: int, warmup_steps: int, final_lr_ratio: float) -> float:
    """The tokenizer trainer's lr multiplier at `step` (0-based): linear warm-up (step + 1) / warmup_steps, then
    cosine from 1 to `final_lr_ratio` at the last step (1 throughout when final_lr_ratio is 1)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if final_lr_ratio == 1.0:
        return 1.0
    frac = min(1.0, (step - warmup_steps) / max(1, max_it - 1 - warmup_steps))
    return final_lr_ratio + (1 - final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac))
