"""Stage `train_var`: train one VAR model (`models.<name>` of params) on the precomputed tokens; resumable.

The trainer keeps `state.pt` in --state-dir (outside the DAG's outputs, so a killed or failed job resumes instead
of restarting); a rerun of the same command continues from it. The final checkpoint and metrics are then copied
atomically to the declared outputs.

Under `torchrun --nproc_per_node N` (the DAG launches it when the stage asks for more than one GPU) every rank
trains its share of the global batch (DDP, var/train.py); rank 0 writes the state and the outputs. A model with
`pretrained: <path>` in params is not trained: the plan imports the released checkpoint (stage import_var) instead.
"""
from __future__ import annotations

from pathlib import Path

import torch

from eval.curves import VAR_CURVES, save_curves
from pipeline.common import (
    copy_atomic,
    fingerprint,
    load_stage_params,
    prepare_state_dir,
    progress_bar,
    run_stage,
    stage_parser,
)
from var.checkpoint import load_matching_checkpoint, save_checkpoint
from var.distributed import barrier, init_from_env
from var.io import atomic_write_json, output_group
from var.train import train_var
from var.transformer import VAR


def main(args, log) -> dict:
    p = load_stage_params(args)
    spec = p.model(args.model_name)
    world, device = init_from_env(args.device)   # under torchrun: this rank's GPU; else --device
    if spec.pretrained:
        raise ValueError(f"models.{args.model_name}.pretrained is set: the plan imports those weights (import_var), "
                         f"it does not train them")
    vqvae, _ = load_matching_checkpoint(args.tokenizer, "vqvae", p.tokenizer.model, "tokenizer.model", device)
    fp = fingerprint(p, [f"models.{args.model_name}", "tokenizer.model"],
                     [args.tokenizer, args.train_tokens, args.val_tokens])
    state_dir = Path(args.state_dir)
    if world.is_main:                                      # rank 0 checks (and may discard) the resume state
        prepare_state_dir(state_dir, fp, log)
    barrier()
    torch.manual_seed(spec.train.seed)                     # initial weights depend on the seed only
    model = VAR(spec.model)
    if spec.train.init_adaln_gamma >= 0:                   # the recipe's AdaLN gamma init (reference `alng`)
        torch.manual_seed(spec.train.seed)
        model.init_weights(init_adaln_gamma=spec.train.init_adaln_gamma)
    n_params = sum(q.numel() for q in model.parameters())
    log.info("%s: %.2fM parameters, width %d, depth %d", args.model_name, n_params / 1e6, spec.model.embed_dim,
             spec.model.depth)
    with output_group() as outputs:        # the initial weights, the model, metrics and curves appear together
        if world.is_main:   # the untrained baseline: "the model learns" is measured against these weights
            save_checkpoint(outputs.pending(args.init), model, kind="var", step=0,
                            extra={"metrics": {"model": args.model_name, "untrained": True}})
        with progress_bar(f"train {args.model_name}") as update:
            metrics = train_var(model, vqvae, args.train_tokens, args.val_tokens, spec.train, out_dir=state_dir,
                                device=device, log=log.info, progress=lambda s, n, info: update(s, n, info))
        metrics = {"model": args.model_name, "num_params": n_params, **metrics}
        if not world.is_main:
            return {}
        copy_atomic(state_dir / "model.pt", outputs.pending(args.model))
        atomic_write_json(outputs.pending(args.metrics), metrics)
        save_curves(outputs.pending(args.curves), metrics["history"], "step", VAR_CURVES, f"train {args.model_name}")
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
    ap.add_argument("--curves", required=True, help="output: PNG of the training curves (DVC plots)")
    ap.add_argument("--init", required=True, help="output: the initial (untrained) weights, the learning baseline")
    ap.add_argument("--state-dir", required=True, help="resume state (not a DAG output)")
    run_stage("train_var", main, ap, argv)


if __name__ == "__main__":
    cli()
