"""Stage `tokenizer`: train the multi-scale VQVAE on the train split; report PSNR and codebook usage per scale.

Resumable like `train_var`: the trainer's state lives in --state-dir, outside the DAG's outputs.
"""
from __future__ import annotations

import torch

from pipeline.common import (copy_atomic, fingerprint, load_stage_params, prepare_state_dir, progress_bar,
                             run_stage, select_device, split_images, stage_parser)
from var.io import atomic_write_json
from var.tokenizer_train import train_tokenizer
from var.vqvae import VQVAE


def main(args, log) -> dict:
    p = load_stage_params(args)
    device = select_device(args.device)
    fp = fingerprint(p, ["data", "tokenizer"], [args.train, args.val])
    state_dir = prepare_state_dir(args.state_dir, fp, log)
    train_x, _ = split_images(args.train, p.data.image_size)
    val_x, _ = split_images(args.val, p.data.image_size)
    torch.manual_seed(p.tokenizer.train.seed)              # initial weights depend on the seed only
    vqvae = VQVAE(p.tokenizer.model)
    n_params = sum(q.numel() for q in vqvae.parameters())
    with progress_bar("train tokenizer") as update:
        metrics = train_tokenizer(vqvae, train_x, val_x, p.tokenizer.train, out_dir=state_dir, device=device,
                                  log=log.info, progress=lambda s, n, info: update(s, n, info))
    metrics = {"num_params": n_params, **metrics}
    copy_atomic(state_dir / "model.pt", args.model)
    atomic_write_json(args.metrics, metrics)
    return {"params_M": n_params / 1e6, **{k: metrics[k] for k in ("val_psnr", "val_usage_mean", "step") if k in metrics}}


def cli(argv=None):
    ap = stage_parser("tokenizer", __doc__)
    ap.add_argument("--train", required=True, help="input: train split")
    ap.add_argument("--val", required=True, help="input: val split")
    ap.add_argument("--model", required=True, help="output: tokenizer checkpoint")
    ap.add_argument("--metrics", required=True, help="output: metrics JSON")
    ap.add_argument("--state-dir", required=True, help="resume state (not a DAG output)")
    run_stage("tokenizer", main, ap, argv)


if __name__ == "__main__":
    cli()
