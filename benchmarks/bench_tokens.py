"""The `tokens` stage's strict-fp32 encoder (images -> 10-scale token maps, ch 160 at 256 px, TF32 off) on one GPU:
throughput of ways to run the same IEEE-fp32 arithmetic faster, each with its token agreement against the plain
path (the stage's encoder: `vqvae.img_to_idx` under `var.precision.fp32_precision`, batch 64, NCHW, default cuDNN
algorithm choice). The stage may only adopt a path whose tokens are identical (100.00%): the training data must not
depend on how it was encoded. Agreement is measured on a codebook fitted by k-means to the random encoder's
multi-scale residuals (bench_vqvae.fit_codebook_kmeans), where near-ties are realistic.

    python -m benchmarks.bench_tokens [--batch 64] [--runs 3] [--agree-images 512]
    python -m benchmarks.bench_tokens --device cpu --batch 2 --agree-images 4 --fit-images 4 --runs 1 \
        --paths plain --out-name tokens_smoke          # smoke run of the script, not a measurement
"""
from __future__ import annotations

import argparse
import contextlib

import torch

from benchmarks.bench_vqvae import agreement, fit_codebook_kmeans, smooth_images
from benchmarks.common import peak_gb, print_table, reset_peak, time_median, write_result
from var.config import VQVAE_PRESETS
from var.precision import fp32_precision
from var.vqvae import VQVAE


@contextlib.contextmanager
def cudnn_benchmark(on: bool):
    prev = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = prev


# name -> (batch multiplier, channels-last, cuDNN autotuning, torch.compile of the encoder)
PATHS = {"plain": (1, False, False, False),
         "batch x4": (4, False, False, False),
         "channels-last": (1, True, False, False),
         "cudnn autotune": (1, False, True, False),
         "channels-last + cudnn autotune": (1, True, True, False),
         "torch.compile": (1, False, False, True),
         "channels-last + cudnn autotune, batch x4": (4, True, True, False)}


def encoder_for(vq: VQVAE, channels_last: bool, compile_: bool):
    model = vq.to(memory_format=torch.channels_last) if channels_last else vq
    encode = torch.compile(model.img_to_idx) if compile_ else model.img_to_idx

    def run(x):
        return encode(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    return run


def main():
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_tokens", description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--agree-images", type=int, default=512)
    ap.add_argument("--fit-images", type=int, default=512)
    ap.add_argument("--paths", nargs="*", default=list(PATHS), choices=list(PATHS))
    ap.add_argument("--out-name", default="tokens")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    vq = VQVAE(VQVAE_PRESETS["vqvae-ch160v4096z32"]).to(device).eval()
    checks = {}
    with torch.no_grad(), fp32_precision(False):
        checks["kmeans_fit"] = fit_codebook_kmeans(vq, smooth_images(args.fit_images, device, seed=2))
        test = smooth_images(args.agree_images, device, seed=3)
        reference = [torch.cat(t) for t in zip(*(vq.img_to_idx(x) for x in test.split(args.batch)))]
    rows = []
    for name in args.paths:
        mult, cl, bench, comp = PATHS[name]
        B = args.batch * mult
        vq_path = VQVAE(VQVAE_PRESETS["vqvae-ch160v4096z32"]).to(device).eval()
        vq_path.load_state_dict(vq.state_dict())
        run = encoder_for(vq_path, cl, comp)
        x = smooth_images(B, device, seed=1)
        with torch.no_grad(), fp32_precision(False), cudnn_benchmark(bench):
            got = [torch.cat(t) for t in zip(*(run(xb) for xb in test.split(B)))]
            agree = agreement(reference, got)
            reset_peak()
            median, times = time_median(lambda: run(x), runs=args.runs, warmup=2)
        rows.append({"path": name, "batch": B, "images_per_s": round(B / median, 1),
                     "token_agreement": round(agree, 6), "identical": agree == 1.0, "times_s": times,
                     "peak_gb": peak_gb()})
        print(rows[-1], flush=True)
    base = next((r for r in rows if r["path"] == "plain"), None)
    for r in rows:
        r["speedup_vs_plain"] = round(r["images_per_s"] / base["images_per_s"], 3) if base else None
    print_table(rows, ["path", "batch", "images_per_s", "speedup_vs_plain", "token_agreement", "identical",
                       "peak_gb"])
    write_result(args.out_name, {"batch": args.batch, "runs": args.runs, "agree_images": args.agree_images,
                                 "fit_images": args.fit_images, "precision": "IEEE fp32 (TF32 off)",
                                 "device": str(device)}, rows, checks)


if __name__ == "__main__":
    main()
