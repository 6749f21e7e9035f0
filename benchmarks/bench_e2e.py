"""End to end: 50k VAR-d16 samples (cfg 1.5, top-k 900, top-p 0.96, 256 px) generated and scored (FID, sFID, IS,
precision/recall against a 10k reference batch), as the pipeline's `sample` and `score` stages compute them.

Generation: `var.sharded_sampling.generate_blocks` with the bf16 GenerationEngine (the `sample` stage with
`sample.fast: true, precision: bf16, compile: true`): class-major labels (1000 classes x 50), one seeded sampler
call per block, uint8 images in host memory. Scoring: `eval.score.score` with the Inception extractor
(`inception-v3-compat`, random weights in the official layout: speed does not depend on values), reference
features extracted in the same call (no statistics cache), FID/sFID by the on-device eigh backend. The compile /
CUDA-graph warm-up (one block before timing) is reported separately; the headline is generation + scoring, one
timed run (a multi-minute measurement; bench_generate.py gives medians of the per-batch throughput). Random
weights throughout, reference images random uint8.

    python -m benchmarks.bench_e2e [--num 50000] [--block 250] [--write-npz /tmp/samples.npz]
    python -m benchmarks.bench_e2e --device cpu --no-compile --num 4 --classes 2 --block 2 --num-reference 4 \
        --score-batch 4 --out /tmp      # smoke run of the script (fp32 on CPU), not a measurement

Writes benchmarks/results/e2e.json (or under --out).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import print_table, sync, write_result
from var.config import VAR_PRESETS, VQVAE_PRESETS
from var.engine import GenerationEngine
from var.sharded_sampling import atomic_savez_reproducible, generate_blocks
from var.transformer import VAR
from var.vqvae import VQVAE

SAMPLING = dict(cfg=1.5, top_k=900, top_p=0.96)


def main():
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_e2e", description=__doc__.split("\n")[0])
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--num", type=int, default=50000)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--block", type=int, default=250, help="images per sampler call (sample.batch_size)")
    ap.add_argument("--num-reference", type=int, default=10000)
    ap.add_argument("--channels-last", action="store_true", help="channels-last decoder")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--score-batch", type=int, default=500)
    ap.add_argument("--write-npz", default="", help="also time writing the sample file here (not in the total)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="", help="result directory (default benchmarks/results)")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    t_setup = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):
        vq = VQVAE(VQVAE_PRESETS["vqvae-ch160v4096z32"]).eval()
        var = VAR(VAR_PRESETS[f"var-d{args.depth}"]).eval()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32    # bf16 weights need CUDA
    eng = GenerationEngine(var, vq, dtype=dtype, compile=not args.no_compile, channels_last=args.channels_last)
    gn_stats = any(getattr(m, "channel_stats", False) for m in eng.vq_lp.modules())
    labels_N = np.repeat(np.arange(args.classes, dtype=np.int64), args.num // args.classes)
    setup_s = time.perf_counter() - t_setup
    t0 = time.perf_counter()
    generate_blocks(var, vq, labels_N[:args.block], block_size=args.block, seed=123, engine=eng, **SAMPLING)
    sync()
    warmup_s = time.perf_counter() - t0
    print(f"warm-up (compile + CUDA graphs, one block of {args.block}): {warmup_s:.1f} s", flush=True)

    images = np.empty((len(labels_N), 256, 256, 3), np.uint8)
    t0 = time.perf_counter()
    _, sampler_s = generate_blocks(var, vq, labels_N, block_size=args.block, seed=0, engine=eng, into=images,
                                   **SAMPLING)
    gen_s = time.perf_counter() - t0
    print(f"generated {len(images)} images in {gen_s:.1f} s ({len(images) / gen_s:.0f} img/s)", flush=True)
    del eng, var
    torch.cuda.empty_cache() if device.type == "cuda" else None

    from eval.features import load_extractor
    from eval.inception import write_random_inception_weights
    from eval.score import score
    rng = np.random.default_rng(1)
    reference = rng.integers(0, 256, (args.num_reference, 256, 256, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp) / "random-inception.pth"
        sha = write_random_inception_weights(w, seed=0)
        ex = load_extractor("inception-v3-compat", device=device, weights_path=w, expected_sha256=sha)
    n_warm = max(args.score_batch, 8)      # cuDNN autotuning and lazy init, outside the timing
    score(images[:n_warm], reference[:n_warm], extractor=ex, batch_size=args.score_batch, fid_backend="torch",
          is_splits=1)
    sync()
    t0 = time.perf_counter()
    metrics = score(images, reference, extractor=ex, batch_size=args.score_batch, fid_backend="torch",
                    is_splits=min(10, len(images)))   # 10 splits of 5000, the standard evaluator's at 50k
    sync()
    score_s = time.perf_counter() - t0
    print(f"scored in {score_s:.1f} s: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()
                                                     if isinstance(v, float)), flush=True)
    rows = [{"what": f"generate {len(images)} (engine {str(dtype)[6:]})", "seconds": round(gen_s, 1),
             "images_per_s": round(len(images) / gen_s, 1)},
            {"what": "score (FID, sFID, IS, P/R vs 10k)", "seconds": round(score_s, 1), "images_per_s": ""},
            {"what": "total (generate + score)", "seconds": round(gen_s + score_s, 1), "images_per_s": ""},
            {"what": "one-time warm-up (not in total)", "seconds": round(warmup_s, 1), "images_per_s": ""}]
    settings = {"model": f"var-d{args.depth}", "num_samples": len(images), "num_reference": args.num_reference,
                "block_size": args.block, **SAMPLING, "dtype": str(dtype)[6:], "compile": not args.no_compile,
                "channels_last_decoder": args.channels_last, "gn_channel_stats": gn_stats,
                "cudnn_benchmark": device.type == "cuda",
                "score_batch": args.score_batch, "fid_backend": "torch", "weights": "random",
                "sampler_seconds": round(sampler_s, 2), "setup_seconds": round(setup_s, 1), "runs": 1}
    metric_checks = {k: v for k, v in metrics.items() if isinstance(v, (float, int, str))}
    # written before the optional (slow) file write below
    write_result("e2e", settings, rows, metric_checks, out_dir=args.out or None)
    if args.write_npz:
        t0 = time.perf_counter()
        atomic_savez_reproducible(args.write_npz, images=images, labels=labels_N[:len(images)])
        rows.append({"what": f"write samples.npz ({images.nbytes / 1e9:.1f} GB, not in total)",
                     "seconds": round(time.perf_counter() - t0, 1), "images_per_s": ""})
        Path(args.write_npz).unlink(missing_ok=True)
        write_result("e2e", settings, rows, metric_checks, out_dir=args.out or None)
    print_table(rows, ["what", "seconds", "images_per_s"])


if __name__ == "__main__":
    main()
