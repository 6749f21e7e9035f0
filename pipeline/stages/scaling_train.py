"""Stage `scaling_train`: train the depth sweep of params `scaling` (paper Fig. 5-6) and measure every model at
several points of its run.

For each depth d: VAR with width `scaling.width_per_depth * d` and d heads, trained with the one recipe
`scaling.train` on the precomputed tokens. At each fraction f of `scaling.eval_fractions` of the run, the model is
evaluated on the val tokens (var.train.evaluate: L_mean = mean CE over all tokens, L_last = CE of the last scale,
err = token error rate, last scale and mean over scales) and its training compute so far is counted analytically
(eval/scaling.py). The Fig. 7 rows are also snapshotted at `scaling.fig7_fractions`.

Outputs: the points (JSON) and the Fig. 7 snapshots (one torch file of self-describing checkpoints). Each depth
resumes from runs/<run>/state/scaling/d<depth> after a kill; a finished depth is not retrained.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from eval.scaling import attention_pairs, forward_flops, train_flops
from pipeline.common import (
    fingerprint,
    load_stage_params,
    prepare_state_dir,
    progress_bar,
    run_stage,
    select_device,
    stage_parser,
)
from var.checkpoint import load_model_checkpoint
from var.config import VARConfig, build_config, config_to_dict
from var.io import atomic_torch_save, atomic_write_json, load_torch
from var.token_data import TokenData, as_token_data, evaluate
from var.train import train_var
from var.transformer import VAR

PARAM_KEYS = ("seed", "data.num_classes", "tokenizer.model", "scaling.depths", "scaling.width_per_depth",
              "scaling.train", "scaling.eval_fractions", "scaling.eval_max_images", "scaling.fig7_depths",
              "scaling.fig7_fractions")
# What one depth's run depends on (adding a depth to the sweep does not retrain the others).
DEPTH_KEYS = tuple(k for k in PARAM_KEYS if k not in ("scaling.depths", "scaling.fig7_depths"))


def sweep_config(p, depth: int) -> VARConfig:
    tok = p.tokenizer.model
    return build_config(VARConfig, {"depth": depth, "width_per_depth": p.scaling.width_per_depth,
                                    "num_classes": p.data.num_classes, "vocab_size": tok.vocab_size,
                                    "z_channels": tok.z_channels, "patch_nums": tok.patch_nums},
                        f"scaling (depth {depth})")


def eval_steps(fractions, max_it: int) -> dict[int, float]:
    """Step at which each fraction of the run is reached (at least step 1)."""
    return {max(1, round(f * max_it)): f for f in fractions}


def run_depth(p, depth: int, vqvae, train: TokenData, val: TokenData, state_dir: Path, device, log) -> dict:
    sc = p.scaling
    cfg = sweep_config(p, depth)
    done_path, snap_dir = state_dir / "points.json", state_dir
    prev = json.loads(done_path.read_text()) if done_path.is_file() else {"points": {}, "done": False}
    if prev["done"]:
        log.info("depth %d: finished earlier, %d points", depth, len(prev["points"]))
        return prev
    torch.manual_seed(sc.train.seed)                     # initial weights depend on the seed only
    model = VAR(cfg)
    n_params = sum(q.numel() for q in model.parameters())
    B = sc.train.batch_size
    snap_fracs = set(sc.fig7_fractions) if depth in sc.rows_fig7 else set()
    log.info("depth %d: width %d, %.3fM parameters, %.4g train FLOP/sequence", depth, cfg.embed_dim,
             n_params / 1e6, 3 * forward_flops(cfg))

    def at_step(step: int, max_it: int, info: dict):
        f = eval_steps(sc.eval_fractions, max_it).get(step)
        if f is None:
            return
        m = evaluate(model, vqvae, val, sc.train.eval_batch_size or B, device)
        prev["points"][str(step)] = {
            "depth": depth, "width": cfg.embed_dim, "N": n_params, "step": step, "fraction": f,
            "sequences": step * B, "tokens": step * B * cfg.seq_len, "C": train_flops(cfg, step * B),
            "L_last": m["val_loss_last"], "L_mean": m["val_loss"], "err_last": m["val_err_last"],
            "err_mean": m["val_err_mean_scales"], "train_loss": info["loss"]}
        if f in snap_fracs:
            atomic_torch_save(snap_dir / f"snap_{f:g}.pt", {"kind": "var", "config": config_to_dict(cfg),
                                                          "model": {k: v.detach().cpu().clone() for k, v in
                                                                    model.state_dict().items()},
                                                          "step": step, "fraction": f})
        atomic_write_json(done_path, prev)
        log.info("depth %d step %d (%.0f%%): L_mean %.4f L_last %.4f err_last %.4f", depth, step, 100 * f,
                 m["val_loss"], m["val_loss_last"], m["val_err_last"])

    with progress_bar(f"scaling d{depth}") as update:
        def progress(s, n, info):
            update(s, n, info)
            at_step(s, n, info)
        train_var(model, vqvae, train, None, sc.train, out_dir=state_dir, device=device, log=log.info,
                  progress=progress)
    prev["done"] = True
    prev["model"] = {"depth": depth, "width": cfg.embed_dim, "heads": cfg.num_heads, "N": n_params,
                     "forward_flops": forward_flops(cfg), "attention_pairs": attention_pairs(cfg.patch_nums),
                     "seq_len": cfg.seq_len}
    atomic_write_json(done_path, prev)
    return prev


def main(args, log) -> dict:
    p = load_stage_params(args)
    sc = p.scaling
    device = select_device(args.device)
    vqvae, _ = load_model_checkpoint(args.tokenizer, kind="vqvae", map_location=device)
    pns = tuple(p.tokenizer.model.patch_nums)
    train = as_token_data(args.train_tokens, pns, "train")
    val = as_token_data(args.val_tokens, pns, "val")
    if sc.eval_max_images:
        val = TokenData(val.idx_NL[:sc.eval_max_images], val.labels_N[:sc.eval_max_images], pns)
    points, models, snapshots = [], [], {}
    for depth in sc.depths:
        fp = fingerprint(p, DEPTH_KEYS, [args.tokenizer, args.train_tokens, args.val_tokens])
        state_dir = prepare_state_dir(Path(args.state_dir) / f"d{depth}",
                                      f"{fp}-d{depth}-fig7{int(depth in sc.rows_fig7)}", log)
        res = run_depth(p, depth, vqvae, train, val, state_dir, device, log)
        points += sorted(res["points"].values(), key=lambda q: q["step"])
        models.append(res["model"])
        if depth in sc.rows_fig7:
            for f in sc.fig7_fractions:
                snapshots[f"d{depth}@{f:g}"] = load_torch(state_dir / f"snap_{f:g}.pt")
    atomic_write_json(args.points, {"points": points, "models": models, "val_sequences": val.num,
                                    "train_sequences": train.num, "recipe": config_to_dict(sc.train)})
    atomic_torch_save(args.snapshots, {"format": "var-scaling-snapshots-v1", "snapshots": snapshots})
    final = {q["depth"]: q for q in points if q["fraction"] == 1.0}
    return {"models": len(models), "points": len(points),
            **{f"L_mean[d{d}]": q["L_mean"] for d, q in sorted(final.items())}}


def cli(argv=None):
    ap = stage_parser("scaling_train", __doc__)
    ap.add_argument("--tokenizer", required=True, help="input: tokenizer checkpoint")
    ap.add_argument("--train-tokens", required=True, help="input: train token file")
    ap.add_argument("--val-tokens", required=True, help="input: val token file")
    ap.add_argument("--points", required=True, help="output: sweep points JSON")
    ap.add_argument("--snapshots", required=True, help="output: Fig. 7 snapshots (torch file)")
    ap.add_argument("--state-dir", required=True, help="resume state (not a DAG output)")
    run_stage("scaling_train", main, ap, argv)


if __name__ == "__main__":
    cli()
