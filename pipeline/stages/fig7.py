"""Stage `fig7`: the paper's Fig. 7 -- samples from several model sizes (rows) at several training stages (20 /
60 / 100% of the training tokens; columns), with the same seed, labels and teacher-forced first scales in every
cell, so that the cells differ only by the model's size and training.

The snapshots come from `scaling_train`; the first `scaling.fig7_teacher_force_scales` token maps are copied from
the first val image of each class (var/editing.py `force_first_scales`). Every cell is one block of the one
generation path (var/sharded_sampling.py) with `scaling.fig7_sampler`, and the engine when `sample.fast` is set.
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.common import load_stage_params, run_stage, select_device, stage_parser
from var.checkpoint import build_model, load_model_checkpoint, load_state_dict_strict
from var.editing import force_first_scales
from var.engine import engine_for
from var.io import atomic_path, load_torch
from var.sharded_sampling import generate
from var.token_data import as_token_data, split_scales


def main(args, log) -> dict:
    p = load_stage_params(args)
    sc = p.scaling
    device = select_device(args.device)
    vqvae, _ = load_model_checkpoint(args.tokenizer, kind="vqvae", map_location=device)
    vqvae.to(device).eval()
    snaps = load_torch(args.snapshots, map_location=device)["snapshots"]
    val = as_token_data(args.val_tokens, tuple(p.tokenizer.model.patch_nums), "val")
    classes = [c for c in sc.fig7_classes if c < p.data.num_classes]
    first = [int(np.flatnonzero(val.labels_N == c)[0]) for c in classes]
    src = split_scales(torch.from_numpy(val.idx_NL[first].astype(np.int64)).to(device), val.patch_nums)
    tf = force_first_scales(src, sc.fig7_teacher_force_scales) if sc.fig7_teacher_force_scales else None

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows, cols = sc.rows_fig7, sc.fig7_fractions
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.2 * len(cols) * max(len(classes), 1) / 2,
                                                            1.6 * len(rows)), squeeze=False)
    for i, d in enumerate(rows):
        for j, f in enumerate(cols):
            ck = snaps[f"d{d}@{f:g}"]
            var = build_model(ck["kind"], ck["config"])
            load_state_dict_strict(var, ck["model"], source=f"{args.snapshots}[d{d}@{f:g}]")
            var.to(device).eval()
            engine = engine_for(var, vqvae, fast=p.sample.fast, precision=p.sample.precision,
                                compile=p.sample.compile)
            row = generate(var, vqvae, np.asarray(classes, np.int64), block_size=len(classes), seed=sc.seed,
                           engine=engine, teacher_force=tf, **sc.fig7_sampler.kwargs()).images[0]
            axes[i, j].imshow(np.concatenate(list(row), axis=1), interpolation="nearest")
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(f"{100 * f:.0f}% of training tokens", fontsize=8)
            if j == 0:
                n = sum(q.numel() for q in var.parameters())
                axes[i, j].set_ylabel(f"d{d} ({n / 1e6:.2f}M)", fontsize=8)
    fs = sc.fig7_sampler
    fig.suptitle(f"VAR depth sweep: samples of classes {classes}, seed {sc.seed}, cfg {fs.cfg:g} ({fs.cfg_schedule}), "
                 f"top-k {fs.top_k or 'off'}, top-p {fs.top_p or 'off'}, first "
                 f"{sc.fig7_teacher_force_scales} scale(s) teacher-forced", fontsize=8)
    fig.tight_layout()
    with atomic_path(args.figure, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return {"rows": len(rows), "columns": len(cols), "classes": len(classes)}


def cli(argv=None):
    ap = stage_parser("fig7", __doc__)
    ap.add_argument("--snapshots", required=True, help="input: snapshots of the sweep (scaling_train)")
    ap.add_argument("--tokenizer", required=True, help="input: tokenizer checkpoint")
    ap.add_argument("--val-tokens", required=True, help="input: val token file (teacher-forced first scales)")
    ap.add_argument("--figure", required=True, help="output: PNG")
    run_stage("fig7", main, ap, argv)


if __name__ == "__main__":
    cli()
