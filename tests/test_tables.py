"""Table builders (eval/tables.py, eval/row_tables.py) on synthetic metrics: every paper row comes from the one
copy (eval/paper.py) and equals the printed tables (tests/data/paper_tables.md); measured rows and the released-
weights verdict come from the score / train / sample JSONs."""
from __future__ import annotations

import io

import pandas as pd
import paper_md
import pytest

from eval import paper
from eval.released import STORED_REFERENCE_STATS
from eval.row_tables import build_table2, build_table3, table2_markdown, table3_markdown
from eval.tables import COLUMNS, LEARNING_COLUMNS, RELEASE_COLUMNS, SD_COLUMNS, build_table1, table1_markdown

D16_PARAMS = 310_283_520


def evalnet_scores(fid, name="x"):
    return {"name": name, "fid_evalnet": fid, "is_evalnet": 3.0, "precision_evalnet": 0.6, "recall_evalnet": 0.4,
            "fid_evalnet_untrained": 90.0, "class_acc_evalnet": 0.7, "class_acc_evalnet_untrained": 0.01,
            "extractor": "evalnet", "num_samples": 200}


def inception_scores(fid, n=50_000):
    return {"name": "d16", "fid_inception": fid, "is_inception": 270.0, "precision_inception": 0.83,
            "recall_inception": 0.52, "extractor": "inception-v3-compat", "num_samples": n,
            "reference_stats": STORED_REFERENCE_STATS}


def released_d16(model_name="var-d16"):
    return {"model": model_name, "num_params": D16_PARAMS, "pretrained": "weights/var_d16.pth", "step": 0}


def table1(models):
    return build_table1(models, evalnet_scores(1.0, "valdata"))


def test_table1_has_all_paper_rows_then_the_measured_ones():
    models = [("var-d4", evalnet_scores(7.0), {"num_params": 2_000_000}, {"seconds_per_image": 0.5, "steps": 5}),
              ("var-d6", evalnet_scores(6.0), {"num_params": 4_000_000}, {"seconds_per_image": 1.0, "steps": 5})]
    df = table1(models)
    assert list(df.columns) == [*COLUMNS, *LEARNING_COLUMNS, *RELEASE_COLUMNS, *SD_COLUMNS]
    assert list(df.source) == ["paper"] * 26 + ["measured"] * 3
    assert list(df.model) == [r.model for r in paper.TABLE1] + ["var-d4", "var-d6", "validation data"]
    # measured rows: values from their JSONs, time relative to the largest measured model
    meas = df[df.source == "measured"].set_index("model")
    assert meas.loc["var-d4", "FID"] == 7.0 and meas.loc["var-d4", "time"] == 0.5 and meas.loc["var-d6", "time"] == 1
    assert meas.loc["var-d4", "params"] == "2M" and meas.loc["var-d4", "class_acc"] == 0.7
    assert meas.loc["var-d4", "type"] == "VAR" and pd.isna(meas.loc["validation data", "type"])
    assert meas["verdict"].isna().all()          # trained here: no release, no expected values
    assert "No measured row scores released weights" in table1_markdown(df)


def test_table1_csv_paper_rows_equal_the_printed_table():
    """Through the CSV the stage writes: the numbers, blanks for "—", marks in `note`, types as printed."""
    df = pd.read_csv(io.StringIO(table1([]).to_csv(index=False)), keep_default_na=False, na_values=[""])
    header, printed = paper_md.table("Table 1")
    paper_rows = df[df.source == "paper"].reset_index(drop=True)
    assert len(paper_rows) == len(printed) == 26
    n_marked = 0
    for (_, r), cells in zip(paper_rows.iterrows(), printed):
        c = dict(zip(header, cells))
        assert r["model"] == c["model"]
        assert (r["type"] if isinstance(r["type"], str) else "—") == c["type"]
        for col, head in (("FID", "FID"), ("IS", "IS"), ("Pre", "Pre"), ("Rec", "Rec"), ("steps", "#Step"),
                          ("time", "Time")):
            want = paper_md.number(c[head])
            assert (pd.isna(r[col]) if want is None else r[col] == want), (c["model"], col)
        assert (r["params"] if isinstance(r["params"], str) else "") == ("" if c["#Para"] == "—" else c["#Para"])
        marked = [f"{h} {c[h]}" for h in ("IS", "Time") if c[h] and c[h][0] in "~>"]
        note = r["note"] if isinstance(r["note"], str) else ""
        assert all(m in note for m in marked) and ("†" in c["model"]) == ("MaskGIT" in note), c["model"]
        assert r["extractor"] == "inception"
        n_marked += len(marked)
    assert n_marked == 5      # ">45" twice, "~45", ">24" twice


def test_table1_markdown_prints_the_paper_rows_as_printed():
    md = table1_markdown(table1([]))
    header, printed = paper_md.table("Table 1")
    lines = {ln.split(" | ")[1]: ln for ln in md.splitlines() if ln.startswith("| ") and " | paper | " in ln}
    md_cols = md.splitlines()[2].strip("| ").split(" | ")
    for cells in printed:
        c = dict(zip(header, cells))
        shown = dict(zip(md_cols, (x.strip() for x in lines[c["model"]].split("|")[1:-1])))
        assert [shown[k] for k in ("type", "model", "FID", "IS", "Pre", "Rec", "params", "steps", "time")] == cells


def test_table1_released_weights_get_expected_values_and_a_verdict():
    # a row named var-d30 that imported d16 weights is the d16 release: the weights decide, not the name
    models = [("var-d30", inception_scores(3.41), released_d16("var-d30"), {"seconds_per_image": 0.1, "steps": 10}),
              ("var-d16-10k", inception_scores(5.80, n=10_000), released_d16(), {"seconds_per_image": 0.1}),
              ("var-d16-evalnet", evalnet_scores(0.9), released_d16(), {"seconds_per_image": 0.1}),
              ("var-d16-far", inception_scores(4.60), released_d16(), {"seconds_per_image": 0.1})]
    df = table1(models)
    meas = df[df.source == "measured"].set_index("model")
    assert meas.loc["var-d30", ["release", "FID_paper", "FID_release", "verdict"]].tolist() == \
        ["var_d16", 3.30, 3.55, "within"]
    assert meas.loc["var-d30", "FID"] == 3.41         # the measured value itself is unchanged
    assert meas.loc["var-d16-far", "verdict"] == "outside"
    assert meas.loc["var-d16-10k", "verdict"] == "none" and "10000 samples" in meas.loc["var-d16-10k", "verdict_note"]
    assert meas.loc["var-d16-evalnet", "verdict"] == "none"
    assert pd.isna(meas.loc["validation data", "verdict"])
    md = table1_markdown(df)
    assert "| FID_paper | FID_release | verdict |" in md
    assert "| 3.41 |" in md and "| 3.30 | 3.55 | within |" in md and "| 3.30 | 3.55 | outside |" in md
    assert "`var-d16-evalnet` (var_d16): none: scored with 'evalnet' features" in md
    assert "`var-d16-10k` (var_d16): none: 10000 samples" in md


def test_table3_paper_rows_equal_the_printed_table():
    keys = [r.key for r in paper.TABLE3]
    rows = [(f"row-{k}", {"kind": "ar" if k == "ar" else "var", "paper": k, "depth": 4, "adaln": True},
             evalnet_scores(10.0 - i), {"num_params": 1000 + i}, {"seconds_per_image": 1.0 + i, "steps": 3})
            for i, k in enumerate(keys)]
    df = build_table3(rows)
    header, printed = paper_md.table("Table 3")
    ours = df[df.source == "paper"].reset_index(drop=True)
    assert len(ours) == len(printed) == 7
    for (_, r), cells in zip(ours.iterrows(), printed):
        c = dict(zip(header, cells))
        assert [r["#"], r["description"], r["params"], r["model"], r["AdaLN"], r["top_k"], r["CFG"]] == \
            [c["#"], c["description"], c["Para."], c["model"], c["AdaLN"], c["top-k"], c["CFG"]]
        assert (r["cost"], r["FID"], r["dFID"]) == tuple(paper_md.number(c[h]) for h in ("cost", "FID", "Δ"))
    assert ours.loc[5, "note"] == "the paper's row 5" and ours.loc[6, "note"].startswith("the paper's row 6; FID of")
    md = table3_markdown(df)
    assert "recalled" not in md and "1, 2, 3, 4, 5, 5, 6" in md and "The paper: 18.65 -> 5.22 at 0.013x" in md
    assert df[df.source == "measured"]["model"].tolist() == ["AR-d4"] + ["VAR-d4"] * 6


def test_table2_paper_rows_equal_the_printed_table():
    rows = [("var-hires-s", {"kind": "var", "description": "shared AdaLN"}, evalnet_scores(8.0),
             {"num_params": 5000}, {"seconds_per_image": 2.0, "steps": 6})]
    df = build_table2(rows, evalnet_scores(1.0), 64)
    header, printed = paper_md.table("Table 2")
    ours = df[df.source == "paper"].reset_index(drop=True)
    assert len(ours) == len(printed) == 6
    for (_, r), cells in zip(ours.iterrows(), printed):
        c = dict(zip(header, cells))
        assert [r["type"], r["model"]] == [c["type"], c["model"]]
        for col, head in (("FID", "FID"), ("IS", "IS"), ("time", "Time")):
            want = paper_md.number(c[head])
            assert (pd.isna(r[col]) if want is None else r[col] == want), (c["model"], col)
        assert ("†" in c["Time"]) == ("MaskGIT" in r["note"])
        assert r["resolution"] == 512
    assert ours.loc[1, ["model", "FID", "IS"]].tolist() == ["ADM", 23.24, 101.0]
    meas = df[df.source == "measured"].set_index("model")
    assert meas.loc["var-hires-s", "time"] == 1.0 and meas.loc["var-hires-s", "resolution"] == 64
    md = table2_markdown(df)
    assert "| 0.5† |" in md and "| 25† |" in md and "recalled" not in md


def _seed_scores(fids, name="x"):
    fids = [float(f) for f in fids]
    mean = sum(fids) / len(fids)
    out = {"name": name, "fid_evalnet": mean, "is_evalnet": 2.0, "precision_evalnet": 0.5, "recall_evalnet": 0.5,
           "num_seeds": len(fids), "evaluation_label": "FID-500"}
    if len(fids) > 1:
        sd = (sum((f - mean) ** 2 for f in fids) / (len(fids) - 1)) ** 0.5
        out.update(fid_evalnet_sd=sd, fid_evalnet_per_seed=fids)
    return out


def test_seed_spread_in_table1_and_significance_in_table3():
    # Table 1: mean ± sd of the seeds, and the evaluation label
    df = build_table1([("m", _seed_scores([5.0, 5.2, 5.1]), {"num_params": 10}, {"seconds_per_image": 1.0})], None)
    row = df[df.source == "measured"].iloc[0]
    assert row.FID == pytest.approx(5.1) and row.FID_sd == pytest.approx(0.1) and row.seeds == 3
    assert row.evaluation == "FID-500"
    assert "| 5.10 ± 0.10 |" in table1_markdown(df)
    # Table 3: 5.1 ± 0.1 -> 6.0 ± 0.1: |delta| 0.9 > 2 sqrt(0.02) = 0.283 (significant); 6.0 ± 0.1 -> 6.2 ± 0.1:
    # 0.2 < 0.283 (not significant); a one-seed row: not assessable
    recipe = {"kind": "var", "depth": 2, "adaln": True, "attn_l2_norm": True, "top_k": 0, "cfg": 0.0}
    sm = {"seconds_per_image": 1.0, "flops_per_image": 1.0, "steps": 3}
    rows = [(n, recipe, _seed_scores(f), {"num_params": 10}, sm)
            for n, f in (("a", [5.0, 5.2, 5.1]), ("b", [5.9, 6.1, 6.0]), ("c", [6.1, 6.3, 6.2]), ("d", [9.0]))]
    t3 = build_table3(rows).set_index("row")
    assert pd.isna(t3.loc["a", "step_vs_previous"])
    assert t3.loc["b", "step_vs_previous"] == "significant"
    assert t3.loc["c", "step_vs_previous"] == "not significant"
    assert t3.loc["d", "step_vs_previous"] == "not assessable (one seed)"
