"""Table builders. Table 1 (paper Sec. 4.1): the paper's VAR rows beside the rows measured by this pipeline.

Rows carry `source` = `paper` (numbers copied from the paper's Table 1, ImageNet 256x256, Inception features) or
`measured` (ours, from the score / train / sample metrics JSON files). `time` is generation wall-clock relative
to the largest measured VAR model, as the paper's Time column is relative to VAR-d30.
"""
from __future__ import annotations

import math
from typing import Mapping

import pandas as pd

COLUMNS = ("model", "source", "FID", "IS", "Pre", "Rec", "params", "steps", "time", "extractor")
# "The model learns": the same architecture at its initial weights, sampled and scored alike (measured rows only).
LEARNING_COLUMNS = ("FID_untrained", "class_acc", "class_acc_untrained")

# Paper Table 1 (VAR rows and the validation-data row). Inception-v3 features, 50k samples, ImageNet 256.
PAPER_ROWS = (
    {"model": "VAR-d16", "FID": 3.30, "IS": 274.4, "Pre": 0.84, "Rec": 0.51, "params": "310M", "steps": 10, "time": 0.4},
    {"model": "VAR-d20", "FID": 2.57, "IS": 302.6, "Pre": 0.83, "Rec": 0.56, "params": "600M", "steps": 10, "time": 0.5},
    {"model": "VAR-d24", "FID": 2.09, "IS": 312.9, "Pre": 0.82, "Rec": 0.59, "params": "1.0B", "steps": 10, "time": 0.6},
    {"model": "VAR-d30", "FID": 1.92, "IS": 323.1, "Pre": 0.82, "Rec": 0.59, "params": "2.0B", "steps": 10, "time": 1.0},
    {"model": "validation data", "FID": 1.78, "IS": 236.9, "Pre": 0.75, "Rec": 0.67, "params": "", "steps": None,
     "time": None},
)
PAPER_EXTRACTOR = "inception"

EXTRACTOR_NOTES = {
    "evalnet": ("FID/IS/Pre/Rec of the measured rows use the offline evaluation network (evalnet) trained on this "
                "dataset: FID here is evalnet-FID, not comparable to Inception FID; the paper rows are Inception "
                "scores on ImageNet 256x256."),
    "inception": ("FID/IS/Pre/Rec of the measured rows use Inception-v3 (torch-fidelity `inception-v3-compat`, "
                  "the standard evaluator's network); they are comparable to the paper rows only on ImageNet "
                  "256x256 with 50 samples per class against the standard reference batch."),
}


def human_count(n: float | int | None) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return ""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(int(n))


def metric(scores: Mapping, name: str, extractor: str) -> float:
    """`fid`/`is`/`precision`/`recall` of a score JSON for `extractor` (keys are `fid_evalnet`, ...)."""
    key = f"{name}_{extractor}"
    if key not in scores:
        raise KeyError(f"score JSON {scores.get('name', '')!r} has no {key!r} (keys: {sorted(scores)})")
    return float(scores[key])


def extractor_of(scores: Mapping) -> str:
    # fid_<extractor>; derived keys such as fid_evalnet_untrained carry a further suffix and are not extractors
    names = {k[4:] for k in scores if k.startswith("fid_") and "_" not in k[4:]}
    if len(names) != 1:
        raise ValueError(f"score JSON {scores.get('name', '')!r}: expected one fid_<extractor> key, got {names}")
    return names.pop()


def measured_row(name: str, scores: Mapping, train_metrics: Mapping | None = None,
                 sample_metrics: Mapping | None = None) -> dict:
    ex = extractor_of(scores)
    row = {"model": name, "source": "measured", "FID": metric(scores, "fid", ex), "IS": metric(scores, "is", ex),
           "Pre": metric(scores, "precision", ex), "Rec": metric(scores, "recall", ex),
           "params": human_count((train_metrics or {}).get("num_params")),
           "steps": (sample_metrics or {}).get("steps"), "extractor": ex,
           "FID_untrained": scores.get(f"fid_{ex}_untrained"), "class_acc": scores.get("class_acc_evalnet"),
           "class_acc_untrained": scores.get("class_acc_evalnet_untrained"),
           "_seconds_per_image": (sample_metrics or {}).get("seconds_per_image"),
           "_num_params": (train_metrics or {}).get("num_params")}
    return row


def build_table1(models: list[tuple[str, Mapping, Mapping, Mapping]], valdata_scores: Mapping) -> pd.DataFrame:
    """models: (name, scores, train metrics, sample metrics) per measured VAR; valdata: the real-vs-real scores."""
    measured = [measured_row(*m) for m in models]
    with_time = [r for r in measured if r["_seconds_per_image"] is not None and r["_num_params"] is not None]
    if with_time:
        largest = max(with_time, key=lambda r: r["_num_params"])
        for r in with_time:
            r["time"] = round(r["_seconds_per_image"] / largest["_seconds_per_image"], 3)
    val = measured_row("validation data", valdata_scores)
    rows = [{**r, "source": "paper", "extractor": PAPER_EXTRACTOR} for r in PAPER_ROWS] + measured + [val]
    df = pd.DataFrame(rows)
    df = df.drop(columns=[c for c in df.columns if c.startswith("_")]).reindex(columns=list(COLUMNS + LEARNING_COLUMNS))
    df["steps"] = df["steps"].astype("Int64")   # integer column with blanks
    return df


def table1_markdown(df: pd.DataFrame) -> str:
    measured = df[df["source"] == "measured"]
    extractors = sorted(set(measured["extractor"].dropna()))
    notes = "\n".join(f"- {EXTRACTOR_NOTES.get(e, f'feature extractor: {e}')}" for e in extractors)

    def cell(v, col):
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            return ""
        if col in ("FID", "FID_untrained"):
            return f"{v:.2f}" if abs(v) >= 0.1 else f"{v:.2g}"
        if col.startswith("class_acc"):
            return f"{v:.1%}"
        if col == "IS":
            return f"{v:.1f}"
        if col in ("Pre", "Rec"):
            return f"{v:.2f}"
        if col == "steps":
            return str(int(v))
        return str(v)

    cols = list(COLUMNS + LEARNING_COLUMNS)
    lines = ["# Table 1: VAR on class-conditional generation", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(cell(r[c], c) for c in cols) + " |")
    lines += ["", "Rows with source `paper` are copied from the paper's Table 1 (ImageNet 256x256, Inception-v3, "
              "50k samples); rows with source `measured` were produced by this pipeline.", notes,
              "- `time`: generation wall-clock per image relative to the largest measured VAR (paper: relative to "
              "VAR-d30); `steps`: autoregressive steps (= scales).",
              "- `FID_untrained`, `class_acc_untrained`: the same model at its initial weights, sampled and scored "
              "alike; `class_acc`: how often the evaluation network classifies a sample as its conditioning class.",
              ""]
    return "\n".join(lines)
