"""Stage `table1`: `results/table1.md` and `results/table1.csv` from the score, train and sample metrics."""
from __future__ import annotations

import json

from eval.tables import build_table1, table1_markdown
from pipeline.common import annotate_measured, load_stage_params, run_stage, stage_parser, summary_of, with_provenance
from var.io import atomic_write_json, atomic_write_text


def read_json(path) -> dict:
    with open(path) as f:
        return json.load(f)


def main(args, log) -> dict:
    p = load_stage_params(args)   # table1.models decides the --models list in the DAG
    n = len(args.models)
    if not (len(args.scores) == len(args.train_metrics) == len(args.sample_metrics) == n):
        raise ValueError(f"--models ({n}), --scores ({len(args.scores)}), --train-metrics "
                         f"({len(args.train_metrics)}) and --sample-metrics ({len(args.sample_metrics)}) differ")
    rows = [(m, read_json(s), read_json(t), read_json(g))
            for m, s, t, g in zip(args.models, args.scores, args.train_metrics, args.sample_metrics)]
    valdata = read_json(args.valdata) if args.valdata else None
    df = build_table1(rows, valdata)
    md, prov = with_provenance(table1_markdown(df), args, p, samples=p.sample.per_class * p.data.num_classes)
    df = annotate_measured(df, "model", {m: g for m, _, _, g in rows}, prov)
    atomic_write_text(args.csv, df.to_csv(index=False))
    atomic_write_text(args.md, md)
    atomic_write_json(args.summary, {m: summary_of(s, t, g) for m, s, t, g in rows}
                      | ({"validation data": summary_of(valdata, {}, {})} if valdata else {}))
    meas = df[df["source"] == "measured"]
    return {"rows": len(df), **{f"FID[{r.model}]": r.FID for r in meas.itertuples()}}


def cli(argv=None):
    ap = stage_parser("table1", __doc__)
    ap.add_argument("--models", nargs="+", required=True, help="measured model names, in table order")
    ap.add_argument("--scores", nargs="+", required=True, help="inputs: score JSON per model")
    ap.add_argument("--train-metrics", nargs="+", required=True, help="inputs: train metrics JSON per model")
    ap.add_argument("--sample-metrics", nargs="+", required=True, help="inputs: sample timing JSON per model")
    ap.add_argument("--valdata", default="", help="input (when a validation split is configured): validation-data "
                                                  "score JSON")
    ap.add_argument("--md", required=True, help="output: Markdown table")
    ap.add_argument("--csv", required=True, help="output: CSV table")
    ap.add_argument("--summary", required=True, help="output: DVC metrics (every measured row)")
    run_stage("table1", main, ap, argv)


if __name__ == "__main__":
    cli()
