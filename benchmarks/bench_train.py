"""Training-step throughput and peak memory of VAR-d16 at 256 px (680 tokens), batch 64: bf16 autocast forward
and backward, fused AdamW, block-causal attention through scaled_dot_product_attention.

Paths: eager (`var.train.forward_loss`), and `TrainConfig.compile` (`var.train.compiled_forward_loss`: forward and
cross entropy through torch.compile) alone and with activation recompute (`TrainConfig.recompute_blocks`: the first
N blocks are recomputed in the backward; `recompute_ffn`: the FFNs of the other blocks); `block` variants use
`compile_scope: block` (`var.train.blockwise_compiled_forward_loss`: each block and the loss compiled, recompute
as eager checkpoints). Before timing, each path's
loss and gradients of one step are compared with eager on the same batch and the same drop-path / label-dropout
draws. Random weights and random tokens (speed does not depend on values).

    python -m benchmarks.bench_train [--depth 16] [--variants eager block block+blocks6 compile+blocks8 ...]

Writes benchmarks/results/train_step.json (after every path, so a run cut short keeps the rows it has).
"""
from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import peak_gb, print_table, reset_peak, sync, time_median, write_result
from var.config import VAR_PRESETS, TrainConfig
from var.token_loss import make_loss_fn
from var.transformer import VAR

SETTINGS = {"resolution": 256, "dtype": "bfloat16 autocast", "optimizer": "AdamW fused",
            "attention": "sdpa + additive block-causal mask", "weights": "random", "drop_path": "on (train mode)",
            "label_dropout": "on"}


def parse_variant(name: str) -> tuple[float | None, dict]:
    """'eager' -> (None, {}); 'compile+budget0.5+blocks6+ffn' -> (0.5, {recompute_blocks: 6, recompute_ffn: True});
    'block+blocks6' -> (1.0, {compile_scope: 'block', recompute_blocks: 6})."""
    parts = name.split("+")
    if parts[0] not in ("eager", "compile", "block"):
        raise ValueError(f"variant {name!r} must start with eager, compile or block")
    budget, rec = (None if parts[0] == "eager" else 1.0), {}
    if parts[0] == "block":
        rec["compile_scope"] = "block"
    for p in parts[1:]:
        if p.startswith("budget"):
            budget = float(p[6:])
        elif p.startswith("blocks"):
            rec["recompute_blocks"] = int(p[6:])
        elif p == "ffn":
            rec["recompute_ffn"] = True
        else:
            raise ValueError(f"unknown variant part {p!r} in {name!r}")
    return budget, rec


def main():
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_train", description=__doc__.split("\n")[0])
    ap.add_argument("--depth", type=int, nargs="+", default=[16])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--variants", nargs="+", default=["eager", "compile", "compile+ffn", "compile+blocks6",
                                                      "compile+blocks8", "compile+blocks4+ffn"],
                    help="eager | compile[+budgetX][+blocksN][+ffn] | block[+blocksN] (compile_scope 'block')")
    args = ap.parse_args()
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    settings = {**SETTINGS, "tf32": True, "depths": args.depth, "batch": args.batch, "variants": args.variants,
                "runs": args.runs, "warmup": 2}
    rows, checks = [], {}
    for depth in args.depth:
        cfg = VAR_PRESETS[f"var-d{depth}"]
        B, L, V = args.batch, cfg.seq_len, cfg.vocab_size
        g = torch.Generator(device=device).manual_seed(0)
        labels = torch.randint(0, cfg.num_classes, (B,), device=device, generator=g)
        x = torch.randn(B, L - 1, cfg.z_channels, device=device, generator=g)
        target = torch.randint(0, V, (B, L), device=device, generator=g)
        ref_grads = None
        for name in args.variants:
            budget, rec = parse_variant(name)
            torch.manual_seed(0)
            with torch.device(device):
                model = VAR(cfg).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05, fused=True)
            # the trainer's own loss path for these TrainConfig speed keys
            loss_fn = make_loss_fn(TrainConfig(compile=budget is not None, activation_memory_budget=budget or 1.0,
                                               **rec))
            label_gen = torch.Generator(device=device)

            # correctness first: one step's loss and gradients against eager (same RNG draws)
            torch.manual_seed(1)
            t_first = time.perf_counter()
            before = torch.cuda.memory_allocated()
            loss = loss_fn(model, labels, x, target, label_gen.manual_seed(2), 0.0, True)
            saved_gb = round((torch.cuda.memory_allocated() - before) / 1e9, 2)   # what the forward keeps
            loss.backward()
            sync()
            first_step_s = time.perf_counter() - t_first      # includes compilation
            # kept on the host: device copies would count in the peak memory measured below
            grads = torch.cat([p.grad.flatten().float() for p in model.parameters()]).cpu()
            if ref_grads is None:
                ref_loss, ref_grads = loss.item(), grads
            else:
                checks[f"d{depth} {name}: loss rel diff vs eager"] = abs(loss.item() - ref_loss) / ref_loss
                checks[f"d{depth} {name}: grad rel diff vs eager (fro)"] = \
                    ((grads - ref_grads).norm() / ref_grads.norm()).item()
                print("check", name, {k: v for k, v in checks.items() if name in k}, flush=True)
            del grads, loss
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
            rows.append({"model": f"d{depth}", "path": name, **rec, "activation_memory_budget": budget,
                         "batch": B, "images_per_s": round(B / t, 1),
                         "tokens_per_s": round(B * L / t), "reference_images_per_s": ref[0], "peak_gb": peak_gb(),
                         "forward_keeps_gb": saved_gb, "reference_peak_gb": ref[1], "first_step_s": round(first_step_s, 1),
                         "times_s": [round(v, 4) for v in ts]})
            print(rows[-1], flush=True)
            del model, opt, loss_fn
            torch._dynamo.reset()
            write_result("train_step", settings, rows, checks)   # after every path: a cut-off run keeps its rows
    print("checks:", checks)
    print_table(rows, ["model", "path", "batch", "images_per_s", "tokens_per_s", "reference_images_per_s",
                       "peak_gb", "forward_keeps_gb", "reference_peak_gb", "first_step_s"])
    write_result("train_step", settings, rows, checks)


if __name__ == "__main__":
    main()
