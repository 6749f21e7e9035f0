"""Training-step throughput and peak memory of VAR-d16 at 256 px (680 tokens), batch 64: bf16 autocast forward
and backward, fused AdamW, block-causal attention through scaled_dot_product_attention.

Random weights and random tokens (speed does not depend on values).
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from common import peak_gb, print_table, reset_peak, time_median, write_result
from var.config import VAR_PRESETS
from var.transformer import VAR


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", type=int, nargs="+", default=[16])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    rows = []
    for depth in args.depth:
        cfg = VAR_PRESETS[f"var-d{depth}"]
        torch.manual_seed(0)
        with torch.device(device):
            model = VAR(cfg).train()
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos_" not in n]
        no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "pos_" not in n)]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=1e-4, betas=(0.9, 0.95), fused=True)
        B, L, V = args.batch, cfg.seq_len, cfg.vocab_size
        g = torch.Generator(device=device).manual_seed(0)
        labels = torch.randint(0, cfg.num_classes, (B,), device=device, generator=g)
        x = torch.randn(B, L - 1, cfg.z_channels, device=device, generator=g)
        target = torch.randint(0, V, (B, L), device=device, generator=g)

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(labels, x)
            loss = F.cross_entropy(logits.view(-1, V), target.view(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        reset_peak()
        t, ts = time_median(step, runs=args.runs, warmup=2)
        ref = {16: (191, 45.1), 30: (41, 60.6)}.get(depth, ("", ""))
        rows.append({"model": f"d{depth}", "batch": B, "images_per_s": round(B / t, 1),
                     "tokens_per_s": round(B * L / t), "reference_images_per_s": ref[0], "peak_gb": peak_gb(),
                     "reference_peak_gb": ref[1], "times_s": [round(v, 4) for v in ts]})
        print(rows[-1])
        del model, opt
    print_table(rows, ["model", "batch", "images_per_s", "tokens_per_s", "reference_images_per_s", "peak_gb",
                       "reference_peak_gb"])
    write_result("train_step", {"resolution": 256, "dtype": "bfloat16 autocast", "optimizer": "AdamW fused",
                                "attention": "sdpa + additive block-causal mask", "weights": "random"}, rows)


if __name__ == "__main__":
    main()
