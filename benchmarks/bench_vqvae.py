"""VQVAE (ch 160, 256 px) decode and encode-to-10-scale-tokens throughput, fp32 plain vs the engine's bf16 / fp16
paths (eager, torch.compile, compile + channels-last), with the token agreement of each fast encoder against the
fp32 path (TF32 off; required >= 99.5%).

Token agreement depends on the codebook's geometry, not only on precision. With the random initialisation
(codes uniform in +-1/V, all near the origin) nearest-code choices are near-ties everywhere, so the agreement is
reported for two codebooks: that random init, and one fitted to the random encoder by k-means on the multi-scale
residuals (Lloyd iterations of the quantiser's own nearest-code assignment: the codebook a VQ objective trains
towards, with codes spread over the features they quantise). Inputs are smooth synthetic images (random
low-frequency fields), not noise. Random encoder/decoder weights (speed does not depend on values). On a trained
tokenizer the agreement is lower still (fp16 92.5%, TF32 94.0% after 756 training steps; docs/performance.md).

    python -m benchmarks.bench_vqvae [--batch 64] [--runs 3] [--paths "fp32 plain" ...]
    python -m benchmarks.bench_vqvae --device cpu --batch 2 --agree-images 2 --fit-images 4 --runs 1 \
        --paths "fp32 plain" --out-name vqvae_smoke      # smoke run of the script, not a measurement
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from benchmarks.common import peak_gb, print_table, reset_peak, time_median, write_result
from var.config import VAR_PRESETS, VQVAE_PRESETS
from var.engine import GenerationEngine
from var.transformer import VAR
from var.vqvae import VQVAE


def smooth_images(B: int, device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator(device=device).manual_seed(seed)
    low = torch.randn(B, 3, 8, 8, device=device, generator=g)
    return F.interpolate(low, size=(256, 256), mode="bicubic").tanh()


@torch.no_grad()
def fit_codebook_kmeans(vq: VQVAE, images: torch.Tensor, iters: int = 10, chunk: int = 64) -> dict:
    """Lloyd's k-means of the shared codebook on the residuals the multi-scale quantiser sees (all scales), in place.
    Each iteration assigns every residual vector with the quantiser's nearest-code rule (walking the scales exactly as
    f_to_idx does) and moves each code to the mean of its vectors; unused codes restart at random residuals."""
    q = vq.quantize
    f = torch.cat([vq.encode_features(x) for x in images.split(chunk)])            # (N, C, 16, 16)
    N, C = f.shape[:2]
    g = torch.Generator(device=f.device).manual_seed(0)
    flat = f.permute(0, 2, 3, 1).reshape(-1, C)
    q.embedding.weight.copy_(flat[torch.randint(0, flat.shape[0], (q.embedding.num_embeddings,), device=f.device,
                                                generator=g)])
    V = q.embedding.num_embeddings
    for _ in range(iters):
        sums, counts, pool = torch.zeros(V, C, device=f.device), torch.zeros(V, device=f.device), []
        f_rest = f.clone()
        for si, pn in enumerate(q.patch_nums):
            z = F.interpolate(f_rest, size=(pn, pn), mode="area") if si != len(q.patch_nums) - 1 else f_rest
            z_NC = z.permute(0, 2, 3, 1).reshape(-1, C)
            idx = q.nearest_code(z_NC)
            sums.index_add_(0, idx, z_NC)
            counts.index_add_(0, idx, torch.ones_like(idx, dtype=torch.float32))
            pool.append(z_NC[torch.randint(0, z_NC.shape[0], (64,), device=f.device, generator=g)])
            f_rest.sub_(q.upsample_phi(q.embed_idx(idx.view(N, pn * pn), pn), si))
        pool = torch.cat(pool)
        new = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None],
                          pool[torch.randint(0, pool.shape[0], (V,), device=f.device, generator=g)])
        q.embedding.weight.copy_(new)
    return {"used_codes_last_iter": int((counts > 0).sum()), "residual_rms_last_scale": f_rest.pow(2).mean().sqrt().item(),
            "feature_rms": f.pow(2).mean().sqrt().item()}


def agreement(idx_a, idx_b) -> float:
    return torch.cat([(a == b).flatten() for a, b in zip(idx_a, idx_b)]).float().mean().item()


# name, dtype, torch.compile, channels-last, GroupNorm with per-channel statistics
PATHS = (("fp32 plain", torch.float32, False, False, False),
         ("bf16", torch.bfloat16, False, False, False),
         ("bf16 + torch.compile", torch.bfloat16, True, False, False),
         ("bf16 + torch.compile + channels-last", torch.bfloat16, True, True, False),
         ("bf16 + torch.compile + GN channel stats", torch.bfloat16, True, False, True),
         ("fp16 + torch.compile", torch.float16, True, False, False),
         ("fp16 + torch.compile + GN channel stats", torch.float16, True, False, True),
         ("fp16 + torch.compile + channels-last", torch.float16, True, True, False))


def main():
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_vqvae", description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--agree-images", type=int, default=256)
    ap.add_argument("--fit-images", type=int, default=512)
    ap.add_argument("--paths", nargs="*", default=[], help="only these paths (names as in PATHS)")
    ap.add_argument("--out-name", default="vqvae", help="result file name")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run of the script, not a measurement")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    with torch.device(device):
        vq = VQVAE(VQVAE_PRESETS["vqvae-ch160v4096z32"]).eval()
        var = VAR(VAR_PRESETS["var-d16"]).eval()   # the engine needs a transformer; only its VQVAE parts are timed
    B = args.batch
    img = smooth_images(B, device)
    test = smooth_images(args.agree_images, device, seed=1)
    rows, checks = [], {}
    with torch.no_grad():
        f_hat = vq.quantize.idx_to_fhat(vq.img_to_idx(img))
        ref32 = torch.cat([vq.fhat_to_img(x) for x in f_hat.split(16)])
        idx32_init = [torch.cat(t) for t in zip(*[vq.img_to_idx(x) for x in test.split(64)])]
        vq_fit = VQVAE(vq.cfg).to(device).eval()
        vq_fit.load_state_dict(vq.state_dict())
        checks["kmeans_fit"] = fit_codebook_kmeans(vq_fit, smooth_images(args.fit_images, device, seed=2))
        idx32_fit = [torch.cat(t) for t in zip(*[vq_fit.img_to_idx(x) for x in test.split(64)])]
        for name, dtype, compile_, cl, gn in PATHS:
            if args.paths and name not in args.paths:
                continue
            eng = GenerationEngine(var, vq, dtype=dtype, decode_batch=B, compile=compile_, channels_last=cl,
                                   gn_channel_stats=gn)
            agree = {}
            if dtype != torch.float32:
                agree["random init"] = agreement(idx32_init, eng.encode(test))
                eng_fit = GenerationEngine(var, vq_fit, dtype=dtype, decode_batch=B, compile=compile_,
                                           channels_last=cl, gn_channel_stats=gn)
                agree["k-means"] = agreement(idx32_fit, eng_fit.encode(test))
                del eng_fit
                checks[f"{name}: encode token agreement vs fp32"] = agree
                checks[f"{name}: decode max abs diff vs fp32"] = (eng.decode(f_hat) - ref32).abs().max().item()
            for what, fn in (("decode", lambda: eng.decode(f_hat)), ("encode", lambda: eng.encode(img))):
                reset_peak()
                t, ts = time_median(fn, runs=args.runs, warmup=2)
                row = {"what": what, "path": name, "batch": B, "images_per_s": round(B / t, 1),
                       "reference_images_per_s": {"decode": 312, "encode": 405}[what], "peak_gb": peak_gb(),
                       "agree_kmeans": round(agree["k-means"], 4) if (what == "encode" and agree) else "",
                       "agree_random_init": round(agree["random init"], 4) if (what == "encode" and agree) else "",
                       "cudnn_benchmark": True, "times_s": [round(x, 4) for x in ts]}
                rows.append(row)
                print(row, flush=True)
            if compile_ and dtype == torch.bfloat16:   # the decoder without cuDNN autotuning (deterministic choice)
                torch.backends.cudnn.benchmark = False
                t, ts = time_median(lambda: eng.decode(f_hat), runs=args.runs, warmup=2)
                torch.backends.cudnn.benchmark = True
                rows.append({"what": "decode", "path": name + " (cudnn.benchmark off)", "batch": B,
                             "images_per_s": round(B / t, 1), "reference_images_per_s": 312, "peak_gb": "",
                             "cudnn_benchmark": False, "times_s": [round(x, 4) for x in ts]})
                print(rows[-1], flush=True)
            del eng
    print("checks:", checks)
    print_table(rows, ["what", "path", "batch", "images_per_s", "reference_images_per_s", "agree_kmeans",
                       "agree_random_init", "peak_gb"])
    write_result(args.out_name, {"resolution": 256, "tokenizer": "vqvae-ch160v4096z32", "weights": "random",
                           "tf32": False, "agreement_images": args.agree_images,
                           "kmeans_fit_images": args.fit_images, "batch": B, "runs": args.runs, "warmup": 2,
                           "device": str(device)}, rows, checks)


if __name__ == "__main__":
    main()
