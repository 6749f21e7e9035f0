"""Stage `train_var`: train one VAR model (`models.<name>` of params) on the precomputed tokens; resumable.

The trainer keeps `state.pt` in --state-dir (outside the DAG's outputs, so a killed or failed job resumes instead
of restarting); a rerun of the same command continues from it. The final checkpoint and metrics are then copied
atomically to the declared outputs.
"""
from __future__ import annotations

import torch

from pipeline.common import (copy_atomic, fingerprint, load_stage_params, prepare_state_dir, progress_bar,
                             run_stage, select_device, stage_parser)
from var.checkpoint import load_model_checkpoint
from var.io import atomic_write_json
from var.train import train_var
from var.transformer import VAR


def main(args, log) -> dict:
    p = load_stage_params(args)
    spec = p.model(args.model_name)
    device = select_device(args.device)
    vqvae, _ = load_model_checkpoint(args.tokenizer, kind="vqvae", map_location=device)
    fp = fingerprint(p, [f"models.{args.model_name}", "tokenizer.model"],
                     [args.tokenizer, args.train_tokens, args.val_tokens])
    state_dir = prepare_state_dir(args.state_dir, fp, log)
    torch.manual_seed(spec.train.seed)                     # initial weights depend on the seed only
    model = VAR(spec.model)
    n_params = sum(q.numel() for q in model.parameters())
    log.info("%s: %.2fM parameters, width %d, depth %d", args.model_name, n_params / 1e6, spec.model.embed_dim,
             spec.model.depth)
    with progress_bar(f"train {args.model_name}") as update:
        metrics = train_var(model, vqvae, args.train_tokens, args.val_tokens, spec.train, out_dir=state_dir,
                            device=device, log=log.info, progress=lambda s, n, info: update(s, n, info))
    metrics = {"model": args.model_name, "num_params": n_params, **metrics}
    copy_atomic(state_dir / "model.pt", args.model)
    atomic_write_json(args.metrics, metrics)
    return {"model": args.model_name, "params_M": n_params / 1e6, "steps": metrics.get("step"),
            "val_loss": metrics.get("val_loss"), "val_err_last": metrics.get("val_err_last")}


def cli(argv=None):
    ap = stage_parser("train_var", __doc__)
    ap.add_argument("--model-name", required=True, help="key of `models` in params (the DAG's {model})")
    ap.add_argument("--tokenizer", required=True, help="input: tokenizer checkpoint")
    ap.add_argument("--train-tokens", required=True, help="input: train token file")
    ap.add_argument("--val-tokens", required=True, help="input: val token file")
    ap.add_argument("--model", required=True, help="output: model checkpoint")
    ap.add_argument("--metrics", required=True, help="output: metrics JSON")
    ap.add_argument("--state-dir", required=True, help="resume state (not a DAG output)")
    run_stage("train_var", main, ap, argv)


if __name__ == "__main__":
    cli()
