"""GPU benchmark of scoring: 50k 256px uint8 samples vs a 10k reference (FID, sFID, IS, precision/recall).

Random-weight Inception with the official layout (speed does not depend on values), random uint8 images held in
host memory, features extracted in large batches and kept on the GPU, precision/recall on the GPU in blocks.
Needs only torch, numpy, scipy and torch_fidelity. Each stage is timed separately (CUDA-synchronised); the table
and JSON report the median of >= 3 runs after one warm-up run.

    python benchmarks/bench_score.py                       # defaults: cuda, 50k vs 10k, 256 px, 3 runs
    python benchmarks/bench_score.py --device cpu --num-samples 16 --num-reference 16 --size 32 --runs 1 \\
        --fid-backend torch --out /tmp                     # smoke test
"""
from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy
import torch
import torch_fidelity

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing the package
from eval.features import extract_features, load_extractor  # noqa: E402
from eval.inception import write_random_inception_weights  # noqa: E402
from eval.metrics import (feature_stats, frechet_distance, frechet_distance_torch, inception_score,  # noqa: E402
                          precision_recall)
from var.io import atomic_write_json  # noqa: E402


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


def gpu_info(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"gpu": "none (CPU)", "driver": None}
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        driver = "unknown"
    return {"gpu": torch.cuda.get_device_name(device), "driver": driver, "cuda": torch.version.cuda}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--num-samples", type=int, default=50000)
    p.add_argument("--num-reference", type=int, default=10000)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--pr-block-size", type=int, default=10000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--fid-backend", choices=["scipy", "torch", "both"], default="both")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
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
    median = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}

    print(f"\nscoring {args.num_samples} samples vs {args.num_reference} reference, {args.size}px, {device}")
    print(f"{'stage':32s} {'median s':>10s}  {'images/s':>10s}")
    for k, v in median.items():
        n = {"extract reference": args.num_reference, "extract samples": args.num_samples}.get(k)
        print(f"{k:32s} {v:10.2f}  {(f'{n / v:10.0f}' if n else ''):>10s}")
    result = {
        **gpu_info(device), "torch": torch.__version__, "torch_fidelity": torch_fidelity.__version__,
        "numpy": np.__version__, "scipy": scipy.__version__, "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {k: v for k, v in vars(args).items() if k != "out"} | {"weights": "random, official layout",
                                                                          "tf32": False},
        "median_seconds": median, "runs_seconds": runs,
    }
    out = Path(args.out) / f"score_{datetime.date.today().isoformat()}.json"
    atomic_write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
