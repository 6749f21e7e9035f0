"""Generation throughput: VAR-d16/d30 at 256 px, cfg 1.5, top-k 900, top-p 0.96, VQVAE decode included.

Before timing it checks on the GPU that the fast path computes the plain path's function: fp32 engine (CUDA
graphs, static KV cache, fused GELU epilogue, matmul upsampling) vs plain eager `sample` -> identical tokens; bf16
(eager, compiled, compiled with the channels-last decoder) vs fp32 teacher-forced logits -> relative error, and
the bf16 decode vs the fp32 decode of the same tokens. Then it times the modes, breaks one call into transformer
steps / decode / the rest, and optionally lists the top CUDA kernels. Random weights (speed does not depend on
values).

    python -m benchmarks.bench_generate [--quick] [--profile] [--modes engine+compile engine+compile+cl ...]

Writes benchmarks/results/generate.json when d16 is among the depths, else generate_d<depths>.json (e.g.
`--depths 30` -> generate_d30.json); --out-name overrides.
"""
from __future__ import annotations

import argparse

import torch

from benchmarks.common import peak_gb, print_table, reset_peak, time_median, write_result
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
        engines["bf16_compiled_nogn"] = GenerationEngine(var, vq, dtype=torch.bfloat16, compile=True,
                                                         gn_channel_stats=False)
    for name, eng in engines.items():
        lp = eng.teacher_forced_logits(labels, idx_plain)
        out[f"{name}_logits_rel_err_max"] = ((lp - ref).abs().max() / scale).item()
        out[f"{name}_logits_rel_err_fro"] = ((lp - ref).norm() / ref.norm()).item()
        idx_lp, img_lp = eng.generate(B, labels, generator=g.manual_seed(1), **SAMPLING)
        out[f"{name}_image_max_abs_diff_vs_fp32_decode_of_its_tokens"] = \
            (img_lp - vq.idx_to_img(idx_lp).add(1).mul(0.5)).abs().max().item()
        out[f"{name}_token_agreement_per_scale_vs_fp32"] = [round((a == b).float().mean().item(), 3)
                                                          for a, b in zip(idx_plain, idx_lp)]
    out["bf16_unit_roundoff"] = 2 ** -8
    return out


def parse_mode(mode: str) -> dict:
    """'engine+compile+cl+nofg+nogn' -> GenerationEngine switches (nogn: compiled, but without the GroupNorm
    per-channel statistics);
    'eager-bf16' -> the engine without CUDA graphs."""
    parts = set(mode.split("+"))
    unknown = parts - {"engine", "eager-bf16", "compile", "cl", "nofg", "nogn"}
    if unknown:
        raise ValueError(f"unknown mode parts {sorted(unknown)} in {mode!r}")
    return dict(cuda_graphs="engine" in parts, compile="compile" in parts, channels_last="cl" in parts,
                fused_gelu="nofg" not in parts, gn_channel_stats=False if "nogn" in parts else None)


@torch.no_grad()
def breakdown(eng: GenerationEngine, B: int, runs: int = 3) -> dict:
    """Seconds per call of generate(B): the transformer steps (graph replays of all scales), the decode, and the
    rest (CFG, top-k/top-p, the draw, f_hat updates, embeddings) as the difference."""
    labels = torch.arange(B, device=eng.device) % eng.var.num_classes
    g = torch.Generator(device=eng.device)
    total, _ = time_median(lambda: eng.generate(B, labels, generator=g.manual_seed(0), **SAMPLING), runs=runs)
    runner = eng._runner(B)
    x = [torch.randn_like(t) for t in runner.x_in]

    def steps():
        for si, xi in enumerate(x):
            runner.step(xi, si, runner.pos[si])
    t_steps, _ = time_median(steps, runs=runs)
    pn = eng.var.patch_nums[-1]
    f_hat = torch.randn(B, eng.quant.Cvae, pn, pn, device=eng.device)
    t_dec, _ = time_median(lambda: eng.decode(f_hat), runs=runs)
    return {"total_s": round(total, 4), "transformer_steps_s": round(t_steps, 4), "decode_s": round(t_dec, 4),
            "rest_s": round(total - t_steps - t_dec, 4)}


def kernel_table(eng: GenerationEngine, B: int, top: int = 22) -> list[tuple[str, float, int]]:
    """The `top` CUDA kernels of one generate(B) by total time: (name, ms, calls)."""
    from torch.profiler import ProfilerActivity, profile
    labels = torch.arange(B, device=eng.device) % eng.var.num_classes
    with torch.no_grad(), profile(activities=[ProfilerActivity.CUDA]) as prof:
        eng.generate(B, labels, seed=0, **SAMPLING)
        torch.cuda.synchronize()
    agg = {}
    for e in prof.events():
        if getattr(e.device_type, "name", "") == "CUDA":      # kernel events: their own time range on the device
            t, n = agg.get(e.name, (0.0, 0))
            agg[e.name] = (t + e.time_range.elapsed_us() / 1e3, n + 1)
    return sorted(((k[:90], round(v[0], 2), v[1]) for k, v in agg.items()), key=lambda r: -r[1])[:top]


def main():
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_generate", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="d16 and d30 only")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--modes", nargs="+", default=["engine+compile", "engine+compile+nogn", "engine+compile+nofg"],
                    help="engine (bf16 + CUDA graphs), +compile (torch.compile), +cl (channels-last decoder), "
                         "+nofg (no fused GELU epilogue), +nogn (no GroupNorm channel statistics), eager-bf16")
    ap.add_argument("--d30-mode", default="best", help="a mode, or 'best': the fastest d16 mode at batch 64")
    ap.add_argument("--profile", action="store_true", help="print the top CUDA kernels of one d16 batch-256 call")
    ap.add_argument("--no-cudnn-benchmark", action="store_true")
    ap.add_argument("--depths", type=int, nargs="+", default=[16, 20, 24, 30], help="models to time (--quick: 16 30)")
    ap.add_argument("--out-name", default=None,
                    help="result file name (default: generate, or generate_d30 etc. when d16 is not run)")
    args = ap.parse_args()
    device = torch.device("cuda")
    # TF32 off: the fp32 references of the checks are true fp32, and the engine's fp32 parts (quantiser, f_hat)
    # accumulate exactly as on the plain path (the bf16 GEMMs and convolutions do not use TF32 anyway)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    # cuDNN autotuning on; the pipeline's stages leave torch's default (off): --no-cudnn-benchmark measures that
    torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    chk = checks(device, True)
    print("checks:", chk, flush=True)
    if not chk["fp32_graph_vs_plain_tokens_identical"]:
        raise SystemExit("fast path does not reproduce the plain path's tokens; not timing")
    rows, extra = [], {}

    def run(depth, batches, modes, memory_gb=None):
        var, vq = build(depth, device)
        for mode in modes:
            eng = GenerationEngine(var, vq, dtype=torch.bfloat16, **parse_mode(mode))
            for B in (batches if mode == modes[0] else batches[1:]):     # ablation modes: the larger batches only
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
                print(row, flush=True)
            if (depth == 16 and mode == modes[0]) or depth == 30:
                B = 256 if depth == 16 else 64
                extra[f"breakdown d{depth} {mode} batch {B}"] = breakdown(eng, B)
                print("breakdown", depth, mode, extra[f"breakdown d{depth} {mode} batch {B}"], flush=True)
                if args.profile and depth == 16:
                    try:
                        extra["kernels d16 batch 256"] = kernel_table(eng, 256)
                    except Exception as ex:      # the profile is a diagnostic; never lose the timings for it
                        extra["kernels d16 batch 256"] = repr(ex)[:300]
                    for r in extra["kernels d16 batch 256"]:
                        print(f"  {r}", flush=True)
            del eng         # its KV caches must not count in the capped run's peak below
            if memory_gb:   # the KV-cache chunking an 80 GB card would choose (0.3 of its memory): fits in 80 GB?
                reset_peak()
                cap = GenerationEngine(var, vq, dtype=torch.bfloat16, **parse_mode(mode),
                                       kv_budget=0.3 * memory_gb * 2**30 / torch.cuda.get_device_properties(device).total_memory)
                B = batches[-1]
                labels = torch.arange(B, device=device) % 1000
                reset_peak()
                g = torch.Generator(device=device)
                t, ts = time_median(lambda: cap.generate(B, labels, generator=g.manual_seed(0), **SAMPLING),
                                    runs=args.runs, warmup=1)
                rows.append({"model": f"d{depth}", "mode": f"{mode} (chunks for {memory_gb} GiB)", "batch": B,
                             "images_per_s": round(B / t, 1), "reference_images_per_s": REFERENCE.get((f"d{depth}", B), ""),
                             "speedup": "", "peak_gb": peak_gb(), "chunk": cap.max_batch,
                             "times_s": [round(x, 4) for x in ts]})
                print(rows[-1], flush=True)
                del cap
        del var, vq
        reset_peak()

    depths = [d for d in args.depths if not args.quick or d in (16, 30)]
    out_name = args.out_name or ("generate" if 16 in depths else "generate_" + "_".join(f"d{d}" for d in depths))
    if 16 in depths:
        run(16, [16, 64, 256], args.modes)
    for d in (20, 24):
        if d in depths:
            run(d, [64], [args.modes[0]])
    d30_mode = args.d30_mode
    if d30_mode == "best":
        d30_mode = max((r for r in rows if r["model"] == "d16" and r["batch"] == 64),
                       key=lambda r: r["images_per_s"], default={"mode": args.modes[0]})["mode"]
    if 30 in depths:
        run(30, [64, 256], [d30_mode], memory_gb=80)
    print_table(rows, ["model", "mode", "batch", "images_per_s", "reference_images_per_s", "speedup", "peak_gb"])
    write_result(out_name, {"resolution": 256, **SAMPLING, "dtype": "bfloat16", "tf32": False,
                            "cudnn_benchmark": not args.no_cudnn_benchmark, "weights": "random", "depths": depths,
                            "modes": args.modes, "d30_mode": d30_mode, "runs": args.runs, "warmup": 1},
                 rows, {**chk, **extra})


if __name__ == "__main__":
    main()
