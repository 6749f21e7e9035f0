"""Sampling spread over ranks, with samples that do not depend on the world size.

The N images (class-major: class 0's `per_class` images, then class 1's, ...) are cut into fixed blocks of
`block_size` consecutive images. Block b is one sampler call seeded from (seed, b) -- so image i of class c is
drawn from the seed of block (c * per_class + i) // block_size, whoever draws it. Ranks take blocks round robin
(rank r: blocks r, r + world, ...), each writes its blocks to a shard file, and rank 0 assembles them in block order
into one `.npz` (atomically) and removes the shards. One process draws every block itself, with the seeds the
`sample` stage always used, so its output is unchanged.
"""
from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from var.distributed import World, barrier
from var.io import atomic_path, atomic_savez, load_npz
from var.sampling import sample


def block_seed(seed: int, block: int) -> int:
    """The sampler seed of block `block` (the `sample` stage's per-batch seed since its first version)."""
    return seed * 100003 + block


def repeat_seed(seed: int, repeat: int) -> int:
    """The base seed of the `repeat`-th sampling of the same images (score.seeds: mean +- sd over repeats); repeat 0
    is the seed itself, so one repeat gives exactly the usual samples."""
    return seed + 1_000_003 * repeat


def block_bounds(n: int, block_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + block_size, n)) for s in range(0, n, block_size)]


def to_uint8(img_B3HW: torch.Tensor, out: np.ndarray | None = None) -> np.ndarray:
    """Images in [0, 1], (B, 3, H, W) -> uint8 (B, H, W, 3), written into `out` (C-contiguous) when given.
    The HWC layout is made on the tensor's device, so the host receives one dense copy: a strided .cpu() and a
    numpy assignment cost ~0.14 s per block of 250 on an H200, 27.8 s of a 50k run (docs/performance.md)."""
    u8_BHW3 = (img_B3HW.clamp(0, 1) * 255 + 0.5).floor().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    if out is None:
        return u8_BHW3.cpu().numpy()
    torch.from_numpy(out).copy_(u8_BHW3)
    return out


def generate_blocks(var, vqvae, labels_N: np.ndarray, *, block_size: int, seed: int, world: World = World(),
                    progress: Callable[[int], None] | None = None, engine=None, into: np.ndarray | None = None,
                    **sample_kw) -> tuple[dict, float]:
    """Draw this rank's blocks: ({block id: uint8 (b, H, W, 3)}, seconds spent in the sampler).
    `sample_kw` go to `var.sampling.sample` (cfg, top_k, top_p, more_smooth, runner, decode), or to
    `engine.generate` when a var.engine.GenerationEngine is given (same seeds, same blocks). `into` (N, H, W, 3)
    uint8: each block is written to its rows there (the returned blocks are views), saving a copy of the whole set."""
    device = var.pos_start.device
    bounds = block_bounds(len(labels_N), block_size)
    out, seconds, done = {}, 0.0, 0
    for b in range(world.rank, len(bounds), world.size):
        s, e = bounds[b]
        label_B = torch.from_numpy(labels_N[s:e]).to(device)
        t0 = time.perf_counter()
        if engine is None:
            _, img_B3HW = sample(var, vqvae, e - s, label_B, seed=block_seed(seed, b), **sample_kw)
        else:
            _, img_B3HW = engine.generate(e - s, label_B, seed=block_seed(seed, b), **sample_kw)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - t0
        out[b] = to_uint8(img_B3HW, out=None if into is None else into[s:e])
        done += e - s
        if progress is not None:
            progress(done)
    return out, seconds


def atomic_savez_reproducible(path: str | Path, **arrays: np.ndarray) -> None:
    """Like np.savez (uncompressed, loads with np.load), atomically, but with fixed zip timestamps: the same arrays
    always give the same bytes (np.savez stamps every member with the current time)."""
    with atomic_path(path, suffix=".npz") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key, a in arrays.items():
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with zf.open(info, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asanyarray(a), allow_pickle=False)


def shard_path(out_path: str | Path, rank: int, world_size: int) -> Path:
    out_path = Path(out_path)
    return out_path.with_name(f".{out_path.name}.shard{rank}-of-{world_size}.npz")


def gather_to_file(blocks: dict, labels_N: np.ndarray, out_path: str | Path, block_size: int, world: World,
                   extra: dict | None = None) -> np.ndarray | None:
    """Write `images` (N, H, W, 3) uint8 and `labels` (N,) int64 to `out_path` in block order (rank 0, atomically).
    With several ranks each writes its blocks to a shard beside `out_path` first. Returns the images on rank 0."""
    ids = sorted(blocks)
    if world.distributed:
        mine = np.concatenate([blocks[b] for b in ids]) if ids else np.zeros((0, 1, 1, 3), np.uint8)
        atomic_savez(shard_path(out_path, world.rank, world.size), block_ids=np.asarray(ids, np.int64),
                     block_sizes=np.asarray([len(blocks[b]) for b in ids], np.int64), images=mine)
        barrier()
        if world.is_main:
            blocks = {}
            for r in range(world.size):
                sh = load_npz(shard_path(out_path, r, world.size))
                for b, chunk in zip(sh["block_ids"], np.split(sh["images"], np.cumsum(sh["block_sizes"])[:-1])):
                    blocks[int(b)] = chunk
    images = None
    if world.is_main:
        n_blocks = len(block_bounds(len(labels_N), block_size))
        missing = sorted(set(range(n_blocks)) - set(blocks))
        if missing:
            raise RuntimeError(f"blocks {missing[:5]} missing when assembling {out_path}")
        images = np.concatenate([blocks[b] for b in sorted(blocks)])
        if len(images) != len(labels_N):
            raise RuntimeError(f"assembled {len(images)} images for {len(labels_N)} labels")
        atomic_savez_reproducible(out_path, images=images, labels=labels_N, **(extra or {}))
        for r in range(world.size if world.distributed else 0):
            shard_path(out_path, r, world.size).unlink(missing_ok=True)
    barrier()
    return images


__all__ = ["block_seed", "repeat_seed", "block_bounds", "to_uint8", "generate_blocks", "shard_path", "gather_to_file",
           "atomic_savez_reproducible"]
