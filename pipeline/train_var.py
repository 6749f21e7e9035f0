"""Stage `train_var`: train one VAR model (`models.<name>` of params) on the precomputed tokens; resumable.

The trainer keeps `state.pt` in --state-dir (outside the DAG's outputs, so a killed or failed job resumes instead
of restarting); a rerun of the same command continues from it. The final checkpoint and metrics are then copied
atomically to the declared outputs.

Under `torchrun --nproc_per_node N` (the DAG launches it when the stage asks for more than one GPU) every rank
trains its share of the global batch (DDP, var/train.py); rank 0 writes the state and the outputs. A model with
`pretrained: <path>` in params is not trained: the released checkpoint is imported (strictly) instead.
"""
from __future__ import annotations

from pathlib import Path

import torch

from pipeline.common import (copy_atomic, fingerprint, load_checkpoint_for, load_stage_params, prepare_state_dir,
                             progress_bar, run_stage, stage_parser)
from var.checkpoint import import_released, save_checkpoint
from var.distributed import barrier, init_from_env
from var.io import atomic_write_json
from var.train import train_var
from var.transformer import VAR


def main(args, log) -> dict:
    p = load_stage_params(args)
    spec = p.model(args.model_name)
    world, device = init_from_env(args.device)   # under torchrun: this rank's GPU; else --device
    if spec.pretrained:
        return import_pretrained(args, spec, log)
    vqvae, _ = load_checkpoint_for(args.tokenizer, "vqvae", p.tokenizer.model, "tokenizer.model", device)
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
    if world.is_main:   # the untrained baseline: "the model learns" is measured against these weights
        save_checkpoint(args.init, model, kind="var", step=0, extra={"metrics": {"model": args.model_name,
                                                                                 "untrained": True}})
    with progress_bar(f"train {args.model_name}") as update:
        metrics = train_var(model, vqvae, args.train_tokens, args.val_tokens, spec.train, out_dir=state_dir,
                            device=device, log=log.info, progress=lambda s, n, info: update(s, n, info))
    metrics = {"model": args.model_name, "num_params": n_params, **metrics}
    if not world.is_main:
        return {}
    copy_atomic(state_dir / "model.pt", args.model)
    atomic_write_json(args.metrics, metrics)
    return {"model": args.model_name, "params_M": n_params / 1e6, "steps": metrics.get("step"),
            "val_loss": metrics.get("val_loss"), "val_err_last": metrics.get("val_err_last")}


def import_pretrained(args, spec, log) -> dict:
    """Table 1 from released weights: load the official state dict strictly into the configured architecture and
    write it as this stage's checkpoint (rank 0), with metrics that say where it came from."""
    from var.distributed import current_world
    model = VAR(spec.model)
    digest = import_released(model, spec.pretrained, spec.pretrained_sha256, key=f"models.{args.model_name}.pretrained")
    n_params = sum(q.numel() for q in model.parameters())
    log.info("%s: imported %s (%.2fM parameters), not trained", args.model_name, spec.pretrained, n_params / 1e6)
    if current_world().is_main:
        metrics = {"model": args.model_name, "num_params": n_params, "pretrained": spec.pretrained,
                   "pretrained_sha256": digest, "step": 0}
        save_checkpoint(args.model, model, kind="var", step=0, extra={"metrics": metrics})
        save_checkpoint(args.init, VAR(spec.model), kind="var", step=0, extra={"metrics": {"untrained": True}})
        atomic_write_json(args.metrics, metrics)
    barrier()
    return {"model": args.model_name, "params_M": n_params / 1e6, "pretrained": spec.pretrained,
            "pretrained_sha256": digest}


def cli(argv=None):
    ap = stage_parser("train_var", __doc__)
    ap.add_argument("--model-name", required=True, help="key of `models` in params (the DAG's {model})")
    ap.add_argument("--tokenizer", required=True, help="input: tokenizer checkpoint")
    ap.add_argument("--train-tokens", required=True, help="input: train token file")
    ap.add_argument("--val-tokens", required=True, help="input: val token file")
    ap.add_argument("--model", required=True, help="output: model checkpoint")
    ap.add_argument("--metrics", required=True, help="output: metrics JSON")
    ap.add_argument("--init", required=True, help="output: the initial (untrained) weights, the learning baseline")
    ap.add_argument("--state-dir", required=True, help="resume state (not a DAG output)")
    run_stage("train_var", main, ap, argv)


if __name__ == "__main__":
    cli()
