"""GPU benchmark of scoring: 50k 256px uint8 samples vs a 10k reference (FID, sFID, IS, precision/recall).

Random-weight Inception with the official layout (speed does not depend on values), random uint8 images held in
host memory, features extracted in large batches and kept on the GPU, precision/recall on the GPU in blocks.
Needs only torch, numpy, scipy and torch_fidelity. Each stage is timed separately (CUDA-synchronised); the table
and JSON report the median of >= 3 runs after one warm-up run.

    python -m benchmarks.bench_score                       # defaults: cuda, 50k vs 10k, 256 px, 3 runs
    python -m benchmarks.bench_score --device cpu --num-samples 16 --num-reference 16 --size 32 --runs 1 \
        --fid-backend torch --out /tmp                     # smoke test

Writes benchmarks/results/score.json (or under --out): one row per stage with its median and every run's time.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy
import torch
import torch_fidelity

from benchmarks.common import print_table, write_result
from eval.features import extract_features, load_extractor
from eval.inception import write_random_inception_weights
from eval.metrics import feature_stats, frechet_distance, frechet_distance_torch, inception_score, precision_recall


def random_images(n: int, size: int, seed: int) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=gen).numpy()


def _timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0


def one_run(samples, reference, ex, args) -> dict[str, float]:
    dev, t = ex.device, {}
    ref, t["extract reference"] = _timed(lambda: extract_features(reference, ex, batch_size=args.batch_size), dev)
    gen, t["extract samples"] = _timed(lambda: extract_features(samples, ex, batch_size=args.batch_size), dev)
    stats, t["mean/cov (4 sets)"] = _timed(lambda: [feature_stats(f[k]) for f in (gen, ref)
                                                      for k in ("pool", "spatial")], dev)
    (g_pool, g_sp, r_pool, r_sp) = stats
    if args.fid_backend in ("scipy", "both"):
        _, t["FID+sFID scipy sqrtm (CPU)"] = _timed(
            lambda: (frechet_distance(*g_pool, *r_pool), frechet_distance(*g_sp, *r_sp)), dev)
    if args.fid_backend in ("torch", "both"):
        _, t["FID+sFID torch eigh (device)"] = _timed(
            lambda: (frechet_distance_torch(*g_pool, *r_pool, device=dev),
                     frechet_distance_torch(*g_sp, *r_sp, device=dev)), dev)
    _, t["IS"] = _timed(lambda: inception_score(gen["logits"], splits=min(10, len(gen["logits"]))), dev)
    _, t["precision/recall k=3"] = _timed(lambda: precision_recall(real=ref["pool"], fake=gen["pool"], k=3,
                                                                   block_size=args.pr_block_size), dev)
    t["total"] = sum(t.values())
    return t


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_score", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--num-samples", type=int, default=50000)
    p.add_argument("--num-reference", type=int, default=10000)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--pr-block-size", type=int, default=10000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--fid-backend", choices=["scipy", "torch", "both"], default="both")
    p.add_argument("--out", default="", help="result directory (default benchmarks/results)")
    args = p.parse_args()
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "random-inception.pth"
        sha = write_random_inception_weights(weights, seed=0)
        ex = load_extractor("inception-v3-compat", device=device, weights_path=weights, expected_sha256=sha)
    samples = random_images(args.num_samples, args.size, seed=1)
    reference = random_images(args.num_reference, args.size, seed=2)
    warm = min(args.num_samples, args.num_reference, 2 * args.batch_size)
    one_run(samples[:warm], reference[:warm], ex, args)  # cuDNN autotuning, allocator, lazy init
    runs = [one_run(samples, reference, ex, args) for _ in range(args.runs)]

    rows = []
    for k in runs[0]:
        n = {"extract reference": args.num_reference, "extract samples": args.num_samples}.get(k)
        med = float(np.median([r[k] for r in runs]))
        rows.append({"stage": k, "median_s": round(med, 4), "images_per_s": round(n / med) if n else "",
                     "times_s": [round(r[k], 4) for r in runs]})
    print(f"\nscoring {args.num_samples} samples vs {args.num_reference} reference, {args.size}px, {device}")
    print_table(rows, ["stage", "median_s", "images_per_s"])
    # tf32 False: extract_features computes in IEEE fp32 (var.precision.fp32_precision)
    settings = {k: v for k, v in vars(args).items() if k != "out"} | {"weights": "random, official layout",
                                                                      "tf32": False, "warmup": 1}
    write_result("score", settings, rows, out_dir=args.out or None,
                 extra_versions={"torch_fidelity": torch_fidelity.__version__, "scipy": scipy.__version__})


if __name__ == "__main__":
    main()
