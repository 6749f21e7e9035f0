"""CPU time and peak memory of the uncertainty-aware metrics (eval/metric_suite.py) at N reference x M generated.

Each part runs in its own process (peak RSS is per process; the features themselves are subtracted). Costs that
repeat are timed on a few repetitions and scaled: FD per bootstrap resample, KID per subset, FD per curve size.
Usage: python -m benchmarks.bench_metric_suite --n 10000 --m 10000 --dims 2048 1024
One timed run per part (no warm-up median: the parts take minutes on a 2-core CPU); the load average is recorded
because other processes on a shared machine slow every number here.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from benchmarks.common import write_result

PARTS = ("fd_reference", "fd_per_resample", "fd_per_curve_size", "kid_per_subset", "kid_fullset_bootstrap100",
         "knn_bootstrap100", "density_coverage")


def _run_part(part: str, n: int, m: int, d: int) -> dict:
    from eval.bootstrap import BootstrapConfig, bootstrap_fd, bootstrap_kid, bootstrap_knn, counts_of, resample_indices
    from eval.fd_bias import fd_at_sizes
    from eval.kid import kid
    from eval.metrics import FrechetReference, feature_stats
    from eval.prdc import density_coverage
    rng = np.random.default_rng(0)
    real = torch.from_numpy(np.abs(rng.normal(size=(n, d))).astype(np.float32))   # pool3-like: non-negative
    fake = torch.from_numpy(np.abs(rng.normal(size=(m, d)) * 1.05 + 0.02).astype(np.float32))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    counts = counts_of(resample_indices(m, BootstrapConfig(resamples=100)), m)
    t0, reps = time.perf_counter(), 1
    if part == "fd_reference":
        FrechetReference(*feature_stats(real)).distance(*feature_stats(fake))
    elif part in ("fd_per_resample", "fd_per_curve_size"):
        ref = FrechetReference(*feature_stats(real))
        t0 = time.perf_counter()
        reps = 3
        if part == "fd_per_resample":
            bootstrap_fd(ref, fake, counts[:reps])
        else:
            fd_at_sizes(ref, fake, [m // 3, 2 * m // 3, m])
    elif part == "kid_per_subset":
        reps = 5
        kid(real=real, fake=fake, subsets=reps)
    elif part == "kid_fullset_bootstrap100":
        bootstrap_kid(real=real, fake=fake, counts_RM=np.concatenate([np.ones((1, m), np.int64), counts]))
    elif part == "knn_bootstrap100":
        bootstrap_knn(real=real, fake=fake, counts_RM=np.concatenate([np.ones((1, m), np.int64), counts]))
    elif part == "density_coverage":
        density_coverage(real=real, fake=fake)
    seconds = (time.perf_counter() - t0) / reps
    peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    return {"part": part, "n": n, "m": m, "d": d, "seconds_each": round(seconds, 2), "repetitions": reps,
            "peak_rss_above_features_mib": round(peak_mib)}


def main():
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_metric_suite", description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--m", type=int, default=10000)
    ap.add_argument("--dims", type=int, nargs="+", default=[2048, 1024])
    ap.add_argument("--part")
    ap.add_argument("--d", type=int)
    args = ap.parse_args()
    if args.part:  # child process
        print(json.dumps(_run_part(args.part, args.n, args.m, args.d)))
        return
    rows = []
    for d in args.dims:
        for part in PARTS:
            load = os.getloadavg()[0]
            out = subprocess.run([sys.executable, "-m", "benchmarks.bench_metric_suite", "--part", part, "--d", str(d), "--n", str(args.n),
                                  "--m", str(args.m)], capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1]) | {"load_avg_1min_before": round(load, 1)}
            print(row, flush=True)
            rows.append(row)
    write_result("metric_suite", {"n": args.n, "m": args.m, "dims": args.dims,
                                   "threads": torch.get_num_threads()}, rows)


if __name__ == "__main__":
    main()
