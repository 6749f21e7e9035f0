"""Shared helpers for the benchmark scripts: environment record, timing, result files.

Every script prints a table and writes JSON (GPU, driver, versions, date, settings, median of >= 3 timed runs
after a warm-up) under benchmarks/results/.
"""
from __future__ import annotations

import datetime as _dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"


def environment() -> dict:
    env = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "host_cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, gpu_memory_gb=round(p.total_memory / 2**30, 1), gpu_count=torch.cuda.device_count())
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        except Exception:
            env["driver"] = None
    return env


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_median(fn, runs: int = 3, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall-clock seconds of `runs` calls after `warmup` calls (CUDA synchronised)."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def reset_peak():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gb() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 1e9, 2) if torch.cuda.is_available() else None


def print_table(rows: list[dict], cols: list[str]):
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    print(" | ".join(c.ljust(widths[c]) for c in cols))
    print("-|-".join("-" * widths[c] for c in cols))
    for r in rows:
        print(" | ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols))


def write_result(name: str, settings: dict, rows: list[dict], checks: dict | None = None,
                 out_dir: str | os.PathLike | None = None) -> Path:
    out_dir = Path(out_dir or os.environ.get("BENCH_OUT") or RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = environment()
    stamp = env["date"][:10]
    path = out_dir / f"{name}_{stamp}.json"
    path.write_text(json.dumps({"benchmark": name, "environment": env, "settings": settings, "checks": checks or {},
                                "results": rows}, indent=2) + "\n")
    print(f"wrote {path}")
    return path
