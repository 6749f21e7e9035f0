"""Data-parallel helpers for the trainers and the sampler: who am I, which part of the global batch is mine.

Everything here is defined over the *global* batch, so a run's result does not depend on how many processes run it:

* the global batch (drawn from (seed, epoch), `var.train.epoch_order`) is cut into fixed chunks of
  `micro_batch_size` consecutive samples; chunk c goes to rank c % world, which processes its chunks one after
  the other (gradient accumulation) -- one process with 4 chunks and 4 processes with 1 chunk each see the same
  chunks;
* every chunk draws its randomness (label dropout, drop-path) from generators seeded by (seed, step, chunk), so
  the draws do not depend on which rank processes it either;
* each chunk's mean loss is weighted by (chunk size / global batch) * world, and DDP averages the gradients over
  the world: the update is the gradient of the global-batch mean whatever the world size.

Outside `torchrun` (no process group) everything degrades to rank 0 of 1.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def current_world() -> World:
    """The initialised process group's rank/size (rank 0 of 1 without one)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return World()


def init_from_env(device: str = "auto") -> tuple[World, torch.device]:
    """Join the process group that `torchrun` describes in the environment (WORLD_SIZE > 1), NCCL on CUDA and gloo
    on CPU, and pick this rank's device (cuda:LOCAL_RANK). Without torchrun: rank 0 of 1 on `device`."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() if device == "auto" else torch.device(device).type == "cuda"
    if world_size <= 1:
        dev = torch.device("cuda" if cuda else "cpu") if device == "auto" else torch.device(device)
        return World(), dev
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo", device_id=dev if cuda else None)
    return current_world(), dev


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: list[float] | np.ndarray, device: torch.device) -> np.ndarray:
    """Sum float64 values over the ranks (identity on one process)."""
    t = torch.as_tensor(np.asarray(values, dtype=np.float64), device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t.cpu().numpy()


def chunk_bounds(batch_size: int, micro_batch_size: int, world_size: int) -> list[tuple[int, int]]:
    """[start, stop) of every chunk of the global batch. micro_batch_size 0 means one chunk per rank (no
    accumulation; then the chunks, and with them the random draws, depend on the world size)."""
    m = micro_batch_size or -(-batch_size // world_size)
    bounds = [(s, min(s + m, batch_size)) for s in range(0, batch_size, m)]
    if len(bounds) < world_size:
        raise ValueError(f"global batch {batch_size} in chunks of {m} gives {len(bounds)} chunk(s), fewer than the "
                         f"{world_size} processes; lower micro_batch_size or use fewer GPUs")
    return bounds


def my_chunks(bounds: list[tuple[int, int]], world: World) -> list[int]:
    """Chunk ids this rank processes (round robin): rank r takes r, r + world, ..."""
    return list(range(world.rank, len(bounds), world.size))


def chunk_seed(seed: int, step: int, chunk: int) -> int:
    """A 63-bit seed from (seed, step, chunk): independent streams for every chunk of every step."""
    a, b = np.random.SeedSequence([seed, step, chunk]).generate_state(2, np.uint32)
    return (int(a) << 31) ^ int(b)


__all__ = ["World", "current_world", "init_from_env", "shutdown", "barrier", "all_reduce_sum", "chunk_bounds",
           "my_chunks", "chunk_seed"]
