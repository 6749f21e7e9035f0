"""Stage `scaling`: power-law fits of the depth sweep (paper Fig. 5-6, eq. 11-16), beside the paper's numbers.

Fits L = (beta X)^alpha in log-log space for X = N (final checkpoint of each depth) and X = C (the C_min Pareto
frontier over all checkpoints), for L_last, L_mean, Err_last, Err_mean (eval/scaling.py). Writes the fit table
(CSV, Markdown with the points), two log-log PNG figures, and the points as CSV for `dvc plots` (log10 columns, so
DVC's linear axes show the log-log plot).
"""
from __future__ import annotations

import json
import math

import numpy as np

from eval.scaling import TARGETS, X_UNITS, fit_table, pareto_frontier
from pipeline.common import load_stage_params, run_stage, stage_parser
from var.io import atomic_path, atomic_write_json, atomic_write_text

LABEL = {"L_last": "test loss, last scale", "L_mean": "test loss, mean over scales",
         "err_last": "token error rate, last scale", "err_mean": "token error rate, mean over scales"}
AXIS = {"N": "parameters N (billions)", "C": "training compute C (PFLOPs)"}


def fmt(v, spec=".4g"):
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def fits_markdown(rows: list[dict], points: list[dict], info: dict) -> str:
    out = ["# Scaling laws on this run (paper Fig. 5-6, eq. 11-16)", "",
           f"Fits L = (beta * X)^alpha by least squares in log-log space; N in billions of parameters, C in PFLOPs "
           f"(the paper's units). X = N: the final checkpoint of each depth; X = C: the Pareto frontier (C_min) of "
           f"all {len(points)} checkpoints. Val sequences: {info.get('val_sequences')}. The paper's beta is "
           f"comparable only on ImageNet at its scale; alpha and Pearson r are unit-free. A power law holds where "
           f"|r| is close to 1 *and* the points lie on the line in results/scaling_N.png / scaling_C.png.", "",
           "| X | target | alpha | beta | Pearson r | points | paper alpha | paper beta | paper r |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['x']} | {r['target']} | {fmt(r['alpha'])} | {fmt(r['beta'])} | {fmt(r['pearson_r'], '.4f')} "
                   f"| {r['points']} | {r['paper_alpha']} | {r['paper_beta']} | {r['paper_pearson_r']} |")
    out += ["", "## Points (every checkpoint; * = on the C_min frontier of L_mean)", "",
            "| depth | width | N | fraction | step | C (FLOPs) | L_last | L_mean | err_last | err_mean |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    front = set(pareto_frontier([q["C"] for q in points], [q["L_mean"] for q in points]).tolist())
    for i, q in enumerate(points):
        out.append(f"| {q['depth']} | {q['width']} | {q['N']} | {q['fraction']:g}{'*' if i in front else ''} | "
                   f"{q['step']} | {q['C']:.4g} | {q['L_last']:.4f} | {q['L_mean']:.4f} | {q['err_last']:.4f} | "
                   f"{q['err_mean']:.4f} |")
    return "\n".join(out) + "\n"


def plot(path, xname: str, points: list[dict], rows: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    depths = sorted({q["depth"] for q in points})
    cmap = plt.get_cmap("viridis")
    for ax, t in zip(axes, TARGETS):
        fit = next(r for r in rows if r["x"] == xname and r["target"] == t)
        if xname == "N":
            sel = [q for q in points if q["fraction"] == 1.0]
            ax.scatter([q["N"] / X_UNITS["N"] for q in sel], [q[t] for q in sel], c="C0", zorder=3)
            for q in sel:
                ax.annotate(f"d{q['depth']}", (q["N"] / X_UNITS["N"], q[t]), fontsize=7)
        else:
            for d in depths:
                qs = [q for q in points if q["depth"] == d]
                ax.plot([q["C"] / X_UNITS["C"] for q in qs], [q[t] for q in qs], "-o", ms=3, lw=0.8, alpha=0.6,
                        color=cmap(depths.index(d) / max(len(depths) - 1, 1)), label=f"d{d}")
            front = pareto_frontier([q["C"] for q in points], [q[t] for q in points])
            sel = [points[i] for i in front]
            ax.scatter([q["C"] / X_UNITS["C"] for q in sel], [q[t] for q in sel], marker="*", s=70, c="k",
                       zorder=4, label="C_min frontier")
            ax.legend(fontsize=6)
        xs = np.array([q[xname] / X_UNITS[xname] for q in sel])
        if np.isfinite(fit["alpha"]) and len(xs) > 1:
            grid = np.geomspace(xs.min(), xs.max(), 50)
            ax.plot(grid, (fit["beta"] * grid) ** fit["alpha"], "r--", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(AXIS[xname])
        ax.set_title(f"{LABEL[t]}\nL=({fmt(fit['beta'], '.3g')}·X)^{fmt(fit['alpha'], '.3g')}, "
                     f"r={fmt(fit['pearson_r'], '.3f')} (paper {fit['paper_alpha']})", fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def plot_csv(points: list[dict], xname: str) -> str:
    """Points for `dvc plots` with log10 columns (DVC's templates have linear axes)."""
    sel = [q for q in points if q["fraction"] == 1.0] if xname == "N" else points
    front = set(pareto_frontier([q["C"] for q in points], [q["L_mean"] for q in points]).tolist())
    head = ["depth", "fraction", f"log10_{xname}", *(f"log10_{t}" for t in TARGETS)]
    if xname == "C":
        head.append("on_frontier_L_mean")
    lines = [",".join(head)]
    for i, q in enumerate(points):
        if q not in sel:
            continue
        vals = [str(q["depth"]), f"{q['fraction']:g}", f"{math.log10(q[xname] / X_UNITS[xname]):.6f}",
                *(f"{math.log10(q[t]):.6f}" if q[t] > 0 else "nan" for t in TARGETS)]
        if xname == "C":
            vals.append(str(int(i in front)))
        lines.append(",".join(vals))
    return "\n".join(lines) + "\n"


def main(args, log) -> dict:
    load_stage_params(args)
    with open(args.points) as f:
        info = json.load(f)
    points = info["points"]
    rows = fit_table(points)
    head = list(rows[0])
    atomic_write_text(args.csv, "\n".join([",".join(head)] + [",".join(str(r[k]) for k in head) for r in rows])
                      + "\n")
    atomic_write_text(args.md, fits_markdown(rows, points, info))
    plot(args.plot_n, "N", points, rows)
    plot(args.plot_c, "C", points, rows)
    atomic_write_text(args.points_n, plot_csv(points, "N"))
    atomic_write_text(args.points_c, plot_csv(points, "C"))
    metrics = {f"{r['x']}.{r['target']}": {"alpha": r["alpha"], "beta": r["beta"], "pearson_r": r["pearson_r"]}
               for r in rows}
    atomic_write_json(args.metrics, metrics)
    return {f"alpha[{r['x']},{r['target']}]": r["alpha"] for r in rows if r["target"] == "L_mean"} | \
        {f"r[{r['x']},L_mean]": r["pearson_r"] for r in rows if r["target"] == "L_mean"}


def cli(argv=None):
    ap = stage_parser("scaling", __doc__)
    ap.add_argument("--points", required=True, help="input: sweep points JSON (scaling_train)")
    for name, what in (("csv", "fit table CSV"), ("md", "fit table + points Markdown"), ("plot-n", "PNG vs N"),
                       ("plot-c", "PNG vs C"), ("points-n", "DVC plot CSV vs N"), ("points-c", "DVC plot CSV vs C"),
                       ("metrics", "fits JSON")):
        ap.add_argument(f"--{name}", required=True, help=f"output: {what}")
    run_stage("scaling", main, ap, argv)


if __name__ == "__main__":
    cli()
