"""Training-step throughput and peak memory of VAR-d16 at 256 px (680 tokens), batch 64: bf16 autocast forward
and backward, fused AdamW, block-causal attention through scaled_dot_product_attention.

Paths: eager (`var.train.forward_loss`) and `TrainConfig.compile` (`var.train.compiled_forward_loss`: forward and
cross entropy through torch.compile) at several activation-memory budgets. Before timing, the compiled loss and
gradients of one step are compared with eager on the same batch and the same drop-path / label-dropout draws.
Random weights and random tokens (speed does not depend on values).

    python benchmarks/bench_train.py [--depth 16] [--budgets 1.0 0.5]
"""
from __future__ import annotations

import argparse

import torch

from common import peak_gb, print_table, reset_peak, time_median, write_result
from var.config import VAR_PRESETS
from var.train import compiled_forward_loss, forward_loss
from var.transformer import VAR


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", type=int, nargs="+", default=[16])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--budgets", type=float, nargs="+", default=[1.0, 0.5, 0.35],
                    help="activation_memory_budget values of the compiled path")
    args = ap.parse_args()
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    rows, checks = [], {}
    for depth in args.depth:
        cfg = VAR_PRESETS[f"var-d{depth}"]
        B, L, V = args.batch, cfg.seq_len, cfg.vocab_size
        g = torch.Generator(device=device).manual_seed(0)
        labels = torch.randint(0, cfg.num_classes, (B,), device=device, generator=g)
        x = torch.randn(B, L - 1, cfg.z_channels, device=device, generator=g)
        target = torch.randint(0, V, (B, L), device=device, generator=g)
        paths = [("eager", None)] + [(f"compile, budget {b}", b) for b in args.budgets]
        ref_grads = None
        for name, budget in paths:
            torch.manual_seed(0)
            with torch.device(device):
                model = VAR(cfg).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05, fused=True)
            loss_fn = forward_loss if budget is None else compiled_forward_loss(budget)
            label_gen = torch.Generator(device=device)

            # correctness first: one step's loss and gradients against eager (same RNG draws)
            torch.manual_seed(1)
            loss = loss_fn(model, labels, x, target, label_gen.manual_seed(2), 0.0, True)
            loss.backward()
            grads = torch.cat([p.grad.flatten().float() for p in model.parameters()])
            if ref_grads is None:
                ref_loss, ref_grads = loss.item(), grads
            else:
                checks[f"d{depth} {name}: loss rel diff vs eager"] = abs(loss.item() - ref_loss) / ref_loss
                checks[f"d{depth} {name}: grad rel diff vs eager (fro)"] = \
                    ((grads - ref_grads).norm() / ref_grads.norm()).item()
            model.zero_grad(set_to_none=True)

            def step():
                loss = loss_fn(model, labels, x, target, label_gen, 0.0, True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
                opt.step()
                opt.zero_grad(set_to_none=True)

            reset_peak()
            t, ts = time_median(step, runs=args.runs, warmup=2)
            ref = {16: (191, 45.1), 30: (41, 60.6)}.get(depth, ("", ""))
            rows.append({"model": f"d{depth}", "path": name, "batch": B, "images_per_s": round(B / t, 1),
                         "tokens_per_s": round(B * L / t), "reference_images_per_s": ref[0], "peak_gb": peak_gb(),
                         "reference_peak_gb": ref[1], "times_s": [round(v, 4) for v in ts]})
            print(rows[-1], flush=True)
            del model, opt, loss_fn
            torch._dynamo.reset()
    print("checks:", checks)
    print_table(rows, ["model", "path", "batch", "images_per_s", "tokens_per_s", "reference_images_per_s",
                       "peak_gb", "reference_peak_gb"])
    write_result("train_step", {"resolution": 256, "dtype": "bfloat16 autocast", "optimizer": "AdamW fused",
                                "attention": "sdpa + additive block-causal mask", "weights": "random",
                                "drop_path": "on (train mode)", "label_dropout": "on"}, rows, checks)


if __name__ == "__main__":
    main()
