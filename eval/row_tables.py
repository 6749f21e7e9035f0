"""Table builders for the rows of Tables 2 and 3 (pipeline/rows.py): the paper's reported rows beside ours.

Table 3 (paper Sec. 4.4, ablation from the AR baseline to VAR): `cost` is generation cost relative to the table's
first row (the AR baseline), as the paper's Cost column; we give both the measured wall-clock ratio (`cost`) and
the analytic transformer FLOPs ratio (`cost_flops`, eval/complexity.py), and `dFID` = FID - FID(row 1).
"""
from __future__ import annotations

import math
from typing import Mapping

import pandas as pd

from eval.tables import EXTRACTOR_NOTES, extractor_of, human_count, metric

# The paper's Table 3 (ImageNet 256x256, Inception FID, 50k samples). Rows 1-2 are also quoted in the paper's text
# (FID 18.65 -> 5.22 at 0.013x the cost); the other values are marked as recalled: check them against
# arXiv:2404.02905, Table 3 before relying on them. The paper numbers two rows "5".
PAPER_TABLE3 = {
    "ar":        {"#": "1", "description": "AR (GPT-2, VQGAN tokenizer)", "params": "227M", "model": "GPT2",
                  "AdaLN": "no", "top_k": "no", "CFG": "no", "cost": 1.0, "FID": 18.65, "note": ""},
    "ar-to-var": {"#": "2", "description": "AR to VAR", "params": "207M", "model": "VAR-d16", "AdaLN": "no",
                  "top_k": "no", "CFG": "no", "cost": 0.013, "FID": 5.22, "note": ""},
    "adaln":     {"#": "3", "description": "+AdaLN", "params": "310M", "model": "VAR-d16", "AdaLN": "yes",
                  "top_k": "no", "CFG": "no", "cost": 0.016, "FID": 4.95, "note": "recalled, unverified"},
    "top-k":     {"#": "4", "description": "+Top-k", "params": "310M", "model": "VAR-d16", "AdaLN": "yes",
                  "top_k": "600", "CFG": "no", "cost": 0.016, "FID": 4.64, "note": "recalled, unverified"},
    "cfg":       {"#": "5", "description": "+CFG", "params": "310M", "model": "VAR-d16", "AdaLN": "yes",
                  "top_k": "600", "CFG": "2.0", "cost": 0.022, "FID": 3.60, "note": "recalled, unverified"},
    "attn-norm": {"#": "5", "description": "+Attn. Norm.", "params": "310M", "model": "VAR-d16", "AdaLN": "yes",
                  "top_k": "600", "CFG": "2.0", "cost": 0.022, "FID": 3.30,
                  "note": "recalled, unverified (= Table 1 VAR-d16)"},
    "scale-up":  {"#": "6", "description": "+Scale up", "params": "2.0B", "model": "VAR-d30", "AdaLN": "yes",
                  "top_k": "600", "CFG": "2.0", "cost": 0.052, "FID": 1.73, "note": "recalled, unverified"},
}
PAPER_AR_FID = PAPER_TABLE3["ar"]["FID"]

# The paper's Table 2 (ImageNet 512x512, Inception FID / IS). Recalled from the paper; only the VAR row is cross-
# checked with the released model card. Times are left out (not recalled reliably).
PAPER_TABLE2 = (
    {"model": "BigGAN", "type": "GAN", "FID": 8.43, "IS": 177.9, "note": "recalled, unverified"},
    {"model": "ADM", "type": "Diff.", "FID": 7.72, "IS": 172.7, "note": "recalled, unverified"},
    {"model": "DiT-XL/2", "type": "Diff.", "FID": 3.04, "IS": 240.8, "note": "recalled, unverified"},
    {"model": "MaskGIT", "type": "Mask.", "FID": 7.32, "IS": 156.0, "note": "recalled, unverified"},
    {"model": "VQGAN", "type": "AR", "FID": 26.52, "IS": 66.8, "note": "recalled, unverified"},
    {"model": "VAR-d36-s", "type": "VAR", "FID": 2.63, "IS": 303.2, "note": ""},
)

T3_COLUMNS = ("row", "source", "#", "description", "kind", "params", "AdaLN", "attn_norm", "top_k", "CFG", "steps",
              "cost", "cost_flops", "FID", "dFID", "IS", "extractor", "note")
T2_COLUMNS = ("model", "source", "type", "FID", "IS", "Pre", "Rec", "params", "steps", "s_per_image", "resolution",
              "extractor", "note")


def _yes(b: bool) -> str:
    return "yes" if b else "no"


def measured_row3(name: str, recipe: Mapping, scores: Mapping, train_metrics: Mapping, sample_metrics: Mapping) -> dict:
    ex = extractor_of(scores)
    return {"row": name, "source": "measured", "#": "", "description": recipe.get("description", ""),
            "kind": recipe["kind"], "params": human_count(train_metrics.get("num_params")),
            "AdaLN": ("shared" if recipe.get("shared_aln") else "yes") if recipe.get("adaln") else "no",
            "attn_norm": _yes(recipe.get("attn_l2_norm")), "top_k": str(recipe.get("top_k") or "no"),
            "CFG": str(recipe.get("cfg") or "no"), "steps": sample_metrics.get("steps"),
            "FID": metric(scores, "fid", ex), "IS": metric(scores, "is", ex), "extractor": ex, "note": "",
            "_s": sample_metrics.get("seconds_per_image"), "_flops": sample_metrics.get("flops_per_image")}


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
    paper = []
    for name, recipe, *_ in rows:
        key = recipe.get("paper", "")
        if key and key in PAPER_TABLE3:
            pr = PAPER_TABLE3[key]
            paper.append({**pr, "row": name, "source": "paper", "kind": "ar" if key == "ar" else "var",
                          "attn_norm": "yes" if key in ("attn-norm", "scale-up") else "no", "cost_flops": None,
                          "dFID": round(pr["FID"] - PAPER_AR_FID, 2), "IS": None, "steps": None,
                          "extractor": "inception", "params": pr["params"]})
    df = pd.DataFrame(meas + paper)
    df = df.drop(columns=[c for c in df.columns if c.startswith("_")]).reindex(columns=list(T3_COLUMNS))
    df["steps"] = df["steps"].astype("Int64")
    return df


def _cell(v, col: str) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    if col in ("FID", "dFID"):
        return f"{v:+.2f}" if col == "dFID" else f"{v:.2f}"
    if col == "IS":
        return f"{v:.1f}"
    if col in ("cost", "cost_flops"):
        return f"{v:.3g}"
    if col == "s_per_image":
        return f"{v:.3g}"
    return str(v)


def _markdown(df: pd.DataFrame, cols, title: str) -> list[str]:
    lines = [title, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_cell(r[c], c) for c in cols) + " |")
    return lines


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
         f"(dFID {best['dFID']:+.2f}). The paper: 18.65 -> 5.22 at 0.013x the cost.")
    if not beats:
        s += " On this tiny CPU-sized recipe the paper's ordering is not reproduced; see the rows above."
    return s


def table3_markdown(df: pd.DataFrame) -> str:
    cols = list(T3_COLUMNS)
    ex = sorted(set(df[df["source"] == "measured"]["extractor"].dropna()))
    lines = _markdown(df, cols, "# Table 3: from the raster-scan AR baseline to VAR, one switch at a time")
    lines += ["", verdict(df), "",
              "Rows with source `measured` were produced by this run (`rows:` in params.yaml); rows with source "
              "`paper` are the paper's Table 3 rows they mirror (ImageNet 256x256, Inception FID). Values marked "
              "'recalled, unverified' are from memory of the paper: check arXiv:2404.02905 before quoting them.",
              *(f"- {EXTRACTOR_NOTES.get(e, e)}" for e in ex),
              "- `cost`: generation wall-clock per image relative to the first row (paper: relative to row 1); "
              "`cost_flops`: the same ratio of analytic transformer FLOPs (eval/complexity.py, KV cache, "
              "both samplers run conditional + unconditional halves); `steps`: sequential sampler steps (AR: one "
              "per token, VAR: one per scale); `dFID` = FID - FID(first row).", ""]
    return "\n".join(lines)


def build_table2(rows: list[tuple[str, Mapping, Mapping, Mapping, Mapping]], valdata_scores: Mapping | None,
                 resolution: int) -> pd.DataFrame:
    out = [{**r, "source": "paper", "resolution": 512, "extractor": "inception"} for r in PAPER_TABLE2]
    for name, recipe, scores, tm, sm in rows:
        ex = extractor_of(scores)
        out.append({"model": name, "source": "measured", "type": recipe["kind"].upper(),
                    "FID": metric(scores, "fid", ex), "IS": metric(scores, "is", ex),
                    "Pre": metric(scores, "precision", ex), "Rec": metric(scores, "recall", ex),
                    "params": human_count(tm.get("num_params")), "steps": sm.get("steps"),
                    "s_per_image": sm.get("seconds_per_image"), "resolution": resolution, "extractor": ex,
                    "note": recipe.get("description", "")})
    if valdata_scores is not None:
        ex = extractor_of(valdata_scores)
        out.append({"model": "validation data", "source": "measured", "FID": metric(valdata_scores, "fid", ex),
                    "IS": metric(valdata_scores, "is", ex), "Pre": metric(valdata_scores, "precision", ex),
                    "Rec": metric(valdata_scores, "recall", ex), "resolution": resolution, "extractor": ex})
    df = pd.DataFrame(out).reindex(columns=list(T2_COLUMNS))
    df["steps"] = df["steps"].astype("Int64")
    return df


def table2_markdown(df: pd.DataFrame) -> str:
    cols = list(T2_COLUMNS)
    ex = sorted(set(df[df["source"] == "measured"]["extractor"].dropna()))
    lines = _markdown(df, cols, "# Table 2: the higher-resolution setting")
    lines += ["", "Paper rows: ImageNet 512x512 (Inception FID/IS; 'recalled, unverified' = from memory of the "
              "paper, check arXiv:2404.02905). Measured rows: this run's `hires` setting (twice the base "
              "resolution, shared AdaLN as var-d36-s), scored with its own evaluation network -- compare measured "
              "rows with each other and with the validation-data floor, not with the paper.",
              *(f"- {EXTRACTOR_NOTES.get(e, e)}" for e in ex), ""]
    return "\n".join(lines)
