"""Stage `sample`: draw `sample.per_class` images per class from a trained VAR (top-k / top-p / CFG, seeded).

Writes the images as uint8 `.npz` (`images` (N, H, W, 3), `labels` int64), a PNG grid (one row per class), and the
generation wall-clock (the Time column of Table 1).
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from pipeline.common import load_stage_params, progress_bar, run_stage, select_device, stage_parser
from var.checkpoint import load_model_checkpoint
from var.io import atomic_path, atomic_savez, atomic_write_json
from var.sampling import sample


def save_grid(path, images_NHW3: np.ndarray, labels_N: np.ndarray, per_row: int = 10) -> None:
    """One row per class, the first `per_row` samples of each."""
    from PIL import Image
    classes = np.unique(labels_N)
    H, W = images_NHW3.shape[1:3]
    grid = np.full((len(classes) * H, per_row * W, 3), 255, np.uint8)
    for r, c in enumerate(classes):
        for j, i in enumerate(np.flatnonzero(labels_N == c)[:per_row]):
            grid[r * H:(r + 1) * H, j * W:(j + 1) * W] = images_NHW3[i]
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")


def main(args, log) -> dict:
    p = load_stage_params(args)
    sc = p.sample
    device = select_device(args.device)
    var, ckpt = load_model_checkpoint(args.model, kind="var", map_location=device)
    vqvae, _ = load_model_checkpoint(args.tokenizer, kind="vqvae", map_location=device)
    var.to(device).eval()
    vqvae.to(device).eval()
    K = var.cfg.num_classes
    labels_N = np.repeat(np.arange(K, dtype=np.int64), sc.per_class)
    images, seconds = [], 0.0
    n_batches = math.ceil(len(labels_N) / sc.batch_size)
    with progress_bar(f"sample {args.model_name}", total=len(labels_N)) as update:
        for b in range(n_batches):
            label_B = torch.from_numpy(labels_N[b * sc.batch_size:(b + 1) * sc.batch_size]).to(device)
            t0 = time.perf_counter()
            # one seed per batch, derived from (seed, batch index): reproducible and independent of the others
            _, img_B3HW = sample(var, vqvae, len(label_B), label_B, seed=sc.seed * 100003 + b, cfg=sc.cfg,
                                 top_k=sc.top_k, top_p=sc.top_p, more_smooth=sc.more_smooth)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds += time.perf_counter() - t0
            images.append((img_B3HW.clamp(0, 1) * 255 + 0.5).floor().to(torch.uint8)
                          .permute(0, 2, 3, 1).cpu().numpy())
            update(min((b + 1) * sc.batch_size, len(labels_N)))
    images_NHW3 = np.concatenate(images)
    atomic_savez(args.samples, images=images_NHW3, labels=labels_N)
    save_grid(args.grid, images_NHW3, labels_N)
    info = {"model": args.model_name, "num_images": int(len(labels_N)), "seconds": seconds,
            "seconds_per_image": seconds / len(labels_N), "batch_size": sc.batch_size, "device": str(device),
            "train_step": int(ckpt.get("step", 0)), "steps": len(var.cfg.patch_nums)}
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
    run_stage("sample", main, ap, argv)


if __name__ == "__main__":
    cli()
