"""Stage `tokens`: encode the train/val splits into multi-scale token maps once, with the trained tokenizer.

Output `.npz` (docs/architecture.md): `idx_NL` (int16 if V <= 32767 else int32; scales concatenated coarsest
first, L = sum pn^2), `labels_N` int64, `patch_nums` int64. Under `torchrun --nproc_per_node N` the blocks of
images are spread over the GPUs; the files are byte-identical to one process's (fixed blocks, assembled in order).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from pipeline.common import load_stage_params, progress_bar, run_stage, stage_parser
from var.checkpoint import load_matching_checkpoint
from var.data import ImageSplit
from var.distributed import World, barrier, init_from_env
from var.io import atomic_savez, load_npz, output_group
from var.precision import fp32_precision
from var.sharded_sampling import block_bounds


@torch.no_grad()
def encode_split(vqvae, split_path, image_size: int, batch_size: int, device, skip_corrupt: bool, desc: str,
                 world: World = World(), workers: int = 0, shard_dir=None) -> dict[str, np.ndarray] | None:
    """Token maps of a split. The images are cut into fixed blocks of `batch_size`; ranks take blocks round robin
    and rank 0 assembles them in order, so every block is encoded with the same shapes whatever the GPU count and
    the token file is byte-identical across world sizes. Returns the arrays on rank 0 (None elsewhere)."""
    ds = ImageSplit(split_path, image_size, skip_corrupt=skip_corrupt)
    bounds = block_bounds(len(ds), batch_size)
    mine = list(range(world.rank, len(bounds), world.size))
    V = vqvae.cfg.vocab_size
    dtype = np.int16 if V <= 32767 else np.int32
    idx, labels = {}, {}
    sampler = [i for b in mine for i in range(*bounds[b])]
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, sampler), batch_size=batch_size, shuffle=False,
                                         num_workers=workers)    # decoding in workers: same bytes, faster
    # Strict IEEE float32 on every device: cuDNN's TF32 default changed 6% of a trained tokenizer's tokens
    # (var/precision.py), and the training data must not depend on the GPU it was encoded on.
    with progress_bar(desc, total=len(sampler)) as update, fp32_precision(False):
        done = 0
        for b, (img_B3HW, label_B) in zip(mine, loader):     # the blocks are whole batches of the loader
            idx_Bl = vqvae.img_to_idx(img_B3HW.to(device))
            idx[b] = torch.cat(idx_Bl, dim=1).cpu().numpy().astype(dtype)
            labels[b] = label_B.numpy().astype(np.int64)
            done += len(label_B)
            update(done)
    if world.distributed:
        shard = Path(shard_dir) / f".tokens-{Path(split_path).stem}.shard{world.rank}-of-{world.size}.npz"
        atomic_savez(shard, blocks=np.asarray(mine, np.int64), **{f"idx_{b}": idx[b] for b in mine},
                     **{f"labels_{b}": labels[b] for b in mine})
        barrier()
        if world.is_main:
            for r in range(world.size):
                other = shard.with_name(f".tokens-{Path(split_path).stem}.shard{r}-of-{world.size}.npz")
                sh = load_npz(other)
                for b in sh["blocks"]:
                    idx[int(b)], labels[int(b)] = sh[f"idx_{b}"], sh[f"labels_{b}"]
        barrier()
        shard.unlink()
    if not world.is_main:
        return None
    return {"idx_NL": np.concatenate([idx[b] for b in range(len(bounds))]),
            "labels_N": np.concatenate([labels[b] for b in range(len(bounds))]),
            "patch_nums": np.asarray(vqvae.cfg.patch_nums, np.int64)}


def main(args, log) -> dict:
    p = load_stage_params(args)
    world, device = init_from_env(args.device)    # under torchrun: this rank's GPU; else --device
    vqvae, _ = load_matching_checkpoint(args.tokenizer, "vqvae", p.tokenizer.model, "tokenizer.model", device)
    vqvae.to(device).eval()
    workers = args.workers if args.workers >= 0 else (min(8, (os.cpu_count() or 1) // world.size)
                                                      if device.type == "cuda" else 0)
    out = {}
    with output_group() as outputs:        # both token files or neither (a bad val split loses nothing)
        for split, src, dst in (("train", args.train, args.train_tokens), ("val", args.val, args.val_tokens)):
            tok = encode_split(vqvae, src, p.data.image_size, args.batch_size, device, p.data.skip_corrupt,
                               f"tokens {split}", world, workers, Path(dst).parent)
            if world.is_main:
                atomic_savez(outputs.pending(dst), **tok)
                log.info("%s: %s tokens -> %s", split, tok["idx_NL"].shape, dst)
                out[split] = int(tok["idx_NL"].shape[0])
            barrier()
    if not world.is_main:
        return {}
    return {"train": out["train"], "val": out["val"], "L": int(tok["idx_NL"].shape[1]),
            "vocab": vqvae.cfg.vocab_size, "world_size": world.size}


def cli(argv=None):
    ap = stage_parser("tokens", __doc__)
    ap.add_argument("--tokenizer", required=True, help="input: tokenizer checkpoint")
    ap.add_argument("--train", required=True, help="input: train split")
    ap.add_argument("--val", required=True, help="input: val split")
    ap.add_argument("--train-tokens", required=True, help="output: train token file")
    ap.add_argument("--val-tokens", required=True, help="output: val token file")
    ap.add_argument("--batch-size", type=int, default=256, help="encoding block: fixed, so the file does not depend "
                    "on the GPU count")
    ap.add_argument("--workers", type=int, default=-1, help="image-decoding worker processes (-1: up to 8 on a GPU)")
    run_stage("tokens", main, ap, argv)


if __name__ == "__main__":
    cli()
