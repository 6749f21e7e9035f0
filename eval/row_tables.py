"""Table builders for the rows of Tables 2 and 3 (pipeline/rows.py): the paper's reported rows beside ours.

Table 3 (paper Sec. 4.4, ablation from the AR baseline to VAR): `cost` is generation cost relative to the table's
first row (the AR baseline), as the paper's Cost column; we give both the measured wall-clock ratio (`cost`) and
the analytic transformer FLOPs ratio (`cost_flops`, eval/complexity.py), and `dFID` = FID - FID(row 1).
Paper rows (`source` = `paper`) are the paper's Tables 2 and 3 as printed (eval/paper.py).
"""
from __future__ import annotations

import math
from typing import Mapping

import pandas as pd

from eval import paper
from eval.seeds import Z_SIGNIFICANT, compare, summarize
from eval.tables import EXTRACTOR_NOTES, extractor_of, human_count, metric

T3_COLUMNS = ("row", "source", "#", "description", "kind", "model", "params", "AdaLN", "attn_norm", "top_k", "CFG",
              "sampling", "steps", "cost", "cost_flops", "FID", "FID_sd", "seeds", "dFID", "step_vs_previous", "IS",
              "extractor", "note")
T2_COLUMNS = ("model", "source", "type", "sampling", "FID", "IS", "Pre", "Rec", "params", "steps", "time",
              "s_per_image", "resolution", "extractor", "note")
PAPER_EXTRACTOR = "inception"      # the paper's Tables 2 and 3: Inception FID / IS, 50k samples
PAPER_T2_RESOLUTION = 512


def _yes(b: bool) -> str:
    return "yes" if b else "no"


def sampling_label(sampler: Mapping, rejection: Mapping | None = None) -> str:
    """How a row sampled, in words, e.g. 'CFG 4 linear ramp, top-k 19, top-p off' and, for a rejection-sampled
    ("-re") row, '; rejection, threshold 0.5, acceptance 0.62 (1.61 candidates per image, 3 of 40 dropped)'.
    `sampler`: a row's `sampler` (var.config.SamplerConfig as a dict); `rejection`: the measured counts of
    sample_metrics.json (None before sampling: the label still says rejection)."""
    cfg, k, p = sampler.get("cfg") or 0, sampler.get("top_k") or 0, sampler.get("top_p") or 0
    sched = "constant" if sampler.get("cfg_schedule") == "constant" else "linear ramp"
    parts = [f"CFG {cfg:g} {sched}" if cfg else "no CFG", f"top-k {k}" if k else "top-k off",
             f"top-p {p:g}" if p else "top-p off"] + (["more smooth"] if sampler.get("more_smooth") else [])
    text = ", ".join(parts)
    threshold = (rejection or {}).get("threshold", (sampler.get("rejection") or {}).get("threshold", 0))
    if rejection:
        text += (f"; rejection, threshold {threshold:g}, acceptance {rejection['acceptance_rate']:.3f} "
                 f"({rejection['candidates_per_image']:.2f} candidates per image, {rejection['dropped']} of "
                 f"{rejection['requested']} dropped)")
    elif threshold:
        text += f"; rejection, threshold {threshold:g}, acceptance not measured"
    return text


SAMPLING_NOTE = ("- `sampling` (measured rows): the row's sampler -- CFG with the reference's linear ramp (t = cfg k/(K-1) "
                 "at scale k) or constant (t = cfg), top-k, top-p. A rejection-sampled row (\"-re\") keeps only images "
                 "whose target class a classifier gives probability >= threshold (images with no accepted candidate "
                 "are dropped, and counted); its acceptance rate is accepted / candidates drawn, and its cost and FLOPs "
                 "count every candidate.")


def is_rejection(recipe: Mapping) -> bool:
    return bool(((recipe.get("sampler") or {}).get("rejection") or {}).get("threshold"))


def row_description(recipe: Mapping) -> str:
    """The description column: a rejection-sampled row is marked "-re" (as the paper's Table 1 marks them)."""
    desc = recipe.get("description", "")
    return f"{desc} (-re)".strip() if is_rejection(recipe) else desc


def measured_row3(name: str, recipe: Mapping, scores: Mapping, train_metrics: Mapping, sample_metrics: Mapping) -> dict:
    ex = extractor_of(scores)
    kind = recipe["kind"]
    model = kind.upper() + (f"-d{recipe['depth']}" if "depth" in recipe else "")
    sp = recipe.get("sampler") or {}
    cfg = sp.get("cfg") or 0
    return {"row": name, "source": "measured", "#": "", "description": row_description(recipe),
            "kind": kind, "model": model, "params": human_count(train_metrics.get("num_params")),
            "AdaLN": ("shared" if recipe.get("shared_aln") else "yes") if recipe.get("adaln") else "no",
            "attn_norm": _yes(recipe.get("attn_l2_norm")), "top_k": str(sp.get("top_k") or "no"),
            "CFG": (f"{cfg} constant" if sp.get("cfg_schedule") == "constant" else str(cfg)) if cfg else "no",
            "sampling": sampling_label(sp, sample_metrics.get("rejection")), "steps": sample_metrics.get("steps"),
            "FID": metric(scores, "fid", ex), "IS": metric(scores, "is", ex), "extractor": ex, "note": "",
            "FID_sd": scores.get(f"fid_{ex}_sd"), "seeds": scores.get("num_seeds"),
            "_fid_seeds": scores.get(f"fid_{ex}_per_seed") or [metric(scores, "fid", ex)],
            "_s": sample_metrics.get("seconds_per_image"), "_flops": sample_metrics.get("flops_per_image")}


def _paper_t3(name: str, key: str) -> paper.Table3Row:
    if key not in paper.TABLE3_BY_KEY:
        raise ValueError(f"rows.{name}.paper: {key!r} is not a row of the paper's Table 3 "
                         f"({list(paper.TABLE3_BY_KEY)})")
    return paper.TABLE3_BY_KEY[key]


def paper_row3(name: str, pr: paper.Table3Row) -> dict:
    """The paper's Table 3 row `pr` beside our row `name`: its cells as printed, cost/FID/Δ as numbers."""
    cells = paper.table3_cells(pr)
    notes = [f"the paper's row {pr.paper_number}"] if pr.paper_number != pr.number else []
    return {"row": name, "source": "paper", "#": cells["number"], "description": pr.description,
            "kind": "ar" if pr.model == "AR" else "var", "model": pr.model, "params": pr.params,
            "AdaLN": cells["adaln"], "attn_norm": _yes(pr.attn_norm), "top_k": cells["top_k"], "CFG": cells["cfg"],
            "steps": None, "cost": pr.cost, "cost_flops": None, "FID": pr.FID, "dFID": pr.delta, "IS": None,
            "extractor": PAPER_EXTRACTOR, "note": "; ".join(notes + ([pr.note] if pr.note else []))}


def build_table3(rows: list[tuple[str, Mapping, Mapping, Mapping, Mapping]]) -> pd.DataFrame:
    """rows: (name, recipe (RowConfig as a dict), scores, train metrics, sample metrics), the first is the baseline.
    Measured rows come first (cost / dFID relative to the first), then the paper's rows each mirrors."""
    if not rows:
        raise ValueError("table3 needs at least one row")
    meas = [measured_row3(*r) for r in rows]
    base = meas[0]
    for m in meas:
        m["cost"] = round(m["_s"] / base["_s"], 4) if m["_s"] and base["_s"] else None
        m["cost_flops"] = round(m["_flops"] / base["_flops"], 4) if m["_flops"] and base["_flops"] else None
        m["dFID"] = m["FID"] - base["FID"]
    for prev, cur in zip(meas, meas[1:]):   # each step against the row before it (eval/seeds.py's rule)
        cur["step_vs_previous"] = compare(summarize(prev["_fid_seeds"]), summarize(cur["_fid_seeds"])).verdict
    mirrored = [paper_row3(name, _paper_t3(name, recipe["paper"])) for name, recipe, *_ in rows if recipe.get("paper")]
    df = pd.DataFrame(meas + mirrored)
    df = df.drop(columns=[c for c in df.columns if c.startswith("_")]).reindex(columns=list(T3_COLUMNS))
    df["steps"] = df["steps"].astype("Int64")
    return df


def _cell(v, col: str) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    if col == "FID_sd":
        return f"{v:.2f}"
    if col in ("FID", "dFID"):
        return f"{v:+.2f}" if col == "dFID" else f"{v:.2f}"
    if col == "IS":
        return f"{v:.1f}"
    if col in ("cost", "cost_flops"):
        return f"{v:.3g}"
    if col == "s_per_image":
        return f"{v:.3g}"
    return str(v)


def markdown_lines(df: pd.DataFrame, cols, title: str, printed=None) -> list[str]:
    """The lines of a Markdown table of `df`'s `cols` under `title`, cells formatted per column. `printed(row)`: cells to show instead of the formatted values (the paper's rows as printed), or None."""
    lines = [title, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        shown = (printed(r) if printed else None) or {}
        lines.append("| " + " | ".join(shown.get(c, _cell(r[c], c)) for c in cols) + " |")
    return lines


_AR, _AR_TO_VAR = paper.TABLE3_BY_KEY["ar"], paper.TABLE3_BY_KEY["ar-to-var"]


def verdict(df: pd.DataFrame) -> str:
    """The honest one-paragraph answer: does VAR beat the AR baseline here, and at what cost."""
    meas = df[df["source"] == "measured"].reset_index(drop=True)
    if len(meas) < 2 or meas.loc[0, "kind"] != "ar":
        return "No AR baseline as the first row: no AR-vs-VAR verdict."
    ar = meas.loc[0]
    var = meas[meas["kind"] == "var"]
    first, best = var.iloc[0], var.loc[var["FID"].idxmin()]
    beats = first["FID"] < ar["FID"]
    s = (f"**VAR vs AR on this run:** the first VAR row (`{first['row']}`, same switches as the AR baseline) has "
         f"FID {first['FID']:.2f} vs the AR baseline's {ar['FID']:.2f} (`{ar['row']}`): VAR "
         f"{'beats' if beats else 'does NOT beat'} AR here (dFID {first['dFID']:+.2f}), at "
         f"{_cell(first['cost'], 'cost')}x its measured wall-clock and {_cell(first['cost_flops'], 'cost')}x its "
         f"transformer FLOPs. The best VAR row (`{best['row']}`) reaches FID {best['FID']:.2f} "
         f"(dFID {best['dFID']:+.2f}). The paper: {_AR.FID:.2f} -> {_AR_TO_VAR.FID:.2f} at {_AR_TO_VAR.cost:g}x the "
         f"cost.")
    if not beats:
        s += " On this tiny CPU-sized recipe the paper's ordering is not reproduced; see the rows above."
    return s


def table3_markdown(df: pd.DataFrame) -> str:
    cols = list(T3_COLUMNS)
    ex = sorted(set(df[df["source"] == "measured"]["extractor"].dropna()))
    lines = markdown_lines(df, cols, "# Table 3: from the raster-scan AR baseline to VAR, one switch at a time")
    lines += ["", verdict(df), "",
              "Rows with source `measured` were produced by this run (`rows:` in params.yaml); rows with source "
              "`paper` are the paper's Table 3 rows they mirror, as printed (ImageNet 256x256, Inception FID). "
              + paper.TABLE3_NOTE,
              *(f"- {EXTRACTOR_NOTES.get(e, e)}" for e in ex),
              "- `FID`: mean over the sampling seeds (`seeds`), `FID_sd` the spread of one seed's value; "
              "`step_vs_previous`: whether the row's FID change against the row above exceeds the noise, "
              f"|delta| > {Z_SIGNIFICANT:g} * sqrt(sd_prev^2 + sd_row^2) (eval/seeds.py; with one seed: not "
              "assessable).",
              "- `cost`: generation wall-clock per image relative to the first row (paper: relative to row 1); "
              "`cost_flops`: the same ratio of analytic transformer FLOPs (eval/complexity.py, KV cache, "
              "both samplers run conditional + unconditional halves); `steps`: sequential sampler steps (AR: one "
              "per token, VAR: one per scale); `dFID` = FID - FID(first row).", SAMPLING_NOTE, ""]
    return "\n".join(lines)


def paper_rows2() -> list[dict]:
    """The paper's Table 2, every row (ImageNet 512x512; `time` relative to VAR-d36-s)."""
    return [{"model": r.model, "source": "paper", "type": r.type, "FID": r.FID, "IS": r.IS, "time": r.time,
             "resolution": PAPER_T2_RESOLUTION, "extractor": PAPER_EXTRACTOR,
             "note": paper.note(r, paper.TABLE2_HEADERS)} for r in paper.TABLE2]


def build_table2(rows: list[tuple[str, Mapping, Mapping, Mapping, Mapping]], valdata_scores: Mapping | None,
                 resolution: int) -> pd.DataFrame:
    """Paper rows, then ours: `time` is wall-clock per image relative to our largest row (the paper's: to
    VAR-d36-s, its largest)."""
    out = []
    for name, recipe, scores, tm, sm in rows:
        ex = extractor_of(scores)
        out.append({"model": name, "source": "measured", "type": recipe["kind"].upper(),
                    "sampling": sampling_label(recipe.get("sampler") or {}, sm.get("rejection")),
                    "FID": metric(scores, "fid", ex), "IS": metric(scores, "is", ex),
                    "Pre": metric(scores, "precision", ex), "Rec": metric(scores, "recall", ex),
                    "params": human_count(tm.get("num_params")), "steps": sm.get("steps"),
                    "s_per_image": sm.get("seconds_per_image"), "resolution": resolution, "extractor": ex,
                    "note": row_description(recipe), "_n": tm.get("num_params")})
    timed = [r for r in out if r["s_per_image"] and r["_n"]]
    if timed:
        largest = max(timed, key=lambda r: r["_n"])
        for r in timed:
            r["time"] = round(r["s_per_image"] / largest["s_per_image"], 3)
    if valdata_scores is not None:
        ex = extractor_of(valdata_scores)
        out.append({"model": "validation data", "source": "measured", "FID": metric(valdata_scores, "fid", ex),
                    "IS": metric(valdata_scores, "is", ex), "Pre": metric(valdata_scores, "precision", ex),
                    "Rec": metric(valdata_scores, "recall", ex), "resolution": resolution, "extractor": ex})
    df = pd.DataFrame(paper_rows2() + out).reindex(columns=list(T2_COLUMNS))
    df["steps"] = df["steps"].astype("Int64")
    return df


_T2_BY_MODEL = {r.model: r for r in paper.TABLE2}


def table2_markdown(df: pd.DataFrame) -> str:
    cols = list(T2_COLUMNS)
    ex = sorted(set(df[df["source"] == "measured"]["extractor"].dropna()))

    def printed(r):
        if r["source"] == "paper" and r["model"] in _T2_BY_MODEL:
            return paper.table2_cells(_T2_BY_MODEL[r["model"]])
        return None
    lines = markdown_lines(df, cols, "# Table 2: the higher-resolution setting", printed)
    lines += ["", "Paper rows: the paper's Table 2 as printed (ImageNet 512x512, Inception FID/IS; `—`: not "
              f"reported; `†`: {paper.MARKS['†']}; Time relative to VAR-d36-s). Measured rows: this run's `hires` "
              "setting (twice the base resolution, shared AdaLN as var-d36-s), scored with its own evaluation "
              "network -- compare measured rows with each other and with the validation-data floor, not with the "
              "paper.",
              *(f"- {EXTRACTOR_NOTES.get(e, e)}" for e in ex), SAMPLING_NOTE, ""]
    return "\n".join(lines)
