"""Generation throughput: VAR-d16/d30 at 256 px, cfg 1.5, top-k 900, top-p 0.96, VQVAE decode included.

Before timing it checks on the GPU that the fast path computes the plain path's function: fp32 engine (CUDA
graphs, static KV cache) vs plain eager `sample` -> identical tokens; bf16 vs fp32 teacher-forced logits ->
relative error. Random weights (speed does not depend on values).

    python benchmarks/bench_generate.py [--quick]
"""
from __future__ import annotations

import argparse

import torch

from common import peak_gb, print_table, reset_peak, time_median, write_result
from var.config import VAR_PRESETS, VQVAE_PRESETS
from var.engine import GenerationEngine
from var.sampling import sample
from var.transformer import VAR
from var.vqvae import VQVAE

REFERENCE = {("d16", 16): 62, ("d16", 64): 111, ("d16", 256): 144, ("d20", 64): 102, ("d24", 64): 69,
             ("d30", 64): 54, ("d30", 256): "OOM"}
SAMPLING = dict(cfg=1.5, top_k=900, top_p=0.96)


def build(depth: int, device):
    torch.manual_seed(0)
    with torch.device(device):
        vq = VQVAE(VQVAE_PRESETS["vqvae-ch160v4096z32"]).eval()
        var = VAR(VAR_PRESETS[f"var-d{depth}"]).eval()
    return var, vq


@torch.no_grad()
def checks(device, compile_: bool) -> dict:
    var, vq = build(16, device)
    B = 8
    labels = torch.arange(B, device=device) * 97 % 1000
    g = torch.Generator(device=device)
    idx_plain, img_plain = sample(var, vq, B, labels, generator=g.manual_seed(1), **SAMPLING)
    eng32 = GenerationEngine(var, vq, dtype=torch.float32, cuda_graphs=True)
    idx_fast, img_fast = eng32.generate(B, labels, generator=g.manual_seed(1), **SAMPLING)
    out = {"fp32_graph_vs_plain_tokens_identical": all(torch.equal(a, b) for a, b in zip(idx_plain, idx_fast)),
           "fp32_graph_vs_plain_image_max_abs_diff": (img_plain - img_fast).abs().max().item()}
    ref = var(labels, vq.idx_to_var_input(idx_plain))            # masked full-sequence forward, fp32
    scale = ref.abs().max()
    out["fp32_graph_teacher_forced_logits_max_abs_err"] = (eng32.teacher_forced_logits(labels, idx_plain) - ref).abs().max().item()
    engines = {"bf16": GenerationEngine(var, vq, dtype=torch.bfloat16)}
    if compile_:
        engines["bf16_compiled"] = GenerationEngine(var, vq, dtype=torch.bfloat16, compile=True)
    for name, eng in engines.items():
        lp = eng.teacher_forced_logits(labels, idx_plain)
        out[f"{name}_logits_rel_err_max"] = ((lp - ref).abs().max() / scale).item()
        out[f"{name}_logits_rel_err_fro"] = ((lp - ref).norm() / ref.norm()).item()
        idx_lp, _ = eng.generate(B, labels, generator=g.manual_seed(1), **SAMPLING)
        out[f"{name}_token_agreement_per_scale_vs_fp32"] = [round((a == b).float().mean().item(), 3)
                                                          for a, b in zip(idx_plain, idx_lp)]
    out["bf16_unit_roundoff"] = 2 ** -8
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer configurations")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--modes", nargs="+", default=["engine", "engine+compile"],
                    help="engine (bf16 + CUDA graphs), engine+compile (+ torch.compile), "
                         "engine+compile+cl (+ channels-last decode), eager-bf16")
    ap.add_argument("--d30-mode", default="engine+compile")
    args = ap.parse_args()
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    chk = checks(device, any("compile" in m for m in args.modes + [args.d30_mode]))
    print("checks:", chk)
    if not chk["fp32_graph_vs_plain_tokens_identical"]:
        raise SystemExit("fast path does not reproduce the plain path's tokens; not timing")
    plan = [(16, [16, 64, 256], args.modes), (30, [64, 256], [args.d30_mode])]
    if not args.quick:
        plan[1:1] = [(20, [64], ["engine"]), (24, [64], ["engine"])]
    rows = []
    for depth, batches, modes in plan:
        var, vq = build(depth, device)
        for mode in modes:
            eng = GenerationEngine(var, vq, dtype=torch.bfloat16, cuda_graphs=mode.startswith("engine"),
                                   compile="compile" in mode, channels_last=mode.endswith("+cl"))
            for B in batches:
                labels = torch.arange(B, device=device) % 1000
                reset_peak()
                g = torch.Generator(device=device)
                t, ts = time_median(lambda: eng.generate(B, labels, generator=g.manual_seed(0), **SAMPLING),
                                    runs=args.runs, warmup=1)
                ref = REFERENCE.get((f"d{depth}", B), "")
                row = {"model": f"d{depth}", "mode": mode, "batch": B, "images_per_s": round(B / t, 1),
                       "reference_images_per_s": ref, "speedup": round(B / t / ref, 2) if isinstance(ref, int) else "",
                       "peak_gb": peak_gb(), "chunk": eng.max_batch, "times_s": [round(x, 4) for x in ts]}
                rows.append(row)
                print(row)
            del eng
        del var, vq
        reset_peak()
    print_table(rows, ["model", "mode", "batch", "images_per_s", "reference_images_per_s", "speedup", "peak_gb"])
    write_result("generate", {"resolution": 256, **SAMPLING, "dtype": "bfloat16", "tf32": True,
                              "weights": "random"}, rows, chk)


if __name__ == "__main__":
    main()
