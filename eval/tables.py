"""Table builders. Table 1 (paper Sec. 4.1): every row of the paper's Table 1 beside the rows measured here.

Rows carry `source` = `paper` (the paper's Table 1 as printed, eval/paper.py: ImageNet 256x256, Inception
features) or `measured` (ours, from the score / train / sample metrics JSON files). `time` is generation wall-clock
relative to the largest measured VAR model, as the paper's Time column is relative to VAR-d30.

CSV conventions for paper rows: an empty cell is the paper's "—" (not reported; for the validation-data row's
params/steps/time: not applicable); a printed mark ("~45", ">45", "†") keeps its number in the numeric column and
the cell as printed, with its meaning, in `note` (eval/paper.py). The Markdown shows paper cells as printed.
"""
from __future__ import annotations

import math
from typing import Mapping

import pandas as pd

from eval import paper
from eval.released import FID_TOLERANCE, MIN_SAMPLES, expectation

COLUMNS = ("type", "model", "source", "FID", "IS", "Pre", "Rec", "params", "steps", "time", "extractor", "note")
# "The model learns": the same architecture at its initial weights, sampled and scored alike (measured rows only).
LEARNING_COLUMNS = ("FID_untrained", "class_acc", "class_acc_untrained")
# Measured rows that score released weights: the FIDs published for them and the verdict (eval/released.py).
RELEASE_COLUMNS = ("release", "FID_paper", "FID_release", "verdict", "verdict_note")
# Spread over sampling seeds (score.seeds): the sd of one seed's value; FID/IS/Pre/Rec/class_acc are the means.
SD_COLUMNS = ("FID_sd", "IS_sd", "Pre_sd", "Rec_sd", "class_acc_sd", "seeds", "evaluation")
SD_OF = {"FID": "fid", "IS": "is", "Pre": "precision", "Rec": "recall"}
PAPER_EXTRACTOR = "inception"    # every row of the paper's Table 1: Inception-v3, 50k samples, ImageNet 256x256
MEASURED_TYPE = "VAR"            # table1's measured models are VAR transformers (stage train_var)
PAPER_BY_MODEL = {r.model: r for r in paper.TABLE1}

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
                 sample_metrics: Mapping | None = None, *, type_: str | None = MEASURED_TYPE) -> dict:
    ex = extractor_of(scores)
    row = {"type": type_, "model": name, "source": "measured", "FID": metric(scores, "fid", ex),
           "IS": metric(scores, "is", ex), "Pre": metric(scores, "precision", ex),
           "Rec": metric(scores, "recall", ex), "params": human_count((train_metrics or {}).get("num_params")),
           "steps": (sample_metrics or {}).get("steps"), "extractor": ex,
           "FID_untrained": scores.get(f"fid_{ex}_untrained"), "class_acc": scores.get("class_acc_evalnet"),
           "class_acc_untrained": scores.get("class_acc_evalnet_untrained"),
           **{f"{col}_sd": scores.get(f"{key}_{ex}_sd") for col, key in SD_OF.items()},
           "class_acc_sd": scores.get("class_acc_evalnet_sd"), "seeds": scores.get("num_seeds"),
           "evaluation": scores.get("evaluation_label"),
           "_seconds_per_image": (sample_metrics or {}).get("seconds_per_image"),
           "_num_params": (train_metrics or {}).get("num_params")}
    exp = expectation(scores, train_metrics)
    if exp is not None:
        row.update(release=exp.release, FID_paper=exp.fid_paper, FID_release=exp.fid_release, verdict=exp.verdict,
                   verdict_note=exp.reason)
    return row


def paper_rows() -> list[dict]:
    """The paper's Table 1, every row, in its order (eval/paper.py)."""
    return [{"type": r.type, "model": r.model, "source": "paper", "FID": r.FID, "IS": r.IS, "Pre": r.Pre,
             "Rec": r.Rec, "params": r.params or "", "steps": r.steps, "time": r.time,
             "extractor": PAPER_EXTRACTOR, "note": paper.note(r, paper.TABLE1_HEADERS)} for r in paper.TABLE1]


def build_table1(models: list[tuple[str, Mapping, Mapping, Mapping]], valdata_scores: Mapping | None) -> pd.DataFrame:
    """models: (name, scores, train metrics, sample metrics) per measured VAR; valdata: the real-vs-real scores, or
    None (no validation split configured). Rows: the paper's 26, the measured models, the measured validation data."""
    measured = [measured_row(*m) for m in models]
    with_time = [r for r in measured if r["_seconds_per_image"] is not None and r["_num_params"] is not None]
    if with_time:
        largest = max(with_time, key=lambda r: r["_num_params"])
        for r in with_time:
            r["time"] = round(r["_seconds_per_image"] / largest["_seconds_per_image"], 3)
    val = [measured_row("validation data", valdata_scores, type_=None)] if valdata_scores is not None else []
    df = pd.DataFrame(paper_rows() + measured + val)
    df = df.drop(columns=[c for c in df.columns if c.startswith("_")]).reindex(
        columns=list(COLUMNS + LEARNING_COLUMNS + RELEASE_COLUMNS + SD_COLUMNS))
    df["steps"] = df["steps"].astype("Int64")   # integer column with blanks
    return df


def _blank(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def with_sd(r, col: str) -> str:
    """A measured cell as 'mean ± sd' when the row has a spread over seeds."""
    text = _cell(r[col], col)
    sd = r.get(f"{col}_sd")
    return f"{text} ± {_cell(sd, col)}" if text and not _blank(sd) else text


def _cell(v, col: str) -> str:
    if _blank(v):
        return ""
    if col in ("FID", "FID_untrained", "FID_paper", "FID_release"):
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


def _release_notes(measured: pd.DataFrame) -> list[str]:
    rel = measured[measured["verdict"].notna()]
    if rel.empty:
        return ["- No measured row scores released weights (no `pretrained` in its train metrics): no expected "
                "values, no verdict."]
    lines = [f"- `FID_paper` / `FID_release`: the paper's Table 1 and the release README's FID of the released "
             f"checkpoint a row imports (`pretrained`; identified by its parameter count). `verdict`: `within` if the "
             f"measured FID lies in [min, max] of the two widened by {FID_TOLERANCE} FID, the spread independent "
             f"scorings of the same weights show (eval/released.py); `none` when the FID is not comparable with "
             f"them: only an Inception FID of at least {MIN_SAMPLES:,} samples against the standard reference "
             f"batch's stored statistics gets a verdict (an evalnet-FID, or a FID of fewer samples, is another "
             f"quantity). Expected values assume the release's sampler settings (cfg 1.5, top-k 900, top-p 0.96)."]
    lines += [f"  - `{r.model}` ({r.release or 'no release'}): {r.verdict}: {r.verdict_note}" for r in rel.itertuples()]
    return lines


def table1_markdown(df: pd.DataFrame) -> str:
    measured = df[df["source"] == "measured"]
    extractors = sorted(set(measured["extractor"].dropna()))
    notes = "\n".join(f"- {EXTRACTOR_NOTES.get(e, f'feature extractor: {e}')}" for e in extractors)
    released = measured["verdict"].notna().any()
    cols = [c for c in COLUMNS if c != "note"] + list(LEARNING_COLUMNS)
    if released:
        cols += ["FID_paper", "FID_release", "verdict"]

    def row_cells(r) -> list[str]:
        if r["source"] == "paper" and r["model"] in PAPER_BY_MODEL:   # the paper's cells as printed
            printed = paper.table1_cells(PAPER_BY_MODEL[r["model"]])
            return [printed.get(c, _cell(r[c], c)) for c in cols]
        return [with_sd(r, c) for c in cols]

    lines = ["# Table 1: VAR on class-conditional generation", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(row_cells(r)) + " |" for _, r in df.iterrows()]
    marks = ", ".join(f"`{m}` {meaning}" for m, meaning in paper.MARKS.items())
    lines += ["", "Rows with source `paper` are the paper's Table 1 as printed (ImageNet 256x256, Inception-v3, "
              f"50k samples; `—`: not reported; {marks}; `-re`: rejection sampling); rows with source `measured` "
              "were produced by this pipeline.", notes,
              "- `time`: generation wall-clock per image relative to the largest measured VAR (paper: relative to "
              "VAR-d30); `steps`: autoregressive steps (= scales).",
              "- `FID_untrained`, `class_acc_untrained`: the same model at its initial weights, sampled and scored "
              "alike; `class_acc`: how often the evaluation network classifies a sample as its conditioning class.",
              "- Measured FID / IS / Pre / Rec / class_acc: mean ± sd over the sampling seeds (`seeds`; the sd is the "
              "spread of one seed's value). `evaluation`: FID-50k only for 50,000 samples, 50 per class; otherwise "
              "the sample count, so a FID of fewer samples is never read as the standard one. Bootstrap intervals, "
              "KID, density / coverage and FD_inf are in each model's scores.json and in metrics/<run>/table1.json.",
              *_release_notes(measured), ""]
    return "\n".join(lines)
