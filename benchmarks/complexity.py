"""Paper Appendix B: generation cost of raster-scan AR vs VAR as the token-map side n grows (random weights).

    python -m benchmarks.complexity [--ns 4 8 12 16 24 32] [--out results/complexity]

For each n: AR generates n^2 tokens one at a time (KV cache), VAR the scales `var_patch_nums(n)` (about 1.35x
apart, as the paper's 256/512 px schedules); same tiny transformer width/depth, batch 1, CFG halves included.
Measured: wall-clock of the transformer part of generation (the shared tokenizer decode excluded). Counted:
analytic FLOPs with the KV cache (eval/complexity.py; checked against torch.utils.flop_counter for one n) and the
paper's no-cache count (O(n^6) vs O(n^4)). Exponents are least-squares slopes in log-log; writes the figure's
data and the figure, <out>.csv and <out>.png, and the measurement as benchmarks/results/complexity.json (under
$BENCH_OUT if set).
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import time
from pathlib import Path

import torch

from benchmarks.common import write_result
from eval.complexity import attention_flops, generation_flops, paper_attention_cost, var_patch_nums
from eval.scaling import fit_power_law
from var.ar import AR, ARConfig
from var.config import VARConfig
from var.io import atomic_path, atomic_write_text
from var.transformer import VAR

WIDTH, DEPTH, V, CVAE = 64, 2, 256, 8


def models(n: int):
    common = dict(depth=DEPTH, embed_dim_override=WIDTH, num_classes=4, vocab_size=V)
    var = VAR(VARConfig(z_channels=CVAE, patch_nums=var_patch_nums(n), **common)).eval()
    ar = AR(ARConfig(patch_nums=(n,), **common)).eval()
    return var, ar


@torch.no_grad()
def generate_var(var: VAR) -> None:
    """The transformer calls of var.sampling.sample (one per scale, 2B rows); random next-scale inputs."""
    cond = var.class_emb(torch.tensor([0, var.num_classes]))
    mods, kv, pos = var.modulations(cond), var.new_kv_cache(2), 0
    for pn in var.patch_nums:
        x = torch.randn(2, pn * pn, var.C)
        var.logits(var.forward_cached(x, mods, kv, pos), cond)
        pos += pn * pn


@torch.no_grad()
def generate_ar(ar: AR) -> None:
    """The transformer calls of var.ar.sample_ar (one per token, 2B rows)."""
    cond = ar.class_emb(torch.tensor([0, ar.num_classes]))
    mods, kv = ar.modulations(cond), ar.new_kv_cache(2)
    x = torch.randn(2, 1, ar.C)
    for i in range(ar.L):
        ar.logits(ar.forward_cached(x, mods, kv, i), cond)


def timed(fn, model, reps: int) -> float:
    fn(model)                                      # warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(model)
        best = min(best, time.perf_counter() - t0)
    return best


def flop_counter_check(n: int) -> dict:
    """torch.utils.flop_counter on one n vs our analytic count. On CPU the counter sees only the linear layers
    (aten.addmm; scaled_dot_product_attention has no CPU formula), so it is compared with the analytic count less
    its attention term; VAR's word embedding is not run here (random next-scale inputs), 2 Cvae C per token after the first scale."""
    from torch.utils.flop_counter import FlopCounterMode
    var, ar = models(n)
    out = {}
    for name, fn, m in (("var", generate_var, var), ("ar", generate_ar, ar)):
        with FlopCounterMode(display=False) as fc:
            fn(m)
        word = 2 * 2 * CVAE * m.C * (m.L - m.patch_nums[0] ** 2) if name == "var" else 0
        out[name] = (fc.get_total_flops(), generation_flops(m.cfg) - attention_flops(m.cfg) - word)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.complexity", description=__doc__.split("\n")[0])
    ap.add_argument("--ns", type=int, nargs="+", default=[4, 8, 12, 16, 24, 32])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="results/complexity")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]      # wall-clock on a shared CPU: record how busy it was
    torch.manual_seed(0)
    rows = []
    for n in args.ns:
        var, ar = models(n)
        rows.append({"n": n, "var_scales": len(var.patch_nums),
                     "ar_seconds": timed(generate_ar, ar, args.reps), "var_seconds": timed(generate_var, var, args.reps),
                     "ar_flops": generation_flops(ar.cfg), "var_flops": generation_flops(var.cfg),
                     "ar_paper_cost": paper_attention_cost("ar", (n,)),
                     "var_paper_cost": paper_attention_cost("var", var.patch_nums)})
        print({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
    ns = [r["n"] for r in rows]
    fits = {k: fit_power_law(ns, [r[k] for r in rows]).alpha for k in rows[0] if k not in ("n", "var_scales")}
    check = flop_counter_check(args.ns[len(args.ns) // 2])
    out = Path(args.out)
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    buf.write("# fitted exponents (y ~ n^e): " + ", ".join(f"{k} {v:.2f}" for k, v in fits.items()) + "\n")
    buf.write("# flop_counter check at n=%d: " % args.ns[len(args.ns) // 2] + ", ".join(
        f"{k} counted {a:.4g} analytic {b:.4g} (ratio {a / b:.3f})" for k, (a, b) in check.items()) + "\n")
    atomic_write_text(out.with_suffix(".csv"), buf.getvalue())
    write_result("complexity", {"width": WIDTH, "depth": DEPTH, "vocab_size": V, "z_channels": CVAE, "batch": 1,
                                "cfg_rows": 2, "threads": args.threads, "reps": args.reps, "timing": "min of reps",
                                "weights": "random",
                                "load_average_1min": [round(load_start, 2), round(os.getloadavg()[0], 2)]},
                 [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
                 {"fitted_exponents": {k: round(v, 3) for k, v in fits.items()},
                  f"flop_counter_over_analytic_n{args.ns[len(args.ns) // 2]}":
                      {k: round(a / b, 4) for k, (a, b) in check.items()}})
    print("exponents:", {k: round(v, 2) for k, v in fits.items()})
    print("flop_counter vs analytic:", {k: f"{a / b:.3f}" for k, (a, b) in check.items()})
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, (key, title) in zip(axes, (("seconds", "measured wall-clock (KV cache)"),
                                       ("flops", "analytic FLOPs (KV cache)"),
                                       ("paper_cost", "Appendix B count (no cache)"))):
        for kind, mark in (("ar", "o-"), ("var", "s-")):
            ys = [r[f"{kind}_{key}"] for r in rows]
            ax.loglog(ns, ys, mark, label=f"{kind.upper()} (n^{fits[f'{kind}_{key}']:.2f})")
        for e, ls in ((6, ":"), (4, "--")):
            ref = rows[-1][f"ar_{key}"] if e == 6 else rows[-1][f"var_{key}"]
            ax.loglog(ns, [ref * (n / ns[-1]) ** e for n in ns], ls, color="gray", label=f"O(n^{e})")
        ax.set_xlabel("token map side n")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out.with_suffix(".png"), suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
