"""Stage `tokenizer_ablation`: the paper's Sec. 3.2 claim (residual multi-scale quantisation reconstructs better
than independent interpolation of each scale) and the loss ablation (L2 + VQ only vs the full loss (5)), on a
small training budget. Writes results/tokenizer_ablation.{md,json}.

Variants are `<quantizer>-<loss>`: quantizer `residual` (var/quant.py) or `independent` (var/quant_independent.py);
loss `l2vq` (lambda_p = lambda_g = 0) or `full` (+ evalnet perceptual, + PatchGAN hinge loss from
`disc_start_step`). All variants start from the same initial weights and see the same batches; an `untrained`
row evaluates those initial weights. rFID uses the evaluation network (evalnet-rFID, not Inception rFID).
"""
from __future__ import annotations

import dataclasses
import json

import torch

from eval.evalnet import load_evalnet
from eval.features import reconstruction_features
from eval.recon import evaluate_tokenizer, tokenizer_evaluator
from pipeline.common import fingerprint, load_stage_params, prepare_state_dir, run_stage, select_device, stage_parser
from var.data import load_split_images
from var.io import atomic_write_json, atomic_write_text
from var.perceptual import build_perceptual
from var.quant_independent import use_independent_quantizer
from var.tokenizer_train import train_tokenizer
from var.vqvae import VQVAE

COLUMNS = ("variant", "quantizer", "loss", "step", "val_psnr", "val_ssim", "val_rfid_evalnet", "val_usage_mean",
           "train_time_s")


def variant_config(base, ab, loss: str):
    common = dict(batch_size=ab.batch_size, max_steps=ab.max_steps, epochs=1, lr=ab.lr, warmup_steps=ab.warmup_steps,
                  seed=ab.seed, init_from="", ckpt_every_steps=max(1, ab.max_steps // 4),
                  log_every_steps=max(1, ab.max_steps // 4), eval_every_epochs=10 ** 6)
    if loss == "full":
        return dataclasses.replace(base, **common, lambda_p=ab.lambda_p, perceptual="evalnet",
                                   lambda_g=ab.lambda_g, disc_start_step=ab.disc_start_step, disc_ch=ab.disc_ch,
                                   disc_layers=ab.disc_layers)
    return dataclasses.replace(base, **common, lambda_p=0.0, lambda_g=0.0)


def markdown(rows: list[dict], ab, image_size: int) -> str:
    fmt = {"val_psnr": "{:.2f}", "val_ssim": "{:.4f}", "val_rfid_evalnet": "{:.4g}", "val_usage_mean": "{:.1f}",
           "train_time_s": "{:.0f}"}
    head = ["variant", "quantizer", "loss", "steps", "PSNR (dB)", "SSIM", "rFID (evalnet)", "codebook usage %",
            "train s"]
    lines = [f"# Tokenizer ablation ({image_size} px embedded data, {ab.max_steps} steps of batch {ab.batch_size})",
             "",
             "Validation reconstructions. `residual`: the paper's multi-scale residual quantiser; `independent`: each "
             "scale quantises the area-downsampled features on its own and the reconstruction averages all scales "
             "(var/quant_independent.py). `l2vq`: pixel L2 + VQ/commitment only; `full`: + evalnet perceptual "
             f"(lambda_p {ab.lambda_p}) + PatchGAN hinge (lambda_g {ab.lambda_g}, adaptive weight, from step "
             f"{ab.disc_start_step}). rFID uses the evaluation network's features: compare rows with each other, "
             "not with published Inception rFID. Usage: mean over scales of the % of codes used on val.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(fmt[c].format(r[c]) if c in fmt and r.get(c) is not None else str(r.get(c, ""))
                                       for c in COLUMNS) + " |")
    usage = {r["variant"]: r["val_usage_per_scale"] for r in rows}
    lines += ["", "Codebook usage % per scale (coarse to fine):", ""]
    lines += [f"- {k}: " + ", ".join(f"{u:.1f}" for u in v) for k, v in usage.items()]
    return "\n".join(lines) + "\n"


def main(args, log) -> dict:
    p = load_stage_params(args)
    ab = p.tokenizer_ablation
    device = select_device(args.device)
    fp = fingerprint(p, ["data", "tokenizer", "tokenizer_ablation"], [args.train, args.val, args.evalnet])
    state_root = prepare_state_dir(args.state_dir, fp, log)
    train_x, _ = load_split_images(args.train, p.data.image_size)
    val_x, _ = load_split_images(args.val, p.data.image_size)
    _, features = reconstruction_features("evalnet", evalnet_path=args.evalnet, device=device,
                                          batch_size=p.score.batch_size)
    real_feats = features(val_x)
    perceptual = build_perceptual("evalnet", evalnet=load_evalnet(args.evalnet)).to(device)
    torch.manual_seed(ab.seed)
    init_state = VQVAE(p.tokenizer.model).state_dict()

    def fresh(quantizer: str) -> VQVAE:
        vq = VQVAE(p.tokenizer.model)
        vq.load_state_dict(init_state)
        if quantizer == "independent":
            use_independent_quantizer(vq)
        return vq.to(device)

    rows = []
    m = evaluate_tokenizer(fresh("residual"), val_x, ab.batch_size, device, features, real_feats)
    rows.append({"variant": "untrained", "quantizer": "residual", "loss": "-", "step": 0, "train_time_s": 0.0, **m})
    for name in ab.variants:
        quantizer, loss = name.split("-")
        vq = fresh(quantizer)
        cfg = variant_config(p.tokenizer.train, ab, loss)
        log.info("variant %s: %s", name, cfg)
        m = train_tokenizer(vq, train_x, cfg, out_dir=state_root / name, device=device, log=log.info,
                            perceptual=perceptual if loss == "full" else None,
                            evaluate=tokenizer_evaluator(val_x, cfg.eval_batch_size or cfg.batch_size, device,
                                                         features))
        rows.append({"variant": name, "quantizer": quantizer, "loss": loss, **{k: v for k, v in m.items()
                                                                               if k != "history"}})
    atomic_write_text(args.md, markdown(rows, ab, p.data.image_size))
    atomic_write_json(args.json, {"config": dataclasses.asdict(ab), "rows": rows})
    keep = ("val_psnr", "val_ssim", "val_rfid_evalnet", "val_usage_mean")
    atomic_write_json(args.summary, {r["variant"]: {k.removeprefix("val_"): r[k] for k in keep if k in r}
                                     for r in rows})
    log.info("\n%s", json.dumps([{c: r.get(c) for c in COLUMNS} for r in rows], indent=1))
    return {r["variant"] + "_psnr": r["val_psnr"] for r in rows}


def cli(argv=None):
    ap = stage_parser("tokenizer_ablation", __doc__)
    ap.add_argument("--train", required=True, help="input: train split")
    ap.add_argument("--val", required=True, help="input: val split")
    ap.add_argument("--evalnet", required=True, help="input: evaluation network (rFID, perceptual loss)")
    ap.add_argument("--md", required=True, help="output: markdown table")
    ap.add_argument("--summary", required=True, help="output: DVC metrics (PSNR, SSIM, rFID, usage per variant)")
    ap.add_argument("--json", required=True, help="output: table rows + config JSON (metrics)")
    ap.add_argument("--state-dir", required=True, help="resume state of the variants (not a DAG output)")
    run_stage("tokenizer_ablation", main, ap, argv)


if __name__ == "__main__":
    cli()
