"""What both trainers (var/train.py for VAR and the AR baseline, var/tokenizer_train.py) share so that their
runs resume and repeat alike: seeding, the capture and restore of every global RNG in a form `load_torch`
(weights_only=True) reads back, and the data order of each epoch drawn from (seed, epoch), so it needs no saved
state.
"""
from __future__ import annotations

import random

import numpy as np
import torch


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
