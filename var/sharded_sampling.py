"""The one generation path: images drawn in seeded blocks spread over ranks, with results that do not depend on
the world size. Every stage that generates images uses it (`sample`, `sample_row` for VAR and AR rows, `fig7`,
`zeroshot`).

The N images (for the sample stages class-major: class 0's `per_class` images, then class 1's, ...) are cut into
fixed blocks of `block_size` consecutive images. Block b is one sampler call seeded with `block_seed(seed, b)` --
so image i is drawn from the seed of block i // block_size, whoever draws it. Ranks take blocks round robin
(rank r: blocks r, r + world, ...), each writes its blocks to a shard file, and rank 0 assembles them in block order
into one `.npz` (atomically) and removes the shards. One process draws every block itself, with the seeds the
`sample` stage always used, so its output is unchanged.

`draw_images` is the one sampler call: var.sampling.sample for a VAR (or the GenerationEngine, the same function
faster), var.ar.sample_ar for the raster AR baseline, with the settings of a var.config.SamplerConfig. Images become
uint8 by var.images.to_uint8. Rejection sampling (var/rejection.py) redraws within a block, from seeds of the block.
"""
from __future__ import annotations

import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from var.ar import AR, sample_ar
from var.config.sampling import RejectionConfig
from var.distributed import World, barrier
from var.images import to_uint8
from var.io import atomic_path, atomic_savez, load_npz
from var.rejection import Classify, RejectionStats, reject_block
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


def draw_images(model, vqvae, label_B: torch.Tensor, *, seed: int, engine=None, teacher_force=None,
                cfg: float = 1.5, cfg_schedule: str = "linear", top_k: int = 0, top_p: float = 0.0,
                more_smooth: bool = False) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One seeded sampler call for the labels int64 (B,): (tokens, images (B, 3, H, W) in [0, 1]).
    A VAR samples with var.sampling.sample, or `engine.generate` when an engine (built on this model) is given; an
    AR (raster-scan baseline) with var.ar.sample_ar, tokens as a one-element list. The guidance schedule, top-k /
    top-p and the draw are the same functions for all three."""
    B = len(label_B)
    if isinstance(model, AR):
        if engine is not None or teacher_force is not None or more_smooth:
            raise ValueError("the AR baseline samples token by token: no engine, teacher forcing or more_smooth")
        idx_BL, img_B3HW = sample_ar(model, vqvae, B, label_B, seed=seed, cfg=cfg, cfg_schedule=cfg_schedule,
                                     top_k=top_k, top_p=top_p)
        return [idx_BL], img_B3HW
    kw = dict(seed=seed, cfg=cfg, cfg_schedule=cfg_schedule, top_k=top_k, top_p=top_p, more_smooth=more_smooth,
              teacher_force=teacher_force)
    if engine is not None:
        return engine.generate(B, label_B, **kw)
    return sample(model, vqvae, B, label_B, **kw)


@dataclass
class Generated:
    """What one rank drew: its blocks, by block id."""
    images: dict[int, np.ndarray] = field(default_factory=dict)   # uint8 (b, H, W, 3); kept images under rejection
    keep: dict[int, np.ndarray] = field(default_factory=dict)     # rejection: bool (block size,) which were kept
    tokens: dict[int, list] = field(default_factory=dict)         # keep_tokens: the blocks' token maps (CPU)
    seconds: float = 0.0                                          # in the sampler (every candidate)
    classifier_seconds: float = 0.0                               # rejection: in the classifier
    rejection: RejectionStats | None = None


def _slice_tf(teacher_force, s: int, e: int, device):
    if teacher_force is None:
        return None
    return tuple([t[s:e].to(device) for t in part] for part in teacher_force)


def generate(model, vqvae, labels_N: np.ndarray, *, block_size: int, seed: int, world: World = World(),
             progress: Callable[[int], None] | None = None, engine=None, into: np.ndarray | None = None,
             teacher_force=None, keep_tokens: bool = False, rejection: RejectionConfig | None = None,
             classify: Classify | None = None, **sampler_kw) -> Generated:
    """Draw this rank's blocks of the images labelled `labels_N` (int64 (N,)).

    `sampler_kw`: a SamplerConfig's `kwargs()` (cfg, cfg_schedule, top_k, top_p, more_smooth) for `draw_images`.
    `into` (N, H, W, 3) uint8: each block is written to its rows there (the returned blocks are views), saving a copy
    of the whole set. `teacher_force`: (ref tokens, keep masks), lists over scales of (N, pn*pn) tensors, sliced per
    block (var/editing.py). `rejection` (enabled) with `classify`: each block is rejection-sampled
    (var/rejection.py) and keeps only its accepted images."""
    device = next(model.parameters()).device
    rejecting = rejection is not None and rejection.enabled
    if rejecting and (classify is None or into is not None or teacher_force is not None or keep_tokens):
        raise ValueError("rejection sampling needs a classifier, and works without `into`, teacher forcing and "
                         "kept tokens")
    out = Generated(rejection=RejectionStats() if rejecting else None)
    clock = {"sampler": 0.0, "classifier": 0.0}

    def timed(key, fn, *a, **k):
        t0 = time.perf_counter()
        res = fn(*a, **k)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        clock[key] += time.perf_counter() - t0
        return res

    bounds = block_bounds(len(labels_N), block_size)
    done = 0
    for b in range(world.rank, len(bounds), world.size):
        s, e = bounds[b]
        if rejecting:
            def draw(labels_n, seed_n):
                label_B = torch.from_numpy(np.ascontiguousarray(labels_n)).to(device)
                return to_uint8(timed("sampler", draw_images, model, vqvae, label_B, seed=seed_n, engine=engine,
                                      **sampler_kw)[1])
            imgs, keep, st = reject_block(draw, lambda x, y: timed("classifier", classify, x, y), labels_N[s:e],
                                          block_seed(seed, b), threshold=rejection.threshold,
                                          max_candidates=rejection.max_candidates)
            out.images[b], out.keep[b], out.rejection = imgs, keep, out.rejection + st
        else:
            label_B = torch.from_numpy(labels_N[s:e]).to(device)
            idx, img_B3HW = timed("sampler", draw_images, model, vqvae, label_B, seed=block_seed(seed, b),
                                  engine=engine, teacher_force=_slice_tf(teacher_force, s, e, device), **sampler_kw)
            out.images[b] = to_uint8(img_B3HW, out=None if into is None else into[s:e])
            if keep_tokens:
                out.tokens[b] = [t.cpu() for t in idx]
        done += e - s
        if progress is not None:
            progress(done)
    out.seconds, out.classifier_seconds = clock["sampler"], clock["classifier"]
    return out


def generate_blocks(model, vqvae, labels_N: np.ndarray, *, block_size: int, seed: int, world: World = World(),
                    progress: Callable[[int], None] | None = None, engine=None, into: np.ndarray | None = None,
                    **sampler_kw) -> tuple[dict, float]:
    """`generate` without rejection: ({block id: uint8 (b, H, W, 3)}, seconds spent in the sampler)."""
    g = generate(model, vqvae, labels_N, block_size=block_size, seed=seed, world=world, progress=progress,
                 engine=engine, into=into, **sampler_kw)
    return g.images, g.seconds


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
                   extra: dict | None = None, keep: dict | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Write `images` (n, H, W, 3) uint8 and `labels` (n,) int64 to `out_path` in block order (rank 0, atomically).
    With several ranks each writes its blocks to a shard beside `out_path` first. `keep` (rejection sampling):
    per block, which of its images the block kept; the labels written are theirs (n <= N). Returns (images, labels)
    on rank 0."""
    ids = sorted(blocks)
    bounds = block_bounds(len(labels_N), block_size)
    keep = keep if keep is not None else {b: np.ones(bounds[b][1] - bounds[b][0], bool) for b in ids}
    if world.distributed:
        mine = np.concatenate([blocks[b] for b in ids]) if ids else np.zeros((0, 1, 1, 3), np.uint8)
        atomic_savez(shard_path(out_path, world.rank, world.size), block_ids=np.asarray(ids, np.int64),
                     block_sizes=np.asarray([len(blocks[b]) for b in ids], np.int64), images=mine,
                     keep=np.concatenate([keep[b] for b in ids]) if ids else np.zeros(0, bool))
        barrier()
        if world.is_main:
            blocks, keep = {}, {}
            for r in range(world.size):
                sh = load_npz(shard_path(out_path, r, world.size))
                ids_r = [int(b) for b in sh["block_ids"]]
                for b, chunk in zip(ids_r, np.split(sh["images"], np.cumsum(sh["block_sizes"])[:-1])):
                    blocks[b] = chunk
                lens = [bounds[b][1] - bounds[b][0] for b in ids_r]
                for b, k in zip(ids_r, np.split(sh["keep"], np.cumsum(lens)[:-1])):
                    keep[b] = k
    out = None
    if world.is_main:
        missing = sorted(set(range(len(bounds))) - set(blocks))
        if missing:
            raise RuntimeError(f"blocks {missing[:5]} missing when assembling {out_path}")
        images = np.concatenate([blocks[b] for b in sorted(blocks)])
        labels = np.concatenate([labels_N[s:e][keep[b]] for b, (s, e) in enumerate(bounds)])
        if len(images) != len(labels):
            raise RuntimeError(f"assembled {len(images)} images for {len(labels)} labels")
        atomic_savez_reproducible(out_path, images=images, labels=labels, **(extra or {}))
        for r in range(world.size if world.distributed else 0):
            shard_path(out_path, r, world.size).unlink(missing_ok=True)
        out = images, labels
    barrier()
    return out



def write_seed_repeats(model, vqvae, labels_N: np.ndarray, out_path: str | Path, *, seeds: int, seed: int,
                       block_size: int, world: World = World(), engine=None, **sampler_kw) -> None:
    """The same labels drawn again under sampling seeds repeat_seed(seed, 1..seeds-1) (mean +- sd over seeds):
    `images_seed<i>` (N, H, W, 3) uint8, `labels`, and `seeds` (all of them, repeat 0 first) in one .npz, written
    by rank 0. Each repeat goes through `generate` and `gather_to_file`, so it is world-size independent too."""
    extra = {}
    for i in range(1, seeds):
        more = generate(model, vqvae, labels_N, block_size=block_size, seed=repeat_seed(seed, i), world=world,
                        engine=engine, **sampler_kw)
        tmp = f"{out_path}.seed{i}.npz"
        got = gather_to_file(more.images, labels_N, tmp, block_size, world)
        if world.is_main:
            extra[f"images_seed{i}"] = got[0]
            Path(tmp).unlink()
    if world.is_main:
        atomic_savez_reproducible(out_path, labels=labels_N,
                                  seeds=np.asarray([repeat_seed(seed, i) for i in range(seeds)]), **extra)

__all__ = ["block_seed", "repeat_seed", "block_bounds", "draw_images", "Generated", "generate", "generate_blocks",
           "shard_path", "gather_to_file", "atomic_savez_reproducible", "write_seed_repeats"]
