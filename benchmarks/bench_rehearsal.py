"""Table 1 from released weights, end to end through the DAG: stand-in release files (python -m pipeline.rehearsal:
the released key sets, shapes and dtypes, random weights; a random Inception pinned by sha256; an ADM-format reference
batch) and then `snakemake --cores all table1` on configs/imagenet256.yaml + imagenet256_released.yaml + the
rehearsal override -- exactly the jobs import_tokenizer, import_var, sample (50 per class: 50,000 images), score,
table1. Each job's time is the `time_s` of its summary line (inside the stage process); `overhead` is the rest of
the front end's wall-clock (interpreter and torch start-up, Snakemake's planning and file checks).

    python -m benchmarks.bench_rehearsal [--work /tmp/rehearsal] [--per-class 50] [--reference-images 10000]
    python -m benchmarks.bench_rehearsal --per-class 1 --reference-images 20 --work /tmp/reh_smoke --out /tmp
        # smoke run on a CPU (fp32, no compile), not a measurement

With `--front dvc` the same plan runs through DVC instead: `python -m pipeline.render` for the same config files
(dvc.yaml and the merged params.yaml), `dvc init -f --no-scm` (the copy has .dvc/ but no git), cache links
(`dvc config cache.type hardlink,symlink,copy`: the 50k samples are not copied into the cache), `dvc repro table1`;
the result is written as `rehearsal_dvc`.
With `--dvc-adopt` the finished Snakemake run is then adopted by DVC (in the work copy, without git:
`python -m pipeline.render` for the same config files, `dvc init -f --no-scm` (the copy has .dvc/ but no git),
`dvc commit -f`, `dvc status`), which checks that the DVC front end plans the same jobs and paths as Snakemake
ran. Writes benchmarks/results/rehearsal.json (or under --out).
The scores of random weights mean nothing; the guard's label, the sample count and the pins are checked.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import ROOT, print_table, write_result

SUMMARY = re.compile(r"^\[(\w+)\] (.*)time_s=([0-9.]+)\s*$")
CONFIGS = ("configs/imagenet256.yaml", "configs/imagenet256_released.yaml")


def sh(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[str, float]:
    """Run `cmd`, passing its output through as it comes (a long run shows where it is), and return it timed."""
    t0 = time.perf_counter()
    lines = []
    with subprocess.Popen(cmd, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        for line in proc.stdout:
            sys.stdout.write(f"[{time.perf_counter() - t0:7.1f}s] {line}")
            sys.stdout.flush()
            lines.append(line)
    dt = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return "".join(lines), dt


def job_times(log: str) -> list[tuple[str, str, float]]:
    """(stage, its summary, seconds) for each summary line the front end passed through."""
    out = []
    for line in log.splitlines():
        m = SUMMARY.match(line.strip())
        if m:
            out.append((m.group(1), m.group(2).strip(), float(m.group(3))))
    return out


def main():
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_rehearsal", description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/rehearsal", help="a copy of the repository is made here (replaced)")
    ap.add_argument("--models", nargs="+", default=["var-d16"])
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--reference-images", type=int, default=10_000)
    ap.add_argument("--cores", default="all")
    ap.add_argument("--front", choices=("snakemake", "dvc"), default="snakemake", help="which front end runs the plan")
    ap.add_argument("--dvc-adopt", action="store_true", help="then adopt the run with DVC and check its status")
    ap.add_argument("--out", default="", help="result directory (default benchmarks/results)")
    args = ap.parse_args()
    work = Path(args.work)
    if work.exists():
        shutil.rmtree(work)
    # a copy of the tracked tree: the run's outputs (runs/, results/, logs/) stay out of the checkout
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, text=True,
                           capture_output=True, check=True).stdout.split() if (ROOT / ".git").exists() else None
    if files is None:
        skip = shutil.ignore_patterns(".git", ".whl", ".venv", "runs", "results", "logs", ".snakemake", "weights")
        shutil.copytree(ROOT, work, ignore=skip)
    else:
        for f in files:
            (work / f).parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / f).is_file():
                shutil.copy2(ROOT / f, work / f)
    # the stage commands run `python -m ...` from PATH: put this interpreter's directory first
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(work), os.environ.get("PYTHONPATH", "")]),
           "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    py = sys.executable
    t_total = time.perf_counter()
    out, t_standins = sh([py, "-m", "pipeline.rehearsal", "--out", str(work / "weights/rehearsal"),
                          "--models", *args.models, "--per-class", str(args.per_class),
                          "--reference-images", str(args.reference_images)], work, env)
    print(out.strip().splitlines()[-1])
    configs = [*CONFIGS, "weights/rehearsal/rehearsal.yaml"]
    front = args.front
    if front == "dvc":
        if args.dvc_adopt:
            raise SystemExit("--dvc-adopt adopts a Snakemake run; with --front dvc, DVC ran it")
        sh([py, "-m", "pipeline.render", "--configfile", *configs], work, env)
        sh([py, "-m", "dvc", "init", "-q", "-f", "--no-scm"], work, env)
        # link outputs into the cache instead of copying them (samples.npz of 50k images is 9.8 GB)
        sh([py, "-m", "dvc", "config", "cache.type", "hardlink,symlink,copy"], work, env)
        log, t_smk = sh([py, "-m", "dvc", "repro", "table1"], work, env)
    else:
        log, t_smk = sh([py, "-m", "snakemake", "--cores", args.cores, "table1", "--configfile", *configs], work, env)
    jobs = job_times(log)
    rows = [{"what": "stand-in release files", "seconds": round(t_standins, 1)}]
    rows += [{"what": f"{stage} ({summary[:60]})", "seconds": round(t, 1)} for stage, summary, t in jobs]
    rows.append({"what": f"{front} overhead (start-up, planning, hashing)",
                 "seconds": round(t_smk - sum(t for *_, t in jobs), 1)})
    rows.append({"what": f"{front} table1 (wall-clock)" if front == "snakemake" else "dvc repro table1 (wall-clock)",
                 "seconds": round(t_smk, 1)})
    checks = {"jobs": sorted(s for s, *_ in jobs)}
    for m in args.models:
        scores = json.loads((work / f"runs/rehearsal/var/{m}/scores.json").read_text())
        checks[m] = {k: scores.get(k) for k in ("evaluation_label", "num_samples", "fid_inception", "extractor")}
        checks[m]["samples_sha256"] = scores.get("environment", {}).get("samples_sha256")
    checks["table1"] = (work / "results/rehearsal/table1.md").read_text()
    if front == "dvc":
        status, _ = sh([py, "-m", "dvc", "status", "table1"], work, env)
        checks["dvc_status"] = status.strip()
    if args.dvc_adopt:
        t0 = time.perf_counter()
        sh([py, "-m", "pipeline.render", "--configfile", *configs], work, env)
        for cmd in ([py, "-m", "dvc", "init", "-q", "-f", "--no-scm"], [py, "-m", "dvc", "commit", "-f", "table1"]):
            sh(cmd, work, env)
        status, _ = sh([py, "-m", "dvc", "status", "table1"], work, env)
        dry, _ = sh([py, "-m", "dvc", "repro", "--dry", "table1"], work, env)
        checks["dvc_status"] = status.strip()
        checks["dvc_repro_dry_runs"] = re.findall(r"Running stage '([^']+)'", dry)
        rows.append({"what": "dvc adopt (render, commit -f, status)", "seconds": round(time.perf_counter() - t0, 1)})
    rows.append({"what": "total", "seconds": round(time.perf_counter() - t_total, 1)})
    print_table(rows, ["what", "seconds"])
    print(checks["table1"])
    settings = {"configs": configs, "models": args.models, "per_class": args.per_class,
                "reference_images": args.reference_images, "cores": args.cores, "front": front,
                "weights": "random (stand-ins)"}
    write_result("rehearsal" if front == "snakemake" else "rehearsal_dvc", settings, rows, checks,
                 out_dir=args.out or None,
                 extra_versions={"snakemake": _version("snakemake"), "dvc": _version("dvc")})


def _version(pkg: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(pkg)
    except PackageNotFoundError:
        return ""


if __name__ == "__main__":
    main()
