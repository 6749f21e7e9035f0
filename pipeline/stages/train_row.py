"""Stage `train_row`: train the model of one Table 2/3 row (`rows.<name>`: a VAR or the raster-scan AR baseline)
on its tokens with the same trainer as `train_var` (var.train.train_var); resumable the same way.

AR rows read the single-scale tokens of `tokenizer_ar` (`--scales last`), rows with a `setting` that setting's
tokens; the DAG passes the right files (pipeline/plan.py), and the tokenizer checkpoint is checked against them.
"""
from __future__ import annotations

import torch

from eval.curves import VAR_CURVES, save_curves
from pipeline.common import (
    copy_atomic,
    fingerprint,
    prepare_state_dir,
    progress_bar,
    row_params,
    run_stage,
    select_device,
    stage_parser,
)
from pipeline.rows import row_model_config
from var.ar import AR
from var.checkpoint import load_matching_checkpoint
from var.io import atomic_write_json
from var.train import train_var
from var.transformer import VAR


def build_row_model(row, p):
    cfg = row_model_config(row, p.tokenizer.model, p.data.num_classes)
    return (AR if row.kind == "ar" else VAR)(cfg)


def main(args, log) -> dict:
    experiment = not args.row                              # ablation.row: train the row's own recipe even if it
    row, p = row_params(args, args.row)                    # reuses another row's model in Table 3
    if row.model_from and not experiment:
        raise ValueError(f"row {args.row!r} reuses the model of {row.model_from!r} (model_from); nothing to train")
    device = select_device(args.device)
    vqvae, _ = load_matching_checkpoint(args.tokenizer, "vqvae", p.tokenizer.model, "tokenizer.model", device)
    fp = fingerprint(p, [f"rows.{args.row}", "tokenizer.model"], [args.tokenizer, args.train_tokens, args.val_tokens])
    state_dir = prepare_state_dir(args.state_dir, fp, log)
    torch.manual_seed(row.train.seed)                      # initial weights depend on the seed only
    model = build_row_model(row, p)
    n_params = sum(q.numel() for q in model.parameters())
    log.info("%s (%s): %.3fM parameters, width %d, depth %d", args.row, row.kind, n_params / 1e6,
             model.cfg.embed_dim, model.cfg.depth)
    with progress_bar(f"train {args.row}") as update:
        metrics = train_var(model, vqvae, args.train_tokens, args.val_tokens, row.train, out_dir=state_dir,
                            device=device, log=log.info, progress=lambda s, n, info: update(s, n, info))
    metrics = {"row": args.row, "kind": row.kind, "num_params": n_params, **metrics}
    copy_atomic(state_dir / "model.pt", args.model)
    atomic_write_json(args.metrics, metrics)
    save_curves(args.curves, metrics["history"], "step", VAR_CURVES, f"train {args.row}")
    return {"row": args.row, "kind": row.kind, "params_M": n_params / 1e6, "steps": metrics.get("step"),
            "val_loss": metrics.get("val_loss")}


def cli(argv=None):
    ap = stage_parser("train_row", __doc__)
    ap.add_argument("--row", default="", help="key of `rows` in params (the DAG's {row}); none: params "
                                              "ablation.row (the experiment jobs)")
    ap.add_argument("--tokenizer", required=True, help="input: the row's tokenizer checkpoint")
    ap.add_argument("--train-tokens", required=True, help="input: train token file")
    ap.add_argument("--val-tokens", required=True, help="input: val token file")
    for flag in ("tokenizer", "train-tokens", "val-tokens"):     # the experiment jobs: used when the row is AR
        ap.add_argument(f"--ar-{flag}", default="", help=f"input (experiments): the AR baseline's {flag}")
    ap.add_argument("--model", required=True, help="output: model checkpoint")
    ap.add_argument("--metrics", required=True, help="output: metrics JSON")
    ap.add_argument("--curves", required=True, help="output: PNG of the training curves (DVC plots)")
    ap.add_argument("--state-dir", required=True, help="resume state (not a DAG output)")
    run_stage("train_row", main, ap, argv)


if __name__ == "__main__":
    cli()
