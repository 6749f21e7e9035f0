"""Stages `table3`, `table2` and `ablation` (`--table`): the rows of `table3.rows` (AR baseline first) beside the paper's Table 3
rows they mirror, with parameter count, inference cost and FID relative to the first row; or the higher-resolution
rows of `table2.rows` (setting `hires`: twice the base resolution with shared AdaLN; for ImageNet the 512 px
var-d36-s recipe) beside the paper's Table 2, with the validation-data row of that setting (`--valdata`)."""
from __future__ import annotations

import json

from eval.row_tables import build_table2, build_table3, table2_markdown, table3_markdown
from pipeline.common import annotate_measured, load_stage_params, run_stage, stage_parser, summary_of, with_provenance
from pipeline.params import load_params, params_to_dict
from var.io import atomic_write_json, atomic_write_text


def read_json(path) -> dict:
    with open(path) as f:
        return json.load(f)


def row_inputs(args, p) -> list[tuple]:
    n = len(args.rows)
    if not (len(args.scores) == len(args.train_metrics) == len(args.sample_metrics) == n):
        raise ValueError(f"--rows ({n}), --scores ({len(args.scores)}), --train-metrics ({len(args.train_metrics)}) "
                         f"and --sample-metrics ({len(args.sample_metrics)}) differ")
    missing = [r for r in args.rows if r not in p.rows]
    if missing:
        raise ValueError(f"rows {missing} are not in params `rows`")
    recipes = params_to_dict(p)["rows"]
    return [(r, recipes[r], read_json(s), read_json(t), read_json(g))
            for r, s, t, g in zip(args.rows, args.scores, args.train_metrics, args.sample_metrics)]


def main(args, log) -> dict:
    p = load_stage_params(args)
    if args.table == "ablation":            # the experiment's one row: params ablation.row
        args.rows = [p.ablation.row]
    rows = row_inputs(args, p)
    if args.table in ("table3", "ablation"):
        df = build_table3(rows)
        md = table3_markdown(df)
    else:
        res = load_params(args.params, args.configfile, setting="hires").data.image_size
        df = build_table2(rows, read_json(args.valdata) if args.valdata else None, res)
        md = table2_markdown(df)
    md, prov = with_provenance(md, args, p, samples=p.sample.per_class * p.data.num_classes)
    key = "row" if "row" in df.columns else "model"
    df = annotate_measured(df, key, {r: g for r, _, _, _, g in rows}, prov)
    atomic_write_text(args.csv, df.to_csv(index=False))
    atomic_write_text(args.md, md)
    summary = {r: summary_of(s, t, g) for r, _, s, t, g in rows}
    if args.table == "ablation":            # flat: `dvc metrics diff` between experiments compares the same keys
        summary = {"row": rows[0][0], **summary[rows[0][0]]}
    if args.valdata:
        summary["validation data"] = summary_of(read_json(args.valdata), {}, {})
    atomic_write_json(args.summary, summary)
    meas = df[df["source"] == "measured"]
    return {"rows": len(meas), **{f"FID[{getattr(r, key)}]": r.FID for r in meas.itertuples()}}


def cli(argv=None):
    ap = stage_parser("row_table", __doc__)
    ap.add_argument("--table", required=True, choices=("table2", "table3", "ablation"),
                    help="which table (ablation: the experiment's row, params ablation.row)")
    ap.add_argument("--rows", nargs="+", default=[], help="row names, in table order (not for ablation)")
    ap.add_argument("--scores", nargs="+", required=True, help="inputs: score JSON per row")
    ap.add_argument("--train-metrics", nargs="+", required=True, help="inputs: train metrics JSON per row")
    ap.add_argument("--sample-metrics", nargs="+", required=True, help="inputs: sample cost JSON per row")
    ap.add_argument("--valdata", default="", help="input (table2): validation-data score JSON of the hires setting")
    ap.add_argument("--md", required=True, help="output: Markdown table")
    ap.add_argument("--csv", required=True, help="output: CSV table")
    ap.add_argument("--summary", required=True, help="output: DVC metrics (every measured row)")
    run_stage("row_table", main, ap, argv)


if __name__ == "__main__":
    cli()
