"""How much would decoding block b on a second CUDA stream, while block b+1's transformer steps run, gain (issue 8)?

At batch 256 the d16 decode is 0.287 s of a 0.688 s call; both phases are compute-heavy, but the coarse scales'
steps are small kernels that leave most SMs idle, and the decoder's GroupNorm kernels are memory-bound. This
measures the upper bound of a pipelined sampler loop before building one: n consecutive blocks with the compiled bf16
engine, (a) sequentially (steps, then decode, per block: what generate() does), (b) with each block's decode issued
on a side stream after its steps. Same seeds, so (b) must give the same tokens and images bit for bit (checked).

    python benchmarks/explore/perf8_decode_overlap.py [--batches 256,64] [--blocks 6] [--device cuda]

Prints and writes JSON to $BENCH_OUT (default benchmarks/results)/perf8_decode_overlap_<date>.json (common.write_result).
"""
import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
from common import time_median, write_result  # noqa: E402
from var.config import VAR_PRESETS, VARConfig, VQVAE_PRESETS, VQVAEConfig  # noqa: E402
from var.engine import GenerationEngine  # noqa: E402
from var.sampling import sample  # noqa: E402
from var.transformer import VAR  # noqa: E402
from var.vqvae import VQVAE  # noqa: E402

SAMPLING = dict(cfg=1.5, top_k=900, top_p=0.96)


def steps_only(eng: GenerationEngine, B: int, labels: torch.Tensor, seed: int):
    """One block's transformer phase (everything generate() does but the decode): (idx list, f_hat)."""
    box = []

    def keep(f_hat):
        box.append(f_hat)
        return f_hat.new_zeros(1, 3, 1, 1)
    g = torch.Generator(device=eng.device).manual_seed(seed)
    idx, _ = sample(eng.var, eng.vqvae, B, labels, generator=g, runner=eng._runner(B), decode=keep,
                    quantizer=eng.quant, **SAMPLING)
    return idx, box[0]


def run_blocks(eng, B, n, overlap: bool):
    labels = [(torch.arange(B, device=eng.device) * 7 + b) % eng.var.num_classes for b in range(n)]
    main = torch.cuda.current_stream() if eng.device.type == "cuda" else None
    side = torch.cuda.Stream() if overlap and main is not None else None
    idx_all, imgs = [], []
    for b in range(n):
        idx, f_hat = steps_only(eng, B, labels[b], seed=1000 + b)
        idx_all.append(idx)
        if side is None:
            imgs.append(eng.decode(f_hat))
        else:
            side.wait_stream(main)
            with torch.cuda.stream(side):
                imgs.append(eng.decode(f_hat))
            f_hat.record_stream(side)
    if side is not None:
        main.wait_stream(side)
    return idx_all, imgs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="256,64")
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="small random models (CPU smoke runs)")
    a = ap.parse_args()
    dev = torch.device(a.device)
    if dev.type == "cuda":      # bench_generate.py's settings, so its generate() rows compare with these
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    with torch.device(dev):
        if a.tiny:
            vcfg = VQVAEConfig(vocab_size=64, z_channels=8, ch=32, ch_mult=(1, 2), num_res_blocks=1, using_sa=False,
                               using_mid_sa=False, patch_nums=(1, 2, 4))
            vq = VQVAE(vcfg).eval()
            var = VAR(VARConfig(depth=2, num_classes=10, vocab_size=64, z_channels=8, patch_nums=(1, 2, 4))).eval()
        else:
            vq = VQVAE(VQVAE_PRESETS["vqvae-ch160v4096z32"]).eval()
            var = VAR(VAR_PRESETS["var-d16"]).eval()
    eng = GenerationEngine(var, vq, dtype=torch.bfloat16, decode_batch=64, compile=not a.tiny)
    rows, checks = [], {}
    for B in (int(s) for s in a.batches.split(",")):
        with torch.no_grad():
            seq = run_blocks(eng, B, a.blocks, overlap=False)
            ovl = run_blocks(eng, B, a.blocks, overlap=True)
            checks[f"batch {B}: tokens identical"] = all(torch.equal(x, y) for i, j in zip(seq[0], ovl[0])
                                                         for x, y in zip(i, j))
            checks[f"batch {B}: images identical"] = all(torch.equal(x, y) for x, y in zip(seq[1], ovl[1]))
            labels = torch.arange(B, device=dev) % eng.var.num_classes
            g = torch.Generator(device=dev)
            t, times = time_median(lambda: eng.generate(B, labels, generator=g.manual_seed(0), **SAMPLING),
                                   runs=a.runs)
            rows.append({"batch": B, "blocks": 1, "decode": "generate() as bench_generate.py",
                         "images_per_s": round(B / t, 1), "times_s": [round(x, 4) for x in times]})
            print(json.dumps(rows[-1]), flush=True)
            for overlap in (False, True):
                t, times = time_median(lambda: run_blocks(eng, B, a.blocks, overlap), runs=a.runs)
                rows.append({"batch": B, "blocks": a.blocks, "decode": "side stream" if overlap else "in line",
                             "images_per_s": round(B * a.blocks / t, 1), "times_s": [round(x, 4) for x in times]})
                print(json.dumps(rows[-1]), flush=True)
    print(json.dumps(checks), flush=True)
    write_result("perf8_decode_overlap" + ("_tiny" if a.tiny else ""),
                 {"model": "tiny" if a.tiny else "var-d16 + vqvae-ch160v4096z32", "weights": "random",
                  "engine": "bf16, compile" if not a.tiny else "bf16, eager", "decode_batch": 64, **SAMPLING},
                 rows, checks=checks)


if __name__ == "__main__":
    main()
