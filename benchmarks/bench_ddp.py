"""DDP scale-out on one node: a short VAR training run and a sharded sampling run, on 1 and on N GPUs.

    python -m benchmarks.bench_ddp                      # 1 GPU, then 2 GPUs (torchrun), table + JSON
    python -m benchmarks.bench_ddp --gpus 1 2 4 --depth 16 --steps 20
    python -m benchmarks.bench_ddp --cpu --tiny --out /tmp   # the same on CPU/gloo with a tiny model (a smoke test)

For each world size it launches itself under `torch.distributed.run -m benchmarks.bench_ddp --worker` from the
repository root, and each worker
1. trains VAR-d<depth> (random init, seed 0) for --steps steps on synthetic tokens at a fixed global batch
   (chunks of --micro per GPU, bf16 autocast), timing the steps after the first --warmup ones;
2. samples --images images from the initial weights (cfg 1.5, top-k 900, top-p 0.96) in blocks of --block,
   spread over the ranks and
   assembled by rank 0 into one .npz (var/sharded_sampling.py), timed.
The parent then compares the runs: per-step losses and final weights (max abs difference; bf16 autocast rounds
differently when the chunks sit on other GPUs, so expect ~1e-3 there, ~1e-6 in fp32) and the sample files'
sha256 (identical whatever the world size), and writes benchmarks/results/ddp.json (`times_s` of a row: its timed
training steps).
Needs only torch, numpy and pyyaml (python 3.12, torch >= 2.11).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import ROOT, print_table, write_result


def build(depth: int, tiny: bool, seed: int = 0):
    import dataclasses

    from var.config import VAR_PRESETS, VQVAE_PRESETS, VARConfig, VQVAEConfig
    from var.transformer import VAR
    from var.vqvae import VQVAE
    torch.manual_seed(seed)
    if tiny:
        vq_cfg = VQVAEConfig(vocab_size=64, z_channels=8, ch=32, ch_mult=(1, 2), num_res_blocks=1, using_sa=False,
                             using_mid_sa=False, patch_nums=(1, 2, 3, 4), share_quant_resi=2)
        var_cfg = VARConfig(depth=2, num_classes=10, vocab_size=64, z_channels=8, patch_nums=(1, 2, 3, 4),
                            embed_dim_override=64, num_heads_override=2)
    else:
        vq_cfg = VQVAE_PRESETS["vqvae-ch160v4096z32"]
        var_cfg = dataclasses.replace(VAR_PRESETS["var-d16"], depth=depth)
    return VAR(var_cfg), VQVAE(vq_cfg)


def synthetic_tokens(n: int, var_cfg, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    L = sum(p * p for p in var_cfg.patch_nums)
    return {"idx_NL": rng.integers(0, var_cfg.vocab_size, (n, L)).astype(np.int16),
            "labels_N": rng.integers(0, var_cfg.num_classes, n).astype(np.int64),
            "patch_nums": np.asarray(var_cfg.patch_nums)}


# ----------------------------------------------------------------------------------------------- worker (torchrun)
def worker(args) -> None:
    from var.config import build_config
    from var.distributed import all_reduce_sum, barrier, init_from_env, shutdown
    from var.sharded_sampling import gather_to_file, generate_blocks
    from var.train import TrainConfig, train_var
    world, device = init_from_env("cpu" if args.cpu else "auto")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    out = Path(args.out_dir)
    var, vqvae = build(args.depth, args.tiny)
    n_params = sum(p.numel() for p in var.parameters())
    cfg = build_config(TrainConfig, {"batch_size": args.batch, "micro_batch_size": args.micro, "max_steps": args.steps,
                                     "base_lr_per_256": 1e-4, "precision": args.precision, "seed": 0,
                                     "ckpt_every_steps": 10 ** 9, "log_every_steps": 10 ** 9}, "train")
    tokens = synthetic_tokens(args.batch * max(args.steps, 1), var.cfg)
    stamps, losses = [], []

    def progress(step, n, info):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())
        losses.append(float(info["loss"]))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    train_var(var, vqvae, tokens, None, cfg, out_dir=out / "train", device=device, log=lambda s: None,
              progress=progress)
    train_wall = time.perf_counter() - t0
    train_peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None

    # sampling: the *initial* weights (same seed, rebuilt), blocks spread over the ranks. Not the trained ones: those
    # differ between world sizes by float summation order (~1e-6), which would make the sample files differ for a
    # reason that has nothing to do with the sampler.
    del var
    var, _ = build(args.depth, args.tiny)
    var.to(device).eval()
    vqvae.to(device).eval()
    labels_N = np.arange(args.images, dtype=np.int64) % var.cfg.num_classes
    labels_N.sort(kind="stable")
    barrier()
    t0 = time.perf_counter()
    blocks, sampler_s = generate_blocks(var, vqvae, labels_N, block_size=args.block, seed=0, world=world, cfg=1.5,
                                        top_k=900 if not args.tiny else 0, top_p=0.96 if not args.tiny else 0.0)
    sampler_s_sum = float(all_reduce_sum([sampler_s], device)[0])
    gather_to_file(blocks, labels_N, out / "samples.npz", args.block, world)
    sample_wall = time.perf_counter() - t0
    sample_peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    if world.is_main:
        w = args.warmup
        timed = stamps[w:]
        step_s = (timed[-1] - timed[0]) / (len(timed) - 1) if len(timed) > 1 else float("nan")
        step_times = [round(b - a, 4) for a, b in zip(timed, timed[1:])]
        res = {"world_size": world.size, "device": str(device), "params_M": round(n_params / 1e6, 1),
               "train_steps": args.steps, "global_batch": args.batch, "micro_batch": args.micro,
               "train_step_s": step_s, "train_step_times_s": step_times, "train_img_per_s": args.batch / step_s,
               "train_wall_s": train_wall,
               "train_peak_gb_rank0": train_peak, "losses": losses,
               "sample_images": args.images, "sample_block": args.block, "sample_wall_s": sample_wall,
               "sample_img_per_s": args.images / sample_wall, "sampler_gpu_s_per_img": sampler_s_sum / args.images,
               "sample_peak_gb_rank0": sample_peak,
               "samples_sha256": hashlib.sha256((out / "samples.npz").read_bytes()).hexdigest()}
        (out / "result.json").write_text(json.dumps(res))
    shutdown()


# ----------------------------------------------------------------------------------------------- parent
def launch(args, n: int, out_dir: Path) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           "-m", "benchmarks.bench_ddp", "--worker", "--out-dir", str(out_dir)] + args.passthrough
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=True)
    if res.returncode != 0:
        sys.stderr.write(res.stdout[-5000:] + res.stderr[-10000:])
        raise SystemExit(f"world size {n} failed (exit {res.returncode})")
    out = json.loads((out_dir / "result.json").read_text())
    out["launch_wall_s"] = time.perf_counter() - t0
    return out


def max_weight_diff(a: Path, b: Path) -> float:
    sa = torch.load(a, map_location="cpu", weights_only=True)["model"]
    sb = torch.load(b, map_location="cpu", weights_only=True)["model"]
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_ddp", description=__doc__.split("\n")[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", default="", help=argparse.SUPPRESS)
    ap.add_argument("--gpus", type=int, nargs="+", default=[1, 2], help="world sizes to run (default: 1 2)")
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3, help="steps left out of the timing")
    ap.add_argument("--batch", type=int, default=128, help="global batch")
    ap.add_argument("--micro", type=int, default=32, help="chunk per GPU pass (gradient accumulation)")
    ap.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--block", type=int, default=32, help="images per sampler call (seed block)")
    ap.add_argument("--cpu", action="store_true", help="gloo on CPU (smoke test)")
    ap.add_argument("--tiny", action="store_true", help="a tiny model instead of VAR-d<depth> (smoke test)")
    ap.add_argument("--keep", action="store_true", help="keep the run directories")
    ap.add_argument("--out", default="", help="result directory (default benchmarks/results)")
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if not args.cpu:
        avail = torch.cuda.device_count()
        if max(args.gpus) > avail:
            raise SystemExit(f"asked for {max(args.gpus)} GPUs, {avail} visible")
    args.passthrough = [f"--depth={args.depth}", f"--steps={args.steps}", f"--warmup={args.warmup}",
                        f"--batch={args.batch}", f"--micro={args.micro}", f"--precision={args.precision}",
                        f"--images={args.images}", f"--block={args.block}"] + \
        (["--cpu"] if args.cpu else []) + (["--tiny"] if args.tiny else [])
    root = Path(tempfile.mkdtemp(prefix="bench_ddp_"))
    runs = {}
    try:
        for n in args.gpus:
            print(f"world size {n} ...", flush=True)
            runs[n] = launch(args, n, root / f"w{n}")
        base = args.gpus[0]
        rows = []
        for n, r in runs.items():
            dl = float(np.max(np.abs(np.array(r["losses"]) - np.array(runs[base]["losses"]))))
            rows.append({"gpus": n, "params_M": r["params_M"], "train img/s": round(r["train_img_per_s"], 1),
                         "train speedup": round(r["train_img_per_s"] / runs[base]["train_img_per_s"], 2),
                         "step s": round(r["train_step_s"], 3),
                         "peak GB": None if r["train_peak_gb_rank0"] is None else round(r["train_peak_gb_rank0"], 1),
                         "max |dloss|": f"{dl:.2e}",
                         "max |dW|": f"{max_weight_diff(root / f'w{base}' / 'train' / 'model.pt', root / f'w{n}' / 'train' / 'model.pt'):.2e}",
                         "sample img/s": round(r["sample_img_per_s"], 1),
                         "sample speedup": round(r["sample_img_per_s"] / runs[base]["sample_img_per_s"], 2),
                         "samples == w1": r["samples_sha256"] == runs[base]["samples_sha256"],
                         "times_s": r["train_step_times_s"]})
        print()
        cols = [c for c in rows[0] if c != "times_s"]
        print_table(rows, cols)
        settings = {k: getattr(args, k) for k in ("gpus", "depth", "steps", "warmup", "batch", "micro", "precision",
                                                  "images", "block", "cpu", "tiny")}
        checks = {"samples_identical_across_world_sizes": all(r["samples == w1"] for r in rows)}
        raw_keys = ("device", "train_wall_s", "losses", "sample_wall_s", "sampler_gpu_s_per_img",
                    "sample_peak_gb_rank0", "samples_sha256", "launch_wall_s")
        write_result("ddp", settings, [{**row, **{k: runs[row["gpus"]][k] for k in raw_keys}} for row in rows],
                     checks, out_dir=args.out or None)
    finally:
        if args.keep:
            print(f"runs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
