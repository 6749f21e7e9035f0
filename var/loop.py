"""The one training loop under both trainers (var/train.py for VAR and the AR baseline, var/tokenizer_train.py):
`run_loop` drives a `LoopTask` (what one step, one evaluation and the trainer's state are) through the same
resume, seeding, data order, NaN policy, logging, evaluation and checkpoint cadence. Also here: seeding, the
capture and restore of every global RNG in a form `load_torch` (weights_only=True) reads back, and the data order
of each epoch drawn from (seed, epoch), so it needs no saved state.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch

from var.distributed import barrier, current_world
from var.io import atomic_torch_save, load_torch


def seed_everything(seed: int) -> None:
    """Seed the global torch (CPU and CUDA), numpy and python RNGs at the start of a fresh run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict:
    """All global RNG states as tensors/ints, so that `load_torch` (weights_only=True) can read them back."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    out = {"torch": torch.get_rng_state(),
           "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                     "has_gauss": int(has_gauss), "gauss": float(gauss)},
           "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss}}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(st: dict) -> None:
    torch.set_rng_state(st["torch"].cpu())
    n = st["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = st["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in st["cuda"]])


def epoch_order(seed: int, epoch: int, num: int, iters: int, batch_size: int) -> np.ndarray:
    """Sample indices of one epoch, (iters * batch_size,): a permutation drawn from (seed, epoch), repeated
    cyclically to fill the last batch (the reference also fills every batch, iters = ceil(N / B))."""
    perm = np.random.default_rng([seed, epoch]).permutation(num)
    return np.resize(perm, iters * batch_size)


# ------------------------------------------------------------------------------------------------ the loop
MAX_CONSECUTIVE_SKIPS = 20   # a run that keeps producing non-finite losses has diverged; stop it


@dataclass(frozen=True)
class StepOutcome:
    """What one optimizer step reports to the loop."""
    finite: bool     # False: a non-finite loss or gradient norm; the step made no update
    info: dict       # scalars for the log line and the progress callback, 'loss' first


@dataclass(frozen=True)
class LoopPlan:
    """The schedule of one run: how long, how often to log, evaluate and save, and what a resume must match."""
    name: str                  # log prefix: 'train_var', 'train_tokenizer'
    state_format: str          # the state file's 'format' entry
    cfg: dict                  # config_to_dict(train config), stored in the state
    seed: int                  # seeds a fresh run's global RNGs and every epoch's data order
    num_train: int
    batch_size: int            # the global batch
    iters_per_ep: int
    max_it: int
    log_every_steps: int
    ckpt_every_steps: int
    eval_every_epochs: int
    nan_policy: str = "raise"  # 'raise': stop, the last good state kept; 'skip': drop the update and go on
    speed_only_keys: tuple[str, ...] = ()   # cfg keys a resumed run may change (they change speed, not values)


class LoopTask(Protocol):
    """One trainer's part of the loop: what a step, an evaluation and the state are."""

    def start(self) -> None:
        """A fresh run, right after the global RNGs were seeded (e.g. load fine-tuning weights)."""

    def step(self, step: int, epoch: int, sel: np.ndarray) -> StepOutcome:
        """One optimizer step on the global batch of sample indices `sel` (schedule of iteration `step`)."""

    def evaluate(self, epoch: int, step: int, info: dict) -> dict | None:
        """Validation metrics after `epoch` epochs (None: nothing to record on this rank)."""

    def state(self) -> dict:
        """The trainer's entries of the state file (model, optimizers, ...); called on every rank."""

    def load_state(self, st: dict) -> None:
        """Restore those entries from a state file."""


@dataclass
class LoopResult:
    step: int
    history: list            # one dict per evaluation
    train_time_s: float      # time inside the steps (data, forward, backward, update), summed over resumes
    nan_skips: int


def _resume_keys(cfg: dict, speed_only: tuple[str, ...]) -> dict:
    return {k: v for k, v in cfg.items() if k not in speed_only}


def save_state(path: Path, step: int, build: Callable[[], dict], world) -> None:
    """Write the state of step `step` atomically: `build` runs on every rank (a sharded optimizer gathers to rank
    0), rank 0 writes, every rank waits for it."""
    entries = build()
    if world.is_main:
        atomic_torch_save(path, entries)
    barrier()


def run_loop(task: LoopTask, plan: LoopPlan, state_path, *, device, world=None, log: Callable[[str], None] = print,
             progress: Callable[[int, int, dict], None] | None = None) -> LoopResult:
    """Run `task` for plan.max_it steps, resuming from `state_path` when it exists.

    The order of each epoch comes from (seed, epoch) (epoch_order), so only the step needs saving. The state is
    saved at every epoch end and every `ckpt_every_steps`; it holds the task's entries, the step, the history, the
    global RNG states and the time, so a resumed run on CPU is bitwise the uninterrupted one. Evaluation runs at the
    end of every `eval_every_epochs`-th epoch and of the run. A non-finite step either stops the run (the last good
    state kept) or is skipped (`nan_policy`), and more than MAX_CONSECUTIVE_SKIPS in a row stop it. Only rank 0
    logs, reports progress and writes."""
    world = world or current_world()
    state_path = Path(state_path)
    if not world.is_main:
        log, progress = (lambda *a, **k: None), None
    step, history, nan_skips, train_time = 0, [], 0, 0.0
    if state_path.is_file():
        st = load_torch(state_path, map_location=device)
        stored = _resume_keys(st.get("cfg", {}), plan.speed_only_keys)
        now = _resume_keys(plan.cfg, plan.speed_only_keys)
        if stored != now:
            diff = sorted(k for k in stored.keys() | now.keys() if stored.get(k, "<absent>") != now.get(k, "<absent>"))
            raise ValueError(f"{state_path} was written with a different train config (keys {diff}); "
                             f"move it away to start a new run")
        task.load_state(st)
        step, history = int(st["step"]), list(st["history"])
        nan_skips, train_time = int(st.get("nan_skips", 0)), float(st.get("train_time_s", 0.0))
        restore_rng(st["rng"])
        log(f"[{plan.name}] resumed from {state_path} at step {step}/{plan.max_it}")
    else:
        seed_everything(plan.seed)
        task.start()

    B, max_it, iters = plan.batch_size, plan.max_it, plan.iters_per_ep
    consecutive_skips, t_log, steps_since_log = 0, time.perf_counter(), 0
    order_ep, order = -1, None
    while step < max_it:
        ep, it_in_ep = divmod(step, iters)
        if ep != order_ep:
            order_ep, order = ep, epoch_order(plan.seed, ep, plan.num_train, iters, B)
        t0 = time.perf_counter()
        out = task.step(step, ep, order[it_in_ep * B:(it_in_ep + 1) * B])
        if not out.finite:
            msg = f"non-finite loss/grad (loss={out.info.get('loss')}) at step {step} (epoch {ep})"
            if plan.nan_policy == "raise":
                raise FloatingPointError(f"{msg}; last good state kept in {state_path}")
            consecutive_skips += 1
            nan_skips += 1
            log(f"[{plan.name}] {msg}: update skipped")
            if consecutive_skips > MAX_CONSECUTIVE_SKIPS:
                raise FloatingPointError(f"{msg}: {consecutive_skips} consecutive non-finite steps")
        else:
            consecutive_skips = 0
        step += 1
        train_time += time.perf_counter() - t0
        steps_since_log += 1

        info = out.info
        if progress is not None:
            progress(step, max_it, info)
        if step % plan.log_every_steps == 0 or step == max_it:
            dt = time.perf_counter() - t_log
            log(f"[{plan.name}] step {step}/{max_it} ep {ep} " + " ".join(
                f"{k} {v:.4g}" for k, v in info.items() if k != "epoch" and isinstance(v, (int, float))) +
                f" {steps_since_log * B / max(dt, 1e-9):.1f} img/s")
            t_log, steps_since_log = time.perf_counter(), 0

        epoch_end = step % iters == 0 or step == max_it
        done_ep = (step - 1) // iters + 1
        if epoch_end and (done_ep % plan.eval_every_epochs == 0 or step == max_it):
            m = task.evaluate(done_ep, step, info)
            if m is not None:
                history.append(m)
                log(f"[{plan.name}] eval ep {done_ep}: " + " ".join(
                    f"{k[4:]} {v:.4g}" for k, v in m.items() if k.startswith("val_") and isinstance(v, float)))
        if epoch_end or step % plan.ckpt_every_steps == 0:
            save_state(state_path, step, lambda: {
                "format": plan.state_format, "cfg": plan.cfg, "step": step, **task.state(), "rng": capture_rng(),
                "history": history, "nan_skips": nan_skips, "train_time_s": train_time}, world)
    return LoopResult(step=step, history=history, train_time_s=train_time, nan_skips=nan_skips)
