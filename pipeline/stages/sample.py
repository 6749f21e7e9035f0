"""Stage `sample`: draw `sample.per_class` images per class from a trained VAR (`sample.sampler`: top-k / top-p /
CFG and its schedule, seeded).

Writes the images as uint8 `.npz` (`images` (N, H, W, 3), `labels` int64), a PNG grid (one row per class), and the
generation wall-clock (the Time column of Table 1). Under `torchrun --nproc_per_node N` the blocks of images are
spread over the N GPUs and the file is byte-identical to a one-process run (var/sharded_sampling.py, the one
generation path).
"""
from __future__ import annotations

import time

import numpy as np

from pipeline.common import load_stage_params, progress_bar, run_stage, stage_parser
from var.checkpoint import load_matching_checkpoint
from var.distributed import all_reduce_sum, init_from_env
from var.engine import engine_for
from var.io import atomic_write_json, save_image_grid
from var.sharded_sampling import gather_to_file, generate, write_seed_repeats


def main(args, log) -> dict:
    p = load_stage_params(args)
    sc = p.sample
    world, device = init_from_env(args.device)   # under torchrun: this rank's GPU; else --device
    var, ckpt = load_matching_checkpoint(args.model, "var", p.model(args.model_name).model,
                                    f"models.{args.model_name}.model", device)
    vqvae, _ = load_matching_checkpoint(args.tokenizer, "vqvae", p.tokenizer.model, "tokenizer.model", device)
    var.to(device).eval()
    vqvae.to(device).eval()
    engine = engine_for(var, vqvae, fast=sc.fast, precision=sc.precision, compile=sc.compile)
    K = var.cfg.num_classes
    labels_N = np.repeat(np.arange(K, dtype=np.int64), sc.per_class)
    # Blocks of `batch_size` consecutive images, each one sampler call seeded from (seed, block index), taken
    # round robin by the ranks: the file is byte-identical whatever the world size (var/sharded_sampling.py).
    t_wall = time.perf_counter()
    with progress_bar(f"sample {args.model_name}", total=len(labels_N)) as update:
        g = generate(var, vqvae, labels_N, block_size=sc.batch_size, seed=sc.seed, world=world,
                     progress=update if world.is_main else None, engine=engine, **sc.sampler.kwargs())
    # Time column: sampler seconds summed over the GPUs per image (comparable across world sizes).
    seconds = float(all_reduce_sum([g.seconds], device)[0])
    log.info("sampled %d images: %.1f s wall-clock (%.1f s in the sampler)", len(labels_N),
             time.perf_counter() - t_wall, g.seconds)
    t0 = time.perf_counter()
    res = gather_to_file(g.images, labels_N, args.samples, sc.batch_size, world)
    log.info("wrote %s: %.1f s", args.samples, time.perf_counter() - t0)
    if args.seed_samples:                # score.seeds > 1: the same labels under further sampling seeds
        write_seed_repeats(var, vqvae, labels_N, args.seed_samples, seeds=p.score.seeds, seed=sc.seed,
                           block_size=sc.batch_size, world=world, engine=engine, **sc.sampler.kwargs())
    if not world.is_main:
        return {}
    t0 = time.perf_counter()
    save_image_grid(args.grid, res[0], labels_N)
    log.info("wrote %s: %.1f s", args.grid, time.perf_counter() - t0)
    info = {"model": args.model_name, "num_images": int(len(labels_N)), "seconds": seconds,
            "seconds_per_image": seconds / len(labels_N), "batch_size": sc.batch_size, "device": str(device),
            "world_size": world.size, "wall_seconds": time.perf_counter() - t_wall,
            "train_step": int(ckpt.get("step", 0)), "steps": len(var.cfg.patch_nums),
            "engine": {"fast": sc.fast, "precision": sc.precision, "compile": sc.compile},
            "sampler": {"seed": sc.seed, **sc.sampler.kwargs()}}
    atomic_write_json(args.metrics, info)
    return {"model": args.model_name, "images": len(labels_N), "s_per_img": info["seconds_per_image"]}


def cli(argv=None):
    ap = stage_parser("sample", __doc__)
    ap.add_argument("--model-name", required=True, help="key of `models` in params (the DAG's {model})")
    ap.add_argument("--model", required=True, help="input: VAR checkpoint")
    ap.add_argument("--tokenizer", required=True, help="input: tokenizer checkpoint")
    ap.add_argument("--samples", required=True, help="output: samples .npz")
    ap.add_argument("--grid", required=True, help="output: PNG grid")
    ap.add_argument("--metrics", required=True, help="output: generation timing JSON")
    ap.add_argument("--seed-samples", default="", help="output (score.seeds > 1): the images under further seeds")
    run_stage("sample", main, ap, argv)


if __name__ == "__main__":
    cli()
