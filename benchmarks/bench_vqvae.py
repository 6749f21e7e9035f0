"""VQVAE (ch 160, 256 px) decode and encode-to-10-scale-tokens throughput, fp32 plain vs the engine's bf16 / fp16
paths (eager, torch.compile, compile + channels-last), with the token agreement of each fast encoder against
fp32 (reported, required >= 99.5%).

Inputs are smooth synthetic images (random low-frequency fields), not noise, so the tokens are not all
near-ties. Random weights.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from common import peak_gb, print_table, reset_peak, time_median, write_result
from var.config import VAR_PRESETS, VQVAE_PRESETS
from var.engine import GenerationEngine
from var.transformer import VAR
from var.vqvae import VQVAE


def smooth_images(B: int, device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator(device=device).manual_seed(seed)
    low = torch.randn(B, 3, 8, 8, device=device, generator=g)
    return F.interpolate(low, size=(256, 256), mode="bicubic").tanh()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    with torch.device(device):
        vq = VQVAE(VQVAE_PRESETS["vqvae-ch160v4096z32"]).eval()
        var = VAR(VAR_PRESETS["var-d16"]).eval()   # the engine needs a transformer; only its VQVAE parts are timed
    B = args.batch
    img = smooth_images(B, device)
    rows, checks = [], {}
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    with torch.no_grad():
        f_hat = vq.quantize.idx_to_fhat(vq.img_to_idx(img))
        idx32 = vq.img_to_idx(smooth_images(256, device, seed=1))     # fp32, TF32 off: the agreement reference
        for name, dtype, compile_, cl in (("fp32 plain", torch.float32, False, False),
                                          ("bf16", torch.bfloat16, False, False),
                                          ("bf16 + torch.compile", torch.bfloat16, True, False),
                                          ("bf16 + torch.compile + channels-last", torch.bfloat16, True, True),
                                          ("fp16 + torch.compile", torch.float16, True, False),
                                          ("fp16 + torch.compile + channels-last", torch.float16, True, True)):
            eng = GenerationEngine(var, vq, dtype=dtype, decode_batch=B, compile=compile_, channels_last=cl)
            agree = None
            if dtype != torch.float32:
                idx_lp = eng.encode(smooth_images(256, device, seed=1))
                agree = torch.cat([(a == b).flatten() for a, b in zip(idx32, idx_lp)]).float().mean().item()
                checks[f"{name}: encode token agreement vs fp32"] = agree
                checks[f"{name}: decode max abs diff vs fp32"] = (eng.decode(f_hat) - vq.fhat_to_img(f_hat)).abs().max().item()
            for what, fn in (("decode", lambda: eng.decode(f_hat)), ("encode", lambda: eng.encode(img))):
                reset_peak()
                t, ts = time_median(fn, runs=args.runs, warmup=2)
                rows.append({"what": what, "path": name, "batch": B, "images_per_s": round(B / t, 1),
                             "reference_images_per_s": {"decode": 312, "encode": 405}[what], "peak_gb": peak_gb(),
                             "token_agreement": round(agree, 4) if (what == "encode" and agree is not None) else "",
                             "times_s": [round(x, 4) for x in ts]})
                print(rows[-1])
            del eng
    print("checks:", checks)
    print_table(rows, ["what", "path", "batch", "images_per_s", "reference_images_per_s", "token_agreement",
                       "peak_gb"])
    write_result("vqvae", {"resolution": 256, "tokenizer": "vqvae-ch160v4096z32", "weights": "random",
                           "tf32": False}, rows, checks)


if __name__ == "__main__":
    main()
