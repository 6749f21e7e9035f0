"""Stage `tokenizer`: train the multi-scale VQVAE on the train split; after each epoch report validation PSNR,
SSIM, rFID (evaluation network, or Inception when `score.extractor` is inception) and codebook usage per scale,
as metrics JSON and a per-epoch CSV (DVC plots).

Resumable like `train_var`: the trainer's state lives in --state-dir, outside the DAG's outputs. Under
`torchrun --nproc_per_node N` (the DAG launches it when the stage asks for more than one GPU) every rank trains its
chunks of the global batch (var/tokenizer_train.py); rank 0 evaluates and writes the state and the outputs.
"""
from __future__ import annotations

from pathlib import Path

import torch

from eval.curves import TOKENIZER_CURVES, save_curves
from eval.features import reconstruction_features
from eval.recon import tokenizer_evaluator
from pipeline.common import (
    copy_atomic,
    fingerprint,
    load_stage_params,
    prepare_state_dir,
    progress_bar,
    run_stage,
    stage_parser,
)
from var.data import load_split_images
from var.distributed import barrier, init_from_env
from var.io import atomic_write_json, atomic_write_text
from var.tokenizer_train import train_tokenizer
from var.vqvae import VQVAE

HISTORY_COLUMNS = ("epoch", "step", "val_psnr", "val_ssim", "val_rfid", "val_l2", "val_vq_loss", "val_usage_mean")


def history_csv(history: list[dict], rfid_key: str) -> str:
    """Per-epoch validation metrics, one row per evaluation (DVC plots x=epoch); usage per scale as usage_s<k>."""
    K = len(history[0]["val_usage_per_scale"]) if history else 0
    rows = [",".join((*HISTORY_COLUMNS, *(f"usage_s{k}" for k in range(K))))]
    for h in history:
        vals = [h.get(rfid_key if c == "val_rfid" else c, float("nan")) for c in HISTORY_COLUMNS]
        rows.append(",".join(f"{v:.6g}" if isinstance(v, float) else str(v)
                             for v in (*vals, *h["val_usage_per_scale"])))
    return "\n".join(rows) + "\n"


def build_perceptual_loss(cfg, evalnet_path, device):
    """The lambda_P term's network (var/perceptual.py), or None when lambda_p is 0."""
    if cfg.lambda_p <= 0:
        return None
    from var.perceptual import build_perceptual
    net = None
    if cfg.perceptual == "evalnet":
        from eval.evalnet import load_evalnet
        net = load_evalnet(evalnet_path) if evalnet_path else None
    return build_perceptual(cfg.perceptual, cfg.perceptual_weights, net, cfg.perceptual_weights_sha256).to(device)


def main(args, log) -> dict:
    p = load_stage_params(args)
    world, device = init_from_env(args.device)   # under torchrun: this rank's GPU; else --device
    cfg = p.tokenizer.train
    extra = [x for x in (args.evalnet, cfg.init_from, *cfg.perceptual_weights) if x]
    fp = fingerprint(p, ["data", "tokenizer", "score.extractor", "score.inception_weights"],
                     [args.train, args.val, *extra])
    if world.is_main:                                      # rank 0 checks (and may discard) the resume state
        prepare_state_dir(args.state_dir, fp, log)
    barrier()
    state_dir = Path(args.state_dir)
    train_x, _ = load_split_images(args.train, p.data.image_size)
    val_x, _ = load_split_images(args.val, p.data.image_size)
    torch.manual_seed(p.tokenizer.train.seed)              # initial weights depend on the seed only
    vqvae = VQVAE(p.tokenizer.model)
    n_params = sum(q.numel() for q in vqvae.parameters())
    feat_name, features = reconstruction_features(p.score.extractor, inception_weights=p.score.inception_weights,
                                                  evalnet_path=args.evalnet, device=device,
                                                  batch_size=p.score.batch_size,
                                                  inception_sha256=p.score.inception_weights_sha256)
    perceptual = build_perceptual_loss(cfg, args.evalnet, device)
    with progress_bar("train tokenizer") as update:
        metrics = train_tokenizer(vqvae, train_x, cfg, out_dir=state_dir, device=device,
                                  log=log.info, progress=lambda s, n, info: update(s, n, info),
                                  perceptual=perceptual,
                                  evaluate=tokenizer_evaluator(val_x, cfg.eval_batch_size or cfg.batch_size, device,
                                                               features, feat_name or "evalnet"))
    metrics = {"num_params": n_params, "perceptual": cfg.perceptual if cfg.lambda_p > 0 else "none",
               "world_size": world.size, **metrics}
    if getattr(perceptual, "weights_sha256", None):        # LPIPS: the third-party files actually loaded
        metrics["perceptual_weights_sha256"] = list(perceptual.weights_sha256)
    if not world.is_main:
        return {}
    copy_atomic(state_dir / "model.pt", args.model)
    atomic_write_text(args.history, history_csv(metrics["history"], f"val_rfid_{feat_name}"))
    atomic_write_json(args.metrics, metrics)
    write_summary(args, metrics, f"tokenizer{'' if not args.setting else '_' + args.setting}")
    keys = ("val_psnr", "val_ssim", f"val_rfid_{feat_name}", "val_usage_mean", "step")
    return {"params_M": n_params / 1e6, **{k: metrics[k] for k in keys if k in metrics}}


def write_summary(args, metrics: dict, title: str) -> None:
    """The DVC metrics (last validation: PSNR, SSIM, rFID, codebook usage) and the curves figure."""
    keep = ("val_psnr", "val_ssim", "val_rfid_evalnet", "val_rfid_inception", "val_usage_mean", "step")
    atomic_write_json(args.summary, {k.removeprefix("val_"): metrics[k] for k in keep if k in metrics})
    save_curves(args.curves, metrics.get("history", []), "epoch", TOKENIZER_CURVES, title)


def cli(argv=None):
    ap = stage_parser("tokenizer", __doc__)
    ap.add_argument("--train", required=True, help="input: train split")
    ap.add_argument("--val", required=True, help="input: val split")
    ap.add_argument("--model", required=True, help="output: tokenizer checkpoint")
    ap.add_argument("--metrics", required=True, help="output: metrics JSON")
    ap.add_argument("--history", required=True, help="output: per-epoch validation metrics CSV")
    ap.add_argument("--summary", required=True, help="output: DVC metrics (last validation)")
    ap.add_argument("--curves", required=True, help="output: PNG of the validation curves (DVC plots)")
    ap.add_argument("--evalnet", default=None, help="input (optional): evaluation network, for rFID and the "
                                                    "'evalnet' perceptual loss")
    ap.add_argument("--state-dir", required=True, help="resume state (not a DAG output)")
    run_stage("tokenizer", main, ap, argv)


if __name__ == "__main__":
    cli()
