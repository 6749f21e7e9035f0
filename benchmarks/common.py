"""Shared helpers of the benchmark modules: timing, the table printer, and the one result writer.

Every benchmark prints a table and writes its result with `write_result` to `benchmarks/results/<name>.json` (or
under `$BENCH_OUT` / the benchmark's `--out`): one file per benchmark and setting, overwritten by the next run, so the
directory always holds the latest measurement and git keeps the history. The file records

    benchmark, date (UTC), commit (HEAD of the checkout that ran, `dirty` if tracked code files differed from it),
    machine (GPU name, memory, count, driver; CPU count), versions (python, torch, CUDA, cuDNN, numpy, extras),
    settings, results (one row per measurement: every timed repeat in `times_s`, and `spread_s` =
    min / median / max of them), checks (the correctness checks run before timing)

Rows are written one per line and the other sections one key per line, so a file stays small and diffs cleanly.
"""
from __future__ import annotations

import datetime as _dt
import gc
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from var.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# tracked files whose local edits would make `commit` misdescribe the code that ran
CODE_PATHS = ("var", "eval", "pipeline", "benchmarks", ":(exclude)benchmarks/results")


def _git(*args: str) -> str | None:
    try:
        res = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def git_commit() -> dict:
    """{'commit': HEAD's sha or None (no git checkout, e.g. a copied tree), 'dirty': tracked code edited or None}."""
    sha = _git("rev-parse", "HEAD")
    if sha is None:
        return {"commit": None, "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS)
    return {"commit": sha, "dirty": None if status is None else bool(status)}


def machine() -> dict:
    out = {"gpu": None, "gpu_memory_gb": None, "gpu_count": 0, "driver": None, "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out.update(gpu=p.name, gpu_memory_gb=round(p.total_memory / 2**30, 1), gpu_count=torch.cuda.device_count())
        try:
            out["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            pass
    return out


def versions(**extra: str) -> dict:
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": cudnn, "numpy": np.__version__, **extra}


def spread(times: list[float]) -> dict:
    """min / median / max of the timed repeats (seconds)."""
    return {"min": round(min(times), 4), "median": round(statistics.median(times), 4), "max": round(max(times), 4)}


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_median(fn, runs: int = 3, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall-clock seconds of `runs` calls after `warmup` calls (CUDA synchronised), and all `runs` times."""
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


def _plain(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable in a benchmark result: {type(o).__name__}")


def dumps_result(record: dict) -> str:
    """JSON with each top-level section's entries one per line (rows of `results` one per line)."""
    def one(v) -> str:
        return json.dumps(v, ensure_ascii=False, default=_plain)

    lines = ["{"]
    for i, (key, value) in enumerate(record.items()):
        comma = "," if i < len(record) - 1 else ""
        if isinstance(value, dict) and value:
            body = [f"    {one(k)}: {one(v)}" for k, v in value.items()]
            lines += [f"  {one(key)}: {{", ",\n".join(body), f"  }}{comma}"]
        elif isinstance(value, list) and value:
            lines += [f"  {one(key)}: [", ",\n".join(f"    {one(v)}" for v in value), f"  ]{comma}"]
        else:
            lines.append(f"  {one(key)}: {one(value)}{comma}")
    return "\n".join(lines) + "\n}\n"


def result_record(name: str, settings: dict, rows: list[dict], checks: dict | None = None, *,
                  date: str | None = None, commit: dict | None = None, machine_info: dict | None = None,
                  version_info: dict | None = None) -> dict:
    """The layout every result file has (module docstring); rows with `times_s` get their `spread_s`."""
    rows = [{**r, "spread_s": spread(r["times_s"])} if r.get("times_s") else dict(r) for r in rows]
    return {"benchmark": name,
            "date": date or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **(commit if commit is not None else git_commit()),
            "machine": machine_info if machine_info is not None else machine(),
            "versions": version_info if version_info is not None else versions(),
            "settings": settings, "results": rows, "checks": checks or {}}


def write_result(name: str, settings: dict, rows: list[dict], checks: dict | None = None,
                 out_dir: str | os.PathLike | None = None, extra_versions: dict | None = None) -> Path:
    """Write (atomically, replacing the previous one) `<out_dir>/<name>.json`; out_dir defaults to $BENCH_OUT, then
    benchmarks/results."""
    path = Path(out_dir or os.environ.get("BENCH_OUT") or RESULTS) / f"{name}.json"
    record = result_record(name, settings, rows, checks, version_info=versions(**(extra_versions or {})))
    atomic_write_text(path, dumps_result(record))
    print(f"wrote {path}")
    return path
