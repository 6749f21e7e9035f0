"""Does the first call of the compiled block decide its speed at every later shape? (issue 8, 2026-12-01)

Hypothesis: Inductor's Triton kernels benchmark their candidate launch configurations at their first launch and keep
the winner for all later shapes (CachingAutotuner.run -> autotune_to_one_config); with the dynamic-shape block graph
that first launch was the 4-token scale of the first runner (batch 8 in bench_generate's checks), where timings are
noise, so machines differed (transformer steps of a d16 batch-256 call: 0.361 s on one fresh H200, 0.391 s on
another). var.engine.prime_compiled runs every scale largest first at max(first batch, 64) images before the first
CUDA graphs.

Each trial is a fresh process with an empty Inductor cache (TORCHINDUCTOR_CACHE_DIR), so nothing is reused between
trials: build d16 (random weights, bf16, compiled engine), make the first runner at batch 8 (priming off: 'first8';
on, the default: 'primed'), then time the transformer steps (graph replays of all 10 scales, no sampling or decode)
at batch 256 and 64, median of 5. Trials alternate until --trials each or --budget-s seconds.

    python benchmarks/explore/perf5_prime_order.py [--trials 4] [--budget-s 420]
Writes $BENCH_OUT (default benchmarks/results)/perf5_prime_order_<date>.json.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def trial(mode: str) -> dict:
    sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
    import torch
    from common import sync
    from var.config import VAR_PRESETS, VQVAE_PRESETS
    from var.engine import GenerationEngine
    from var.transformer import VAR
    from var.vqvae import VQVAE
    torch.manual_seed(0)
    with torch.device("cuda"):
        vq = VQVAE(VQVAE_PRESETS["vqvae-ch160v4096z32"]).eval()
        var = VAR(VAR_PRESETS["var-d16"]).eval()
    eng = GenerationEngine(var, vq, dtype=torch.bfloat16, compile=True, prime_batch=None if mode == "first8" else 64)
    out = {"mode": mode}
    t0 = time.perf_counter()
    with torch.no_grad():
        for B in (8, 256, 64):
            runner = eng._runner(B)
            runner.start(eng.var.class_emb(torch.arange(2 * B, device="cuda") % 1000))
            sync()
            if B == 8:
                out["first_runner_s"] = round(time.perf_counter() - t0, 1)
                continue
            x = [torch.randn_like(t) for t in runner.x_in]
            ts = []
            for _ in range(7):
                t1 = time.perf_counter()
                for si, xi in enumerate(x):
                    runner.step(xi, si, runner.pos[si])
                sync()
                ts.append(time.perf_counter() - t1)
            out[f"steps_b{B}_s"] = round(statistics.median(ts[2:]), 4)
    out["primed"] = eng.primed
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--budget-s", type=float, default=420)
    ap.add_argument("--trial", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.trial:
        print("RESULT " + json.dumps(trial(a.trial)), flush=True)
        return
    sys.path[:0] = [str(ROOT / "benchmarks")]
    from common import write_result
    rows, t_start = [], time.perf_counter()
    for i in range(a.trials):
        for mode in ("first8", "primed"):
            if time.perf_counter() - t_start > a.budget_s:
                break
            with tempfile.TemporaryDirectory() as cache:
                t0 = time.perf_counter()
                r = subprocess.run([sys.executable, __file__, "--trial", mode], capture_output=True, text=True,
                                   env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache})
            line = [s for s in r.stdout.splitlines() if s.startswith("RESULT ")]
            row = json.loads(line[0][7:]) if line else {"mode": mode, "error": r.stderr[-2000:]}
            row["trial"], row["process_s"] = i, round(time.perf_counter() - t0, 1)
            rows.append(row)
            print(row, flush=True)
            write_result("perf5_prime_order", vars(a), rows)   # after every trial: a cut run keeps its rows
    for mode in ("first8", "primed"):
        for k in ("steps_b256_s", "steps_b64_s"):
            v = [r[k] for r in rows if r["mode"] == mode and k in r]
            print(f"{mode:7s} {k}: {v}")


if __name__ == "__main__":
    main()
