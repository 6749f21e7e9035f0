"""Compare two rows of Tables 2/3 in one command: their recipes and every metric side by side, with the difference.

    python -m pipeline.compare_rows ROW_A ROW_B [--params params.yaml] [--configfile X] [--json]

Reads what the DAG wrote under runs/<run>/rows/<row>/ (train `metrics.json`, `sample_metrics.json`, `scores.json`; a row
with `model_from` shows its source model's training metrics). The same diff through DVC, after `dvc commit`:
`dvc metrics diff` between two experiments (`dvc exp run -n <row> ...`) or, within one run, this helper.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.params import load_params, params_to_dict
from pipeline.plan import resolve_output, row_context

FILES = {"train": "train_row.metrics", "sample": "sample_row.metrics", "score": "score_row.scores"}


def row_metrics(p, row: str, root: Path = Path(".")) -> dict:
    """Flat {'<file>.<key>': number} of one row (missing files are skipped and reported by the caller)."""
    out = {}
    for short, ref in FILES.items():
        path = root / resolve_output(p, ref, row_context(p, row))
        if not path.is_file():
            continue
        for k, v in json.loads(path.read_text()).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"{short}.{k}"] = v
    return out


def _flat(d: dict, prefix: str = "") -> dict:
    """Nested recipe keys as dotted ones ('sampler.cfg', 'sampler.rejection.threshold')."""
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def compare(p, a: str, b: str, root: Path = Path(".")) -> dict:
    for r in (a, b):
        if r not in p.rows:
            raise SystemExit(f"unknown row {r!r}; rows in params: {', '.join(p.rows)}")
    rec = {r: _flat(v) for r, v in params_to_dict(p)["rows"].items()}
    ma, mb = row_metrics(p, a, root), row_metrics(p, b, root)
    recipe = {k: (rec[a][k], rec[b][k]) for k in rec[a] if not k.startswith("train.") and rec[a][k] != rec[b][k]}
    metrics = {k: (ma.get(k), mb.get(k), (mb[k] - ma[k]) if k in ma and k in mb else None)
               for k in sorted(set(ma) | set(mb))}
    return {"rows": [a, b], "recipe_diff": recipe, "metrics": metrics}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.compare_rows", description=__doc__.split("\n")[0])
    ap.add_argument("row_a")
    ap.add_argument("row_b")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--configfile", action="append", default=[])
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    p = load_params(args.params, args.configfile)
    res = compare(p, args.row_a, args.row_b)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    a, b = args.row_a, args.row_b
    print(f"recipe ({a} -> {b}):")
    for k, (x, y) in res["recipe_diff"].items():
        print(f"  {k:24s} {x!s:>12} -> {y!s:<12}")
    if not res["metrics"]:
        print(f"no metrics yet under runs/{p.run.name}/rows/{{{a},{b}}}: run `snakemake --cores all table3` first",
              file=sys.stderr)
        return 1
    print(f"\n{'metric':36s} {a:>14s} {b:>14s} {'diff (B-A)':>12s}")
    for k, (x, y, d) in res["metrics"].items():
        f = lambda v: "" if v is None else f"{v:.5g}"
        print(f"{k:36s} {f(x):>14s} {f(y):>14s} {f(d):>12s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
