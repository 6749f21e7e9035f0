"""Table 3 from DVC experiments (pipeline/exp_table.py) on a `dvc exp show --json` record: the newest experiment
of a row wins, rows keep the requested order, cost and dFID are relative to the first row, a rejection row is
labelled, and a row without an experiment is listed as missing. tests/test_pipeline_ci.py runs it on real
experiments."""
from __future__ import annotations

import json

import pytest

from pipeline.exp_table import build, experiments, main


def _rev(name, row, ts, fid, sec, flops, rows=None, sd=0.5, seeds=3):
    recipe = (rows or {}).get(row, {"description": f"desc {row}", "sampler": {"top_k": 19, "cfg": 4.0}})
    return {"rev": f"{abs(hash((name, ts))):040x}"[:40], "name": name,
            "data": {"timestamp": ts,
                     "params": {"params.yaml": {"data": {"rows": {row: recipe}}}},
                     "metrics": {"metrics/ci/ablation.json": {"data": {
                         "row": row, "fid_evalnet": fid, "fid_evalnet_ci_low": fid - 1, "fid_evalnet_ci_high": fid + 1,
                         "is_evalnet": 2.0, "precision_evalnet": 0.5, "recall_evalnet": 0.4, "class_acc": 0.7,
                         "val_loss": 3.0, "sec_per_image": sec, "flops_per_image": flops, "num_seeds": seeds,
                         **({"fid_evalnet_sd": sd} if seeds > 1 else {})}}}}}


def _show(*revs):
    return [{"rev": "workspace", "name": None, "data": {}, "experiments": None},
            {"rev": "0" * 40, "name": "main", "data": {},
             "experiments": [{"name": r["name"], "revs": [r]} for r in revs]}]


def test_newest_per_row_in_order_relative_to_first_row():
    re_recipe = {"var-re": {"description": "rejection sampling",
                            "sampler": {"top_k": 19, "cfg": 4.0, "rejection": {"threshold": 0.5}}}}
    show = _show(_rev("old-plain", "var-plain", "2026-12-03T10:00:00", 30.0, 0.02, 100.0),
                 _rev("var-plain", "var-plain", "2026-12-03T11:00:00", 25.0, 0.01, 100.0),
                 _rev("var-re", "var-re", "2026-12-03T12:00:00", 10.0, 0.04, 400.0, re_recipe),
                 _rev("elsewhere", "var-plain", "2026-12-03T13:00:00", 1.0, 0.01, 1.0) | {"data": {}})
    found = experiments(show, "ci")
    assert found["var-plain"]["experiment"] == "var-plain"      # the newer of the two with metrics
    df = build(found, ["var-plain", "var-re", "var-adaln"])
    assert list(df.row) == ["var-plain", "var-re", "var-adaln"]
    plain, re_, missing = df.to_dict("records")
    assert plain["FID"] == 25.0 and plain["cost"] == 1.0 and plain["dFID"] == 0.0
    assert re_["cost"] == pytest.approx(4.0) and re_["cost_flops"] == pytest.approx(4.0) and re_["dFID"] == -15.0
    assert "rejection" in re_["description"] and "rejection, threshold 0.5" in re_["sampling"]
    assert re_["FID_ci"] == "[9.00, 11.00]"
    assert missing["experiment"] == "(missing)"


def test_each_step_is_judged_against_the_row_before_it_by_the_seed_rule():
    """|delta| > 2 sqrt(sd_a^2 + sd_b^2): 25.0 -> 12.5 with sds 0.4 / 0.6 is significant (12.5 > 1.44); 12.5 -> 12.0
    with 0.6 / 0.5 is not (0.5 < 1.56); against a one-seed (rejection) row it is not assessable."""
    re_recipe = {"var-re": {"description": "rejection", "sampler": {"rejection": {"threshold": 0.5}}}}
    show = _show(_rev("p", "var-plain", "2026-12-03T10:00:00", 25.0, 0.01, 1.0, sd=0.4),
                 _rev("a", "var-adaln", "2026-12-03T10:00:01", 12.5, 0.01, 1.0, sd=0.6),
                 _rev("t", "var-topk", "2026-12-03T10:00:02", 12.0, 0.01, 1.0, sd=0.5),
                 _rev("r", "var-re", "2026-12-03T10:00:03", 9.0, 0.01, 1.0, re_recipe, seeds=1))
    df = build(experiments(show, "ci"), ["var-plain", "var-adaln", "var-topk", "var-re"])
    assert df.step_vs_previous.tolist()[1:] == ["significant", "not significant", "not assessable (one seed)"]
    assert df.FID_sd.tolist()[:3] == [0.4, 0.6, 0.5] and df.seeds.tolist() == [3, 3, 3, 1]


def test_cli_writes_the_tables(tmp_path, monkeypatch):
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    show = _show(_rev("a", "var-plain", "2026-12-03T11:00:00", 25.0, 0.01, 100.0),
                 _rev("b", "var-adaln", "2026-12-03T12:00:00", 12.5, 0.011, 101.0))
    (tmp_path / "show.json").write_text(json.dumps(show))
    monkeypatch.chdir(tmp_path)
    assert main(["--params", str(root / "params.yaml"), "--configfile", str(root / "configs/ci.yaml"),
                 "--rows", "var-plain", "var-adaln", "--json", str(tmp_path / "show.json")]) == 0
    md = (tmp_path / "results/ci/table3_experiments.md").read_text()
    assert "| var-adaln | b |" in md and "12.50" in md and "-12.50" in md
    with pytest.raises(SystemExit, match="unknown rows"):
        main(["--params", str(root / "params.yaml"), "--rows", "no-such-row", "--json", str(tmp_path / "show.json")])
