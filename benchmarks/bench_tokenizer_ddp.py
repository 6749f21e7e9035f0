"""The tokenizer stage under torchrun: the embedded default's `tokenizer` stage at world size 1 and N, timed, and
the two trained tokenizers compared (the same chunks of the same global batches, gradients summed over the ranks).

    python -m benchmarks.bench_tokenizer_ddp                 # world sizes 1 and 2 on the visible GPUs
    python -m benchmarks.bench_tokenizer_ddp --gpus 1 2 --micro 32 --configfile my_override.yaml
    python -m benchmarks.bench_tokenizer_ddp --gpus 1 2 --micro 8 --configfile configs/ci.yaml --out /tmp  # CPU smoke

Runs the stages `pipeline.stages.data` and `pipeline.stages.tokenizer` as the DAG does. Writes
benchmarks/results/tokenizer_ddp.json (or --out). Needs torch, numpy, pyyaml, rich and torch-fidelity (the stage's
rFID path imports it).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import ROOT, print_table, write_result
from var.checkpoint import load_model_checkpoint


def run(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=True)
    if res.returncode != 0:
        sys.stderr.write(res.stdout[-4000:] + res.stderr[-8000:])
        raise SystemExit(f"failed (exit {res.returncode}): {' '.join(cmd)}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_tokenizer_ddp",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--gpus", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--micro", type=int, default=32, help="tokenizer.train.micro_batch_size (chunk per pass)")
    ap.add_argument("--configfile", action="append", default=[], help="extra params override files")
    ap.add_argument("--out", default="", help="result directory (default benchmarks/results)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_tok_ddp_"))
    override = tmp / "micro.yaml"
    override.write_text(f"tokenizer:\n  train: {{micro_batch_size: {args.micro}}}\n")
    conf = [f"--configfile={c}" for c in [*args.configfile, str(override)]]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    py = sys.executable
    data = [f"--train={tmp}/train.npz", f"--val={tmp}/val.npz"]
    run([py, "-m", "pipeline.stages.data", "--params=params.yaml", *conf, *data, f"--classes={tmp}/classes.json",
         f"--log={tmp}/data.log"], env)
    rows, metrics = [], {}
    for n in args.gpus:
        out = tmp / f"w{n}"
        wall = run([py, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m",
                    "pipeline.stages.tokenizer", "--params=params.yaml", *conf, *data, f"--model={out}/model.pt",
                    f"--metrics={out}/metrics.json", f"--state-dir={out}/state", f"--log-file={out}/log.txt"], env)
        m = json.loads((out / "metrics.json").read_text())
        metrics[n] = m
        rows.append({"gpus": n, "steps": m["step"], "train img/s": round(m["train_img_per_s"], 1),
                     "stage wall s": round(wall, 1), "val PSNR": round(m["val_psnr"], 3),
                     "val usage %": round(m["val_usage_mean"], 1), "restarted codes": m["restarted_codes"]})
    base = args.gpus[0]
    wa = load_model_checkpoint(tmp / f"w{base}" / "model.pt", kind="vqvae")[0].state_dict()
    for row in rows:
        wb = load_model_checkpoint(tmp / f"w{row['gpus']}" / "model.pt", kind="vqvae")[0].state_dict()
        row["max |dW| vs first"] = f"{max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa):.2e}"
        row["speedup"] = round(row["train img/s"] / rows[0]["train img/s"], 2)
    print_table(rows, list(rows[0]))
    settings = {"gpus": args.gpus, "micro_batch_size": args.micro, "configfiles": args.configfile,
                "cuda": torch.cuda.is_available()}
    checks = {"same_restarts": len({r["restarted codes"] for r in rows}) == 1,
              "psnr_spread": max(r["val PSNR"] for r in rows) - min(r["val PSNR"] for r in rows)}
    write_result("tokenizer_ddp", settings, rows, checks, out_dir=args.out or None)


if __name__ == "__main__":
    main()
