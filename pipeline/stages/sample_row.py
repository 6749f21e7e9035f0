"""Stage `sample_row`: draw `sample.per_class` images per class for one Table 2/3 row, with the row's own sampler
switches (top_k, top_p, cfg); VAR rows use var.sampling.sample, AR rows var.ar.sample_ar (same filter and draw).

Writes the samples (`images` uint8 (N, H, W, 3), `labels`), a grid, and the inference cost: wall-clock per image
and the analytic transformer FLOPs per image (eval/complexity.py), which Table 3 reports relative to its row 1.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from eval.complexity import generation_flops
from pipeline.common import progress_bar, row_params, run_stage, select_device, stage_parser
from pipeline.rows import row_model_config
from var.ar import sample_ar
from var.checkpoint import load_matching_checkpoint
from var.io import atomic_savez, atomic_write_json, save_image_grid
from var.sampling import sample


def main(args, log) -> dict:
    row, p = row_params(args, args.row)
    sc = p.sample
    device = select_device(args.device)
    want = row_model_config(row, p.tokenizer.model, p.data.num_classes)
    model, ckpt = load_matching_checkpoint(args.model, row.kind, want, f"rows.{args.row}", device)
    vqvae, _ = load_matching_checkpoint(args.tokenizer, "vqvae", p.tokenizer.model, "tokenizer.model", device)
    model.to(device).eval()
    vqvae.to(device).eval()
    labels_N = np.repeat(np.arange(model.cfg.num_classes, dtype=np.int64), sc.per_class)
    images, seconds = [], 0.0
    n_batches = math.ceil(len(labels_N) / sc.batch_size)
    with progress_bar(f"sample {args.row}", total=len(labels_N)) as update:
        for b in range(n_batches):
            label_B = torch.from_numpy(labels_N[b * sc.batch_size:(b + 1) * sc.batch_size]).to(device)
            seed = sc.seed * 100003 + b           # as the `sample` stage: one seed per batch
            t0 = time.perf_counter()
            if row.kind == "ar":
                _, img_B3HW = sample_ar(model, vqvae, len(label_B), label_B, seed=seed, cfg=row.cfg,
                                        top_k=row.top_k, top_p=row.top_p)
            else:
                _, img_B3HW = sample(model, vqvae, len(label_B), label_B, seed=seed, cfg=row.cfg, top_k=row.top_k,
                                     top_p=row.top_p, more_smooth=sc.more_smooth)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds += time.perf_counter() - t0
            images.append((img_B3HW.clamp(0, 1) * 255 + 0.5).floor().to(torch.uint8)
                          .permute(0, 2, 3, 1).cpu().numpy())
            update(min((b + 1) * sc.batch_size, len(labels_N)))
    images_NHW3 = np.concatenate(images)
    atomic_savez(args.samples, images=images_NHW3, labels=labels_N)
    save_image_grid(args.grid, images_NHW3, labels_N)
    steps = model.cfg.seq_len if row.kind == "ar" else len(model.cfg.patch_nums)
    info = {"row": args.row, "kind": row.kind, "num_images": int(len(labels_N)), "seconds": seconds,
            "seconds_per_image": seconds / len(labels_N), "batch_size": sc.batch_size, "device": str(device),
            "train_step": int(ckpt.get("step", 0)), "steps": steps,
            "flops_per_image": generation_flops(model.cfg, cfg_batch=2), "top_k": row.top_k, "top_p": row.top_p,
            "cfg": row.cfg, "sampler": {"seed": sc.seed, "cfg": row.cfg, "top_k": row.top_k, "top_p": row.top_p,
                                        "more_smooth": sc.more_smooth}}
    atomic_write_json(args.metrics, info)
    return {"row": args.row, "images": len(labels_N), "s_per_img": info["seconds_per_image"],
            "GFLOP_per_img": info["flops_per_image"] / 1e9}


def cli(argv=None):
    ap = stage_parser("sample_row", __doc__)
    ap.add_argument("--row", default="", help="key of `rows` in params (the DAG's {row}); none: params "
                                              "ablation.row (the experiment jobs)")
    ap.add_argument("--model", required=True, help="input: the row's model checkpoint (its own or model_from's)")
    ap.add_argument("--tokenizer", required=True, help="input: the row's tokenizer checkpoint")
    ap.add_argument("--ar-tokenizer", default="", help="input (experiments): the AR tokenizer, used for an AR row")
    ap.add_argument("--samples", required=True, help="output: samples .npz")
    ap.add_argument("--grid", required=True, help="output: PNG grid")
    ap.add_argument("--metrics", required=True, help="output: generation cost JSON")
    run_stage("sample_row", main, ap, argv)


if __name__ == "__main__":
    cli()
