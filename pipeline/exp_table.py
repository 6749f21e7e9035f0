"""Table 3 (or any list of rows) built from DVC experiments, one experiment per row.

    python -m pipeline.exp_table [--params params.yaml] [--configfile X] [--rows ROW ...] [--json EXP_SHOW_JSON]

Each experiment ran the `ablation` stages for one row (`dvc exp run -n <row> -S ablation.row=<row> ablation`, or
queued with `--queue` and run by `dvc queue start`), so its commit holds that row's `metrics/<run>/ablation.json`.
This reads every experiment through `dvc exp show --json` (or a saved copy of that output, `--json`), keeps the
newest experiment of each row, and writes `results/<run>/table3_experiments.{md,csv}` with the rows in the order of
`--rows` (default: `table3.rows`): FID (mean and sd over the sampling seeds, the bootstrap interval of the first
seed), IS, precision, recall, class accuracy, val loss, the sampler in words (a rejection-sampled row says so), the
cost and FID change against the first row, and whether each step is significant against the row before it (the
`table3` stage's rule, eval/seeds.py), as the `table3` stage reports them. A row with no experiment is listed as
missing; nothing is read from the workspace.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from eval.row_tables import is_rejection, markdown_lines, sampling_label
from eval.seeds import SeedSummary, compare
from pipeline.common import with_provenance
from pipeline.params import load_params
from var.io import atomic_write_text

COLUMNS = ("row", "experiment", "rev", "description", "sampling", "FID", "FID_sd", "seeds", "FID_ci", "IS", "Pre",
           "Rec", "class_acc", "val_loss", "cost", "cost_flops", "dFID", "step_vs_previous")


def experiments(exp_show: list, run: str) -> dict[str, dict]:
    """{row: the newest experiment's record} from `dvc exp show --json` output: name, rev, timestamp, the row's
    recipe (the experiment's params.yaml) and its ablation metrics."""
    path = f"metrics/{run}/ablation.json"
    found: dict[str, dict] = {}
    for baseline in exp_show:
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                metrics = ((data.get("metrics") or {}).get(path) or {}).get("data")
                if not metrics or "row" not in metrics:
                    continue
                params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
                rec = {"experiment": rev.get("name") or exp.get("name") or "", "rev": (rev.get("rev") or "")[:7],
                       "timestamp": data.get("timestamp") or "", "metrics": metrics,
                       "recipe": (params.get("rows") or {}).get(metrics["row"], {})}
                old = found.get(metrics["row"])
                if old is None or rec["timestamp"] > old["timestamp"]:
                    found[metrics["row"]] = rec
    return found


def _fid_summary(m: dict) -> SeedSummary:
    n = int(m.get("num_seeds") or 1)
    return SeedSummary(float(m["fid_evalnet"]), float(m["fid_evalnet_sd"]) if n > 1 else float("nan"), n)


def build(found: dict[str, dict], rows: list[str]) -> pd.DataFrame:
    out, first, prev = [], None, None
    for row in rows:
        rec = found.get(row)
        if rec is None:
            out.append({"row": row, "experiment": "(missing)"})
            prev = None
            continue
        m, recipe = rec["metrics"], rec["recipe"]
        lo, hi = m.get("fid_evalnet_ci_low"), m.get("fid_evalnet_ci_high")
        r = {"row": row, "experiment": rec["experiment"], "rev": rec["rev"],
             "description": recipe.get("description", ""),
             "sampling": sampling_label(recipe.get("sampler") or {}) if recipe else "",
             "FID": m.get("fid_evalnet"), "FID_sd": m.get("fid_evalnet_sd"), "seeds": m.get("num_seeds"),
             "FID_ci": f"[{lo:.2f}, {hi:.2f}]" if lo is not None else "",
             "IS": m.get("is_evalnet"), "Pre": m.get("precision_evalnet"), "Rec": m.get("recall_evalnet"),
             "class_acc": m.get("class_acc"), "val_loss": m.get("val_loss")}
        if is_rejection(recipe):
            r["description"] = f"{r['description']} (-re: rejection sampling)"
        if first is None:
            first = m
        r["cost"] = m["sec_per_image"] / first["sec_per_image"] if m.get("sec_per_image") else None
        r["cost_flops"] = m["flops_per_image"] / first["flops_per_image"] if m.get("flops_per_image") else None
        r["dFID"] = m["fid_evalnet"] - first["fid_evalnet"] if m.get("fid_evalnet") is not None else None
        if prev is not None and m.get("fid_evalnet") is not None:   # a missing row breaks the chain of steps
            r["step_vs_previous"] = compare(_fid_summary(prev), _fid_summary(m)).verdict
        prev = m if m.get("fid_evalnet") is not None else None
        out.append(r)
    return pd.DataFrame(out, columns=list(COLUMNS))


def markdown(df: pd.DataFrame, run: str) -> str:
    shown = df.assign(class_acc=[f"{v:.1%}" if v == v and v is not None else "" for v in df.class_acc],
                      **{c: df[c].round(3) for c in ("Pre", "Rec", "val_loss")})
    lines = markdown_lines(shown, COLUMNS, f"# Table 3 from DVC experiments (run `{run}`)")
    lines += ["", "- One DVC experiment per row (the newest per row); FID, IS, Pre, Rec and class accuracy on the "
              "evaluation network's features, means over the experiment's `seeds` sampling seeds (`FID_sd`: their sd; "
              "a rejection-sampled row is scored on one seed), `FID_ci` the bootstrap interval of the first seed.",
              "- `step_vs_previous`: the FID change against the row above is significant when "
              "|delta| > 2 sqrt(sd_a^2 + sd_b^2) (eval/seeds.py); with one seed on either side it is not assessable.",
              "- `cost`: sampling wall-clock per image relative to the first row; `cost_flops`: analytic transformer "
              "FLOPs per image relative to it; `dFID`: FID minus the first row's.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.exp_table", description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--configfile", action="append", default=[])
    ap.add_argument("--rows", nargs="+", help="rows in table order (default: table3.rows)")
    ap.add_argument("--json", help="a saved `dvc exp show --json` output instead of running it")
    args = ap.parse_args(argv)
    p = load_params(args.params, args.configfile)
    rows = args.rows or list(p.table3.rows)
    unknown = [r for r in rows if r not in p.rows]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; rows in params: {', '.join(p.rows)}")
    if args.json:
        exp_show = json.loads(Path(args.json).read_text())
    else:
        res = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], capture_output=True, text=True)
        if res.returncode:
            raise SystemExit(f"`dvc exp show --json` failed: {res.stderr.strip()}")
        exp_show = json.loads(res.stdout)
    df = build(experiments(exp_show, p.run.name), rows)
    out = Path("results") / p.run.name
    out.mkdir(parents=True, exist_ok=True)
    md, _ = with_provenance(markdown(df, p.run.name), args, p)    # a smoke-test config says so in the title
    atomic_write_text(out / "table3_experiments.md", md)
    atomic_write_text(out / "table3_experiments.csv", df.to_csv(index=False))
    print(md)
    missing = [r["row"] for r in df.to_dict("records") if r["experiment"] == "(missing)"]
    if missing:
        print(f"no experiment yet for: {', '.join(missing)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
