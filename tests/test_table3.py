"""Rows of Tables 2/3 as params (validation), the DAG's row stages, and the Table 3 builder on synthetic JSONs."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from eval.complexity import generation_flops, paper_attention_cost, var_patch_nums
from eval.row_tables import build_table3, table3_markdown
from eval.scaling import fit_power_law
from pipeline.params import ConfigError, build_params, load_raw
from pipeline.plan import build_plan
from pipeline.rows import row_model_config, table_rows
from var.ar import ARConfig
from var.config import VARConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def raw():
    return load_raw(ROOT / "params.yaml")


def with_rows(raw, **rows):
    r = copy.deepcopy(raw)
    for k, v in rows.items():
        r["rows"][k] = v
    return r


def test_default_rows_validate_and_mirror_the_paper(raw):
    p = build_params(raw)
    assert p.table3.rows[0] == "ar-gpt2" and p.rows["ar-gpt2"].kind == "ar"
    assert isinstance(row_model_config(p.rows["ar-gpt2"], p.tokenizer.model, 10), ARConfig)
    cfg = row_model_config(p.rows["var-plain"], p.tokenizer.model, 10)
    assert isinstance(cfg, VARConfig) and not cfg.adaln and not cfg.attn_l2_norm
    assert row_model_config(p.rows["ar-gpt2"], p.tokenizer.model, 10).patch_nums == (p.tokenizer.model.patch_nums[-1],)
    assert all(p.rows[r].setting == "hires" for r in p.table2.rows)


@pytest.mark.parametrize("spec, match", [
    ({"kind": "gpt"}, "kind"),
    ({"kind": "var", "adaln": False, "shared_aln": True}, "shared_aln"),
    ({"kind": "var", "depth": 4, "width": 90}, "multiple of the heads"),
    ({"kind": "var", "depth": 6, "width": 128, "heads": 5}, "multiple of the heads"),
    ({"kind": "var", "topk": 5}, "rows.bad.topk"),
    ({"kind": "var", "setting": "nope"}, "not a key of 'settings'"),
    ({"kind": "ar", "setting": "hires"}, "AR rows"),
    ({"kind": "var", "model_from": "nobody"}, "neither a row nor"),
    ({"kind": "var", "depth": 4, "width": 96, "model_from": "var-d4", "adaln": False}, "recipes differ"),
    ({"kind": "var", "paper": "row9"}, "paper"),
])
def test_row_validation_names_the_problem(raw, spec, match):
    with pytest.raises(ConfigError, match=match):
        build_params(with_rows(raw, bad=spec))


def test_table_rows_must_exist(raw):
    r = copy.deepcopy(raw)
    r["table3"] = {"rows": ["ar-gpt2", "missing"]}
    with pytest.raises(ConfigError, match="missing"):
        build_params(r)


def test_row_stage_inputs_follow_kind_setting_and_model_from(raw):
    p = build_params(raw)
    plan = build_plan(p)
    ins = plan.by_name("train_row_ar-gpt2").inputs
    assert ins["tokenizer"] == "runs/default/tokenizer_ar/model.pt"
    assert ins["train_tokens"] == "runs/default/tokens_ar/train.npz"
    assert plan.by_name("sample_row_var-cfg").inputs["model"] == "runs/default/rows/var-adaln/model.pt"
    # the default's attn-norm row trains its own model (Table 3's 450-step budget; table1's var-d4 trains longer) ...
    assert plan.by_name("sample_row_var-attnnorm").inputs["model"] == "runs/default/rows/var-attnnorm/model.pt"
    # ... and a row with var-d4's exact recipe may reuse the table1 model
    reuse = {"kind": "var", "depth": 4, "width": 128, "adaln": True, "attn_l2_norm": True,
             "sampler": {"top_k": 19, "cfg": 4.0},
             "model_from": "var-d4", "train": {"max_steps": p.models["var-d4"].train.max_steps,
                                                "eval_every_epochs": p.models["var-d4"].train.eval_every_epochs}}
    r = with_rows(raw, reuse=reuse)
    r["table3"] = {"rows": [*r["table3"]["rows"], "reuse"]}        # the plan has jobs for the rows of a table
    p_reuse = build_params(r)
    assert build_plan(p_reuse).by_name("sample_row_reuse").inputs["model"] == "runs/default/var/var-d4/model.pt"
    score = plan.by_name("score_row_var-hires-s").inputs
    assert score["real"] == "runs/default/data_hires/val.npz"
    assert score["evalnet"] == "runs/default/evalnet_hires/model.pt"
    names = {j.name for j in plan.jobs}
    assert "train_row_var-cfg" not in names and "train_row_var-adaln" in names and "table3" in names
    assert set(table_rows(p)) == {*p.table3.rows, *p.table2.rows}
    assert "--scales last" in plan.by_name("tokenizer_ar").command()


def synthetic(kind, fid, s, flops, n, top_k=0, cfg=0.0, **recipe):
    return ({"kind": kind, "adaln": kind == "var", "attn_l2_norm": False, "sampler": {"top_k": top_k, "cfg": cfg},
             **recipe},
            {"name": "x", "fid_evalnet": fid, "is_evalnet": 2.0, "precision_evalnet": 0.5, "recall_evalnet": 0.5},
            {"num_params": n}, {"seconds_per_image": s, "flops_per_image": flops, "steps": 3})


def test_table3_builder_on_synthetic_metrics():
    rows = [("ar", *synthetic("ar", 20.0, 2.0, 100.0, 1000, paper="ar")),
            ("var", *synthetic("var", 5.0, 0.5, 50.0, 900, paper="ar-to-var")),
            ("var2", *synthetic("var", 4.0, 1.0, 60.0, 1200, top_k=5, cfg=1.5))]
    df = build_table3(rows)
    meas = df[df.source == "measured"].set_index("row")
    assert list(meas.index) == ["ar", "var", "var2"]
    assert meas.loc["var", "cost"] == 0.25 and meas.loc["var", "cost_flops"] == 0.5
    assert meas.loc["var2", "dFID"] == -16.0 and meas.loc["var2", "params"] == "1.2K"
    paper = df[df.source == "paper"].set_index("row")
    assert paper.loc["ar", "FID"] == 18.65 and paper.loc["var", "FID"] == 5.22
    assert paper.loc["var", "cost"] == 0.013 and "var2" not in paper.index
    assert paper.loc["var", ["#", "model", "params", "AdaLN", "dFID"]].tolist() == ["2", "VAR-d16", "207M", "no", -13.43]
    assert paper.loc["ar", "model"] == "AR" and meas.loc["ar", "model"] == "AR"
    md = table3_markdown(df)
    assert "VAR beats AR here" in md and "evalnet" in md
    rows[1] = ("var", *synthetic("var", 30.0, 0.5, 50.0, 900))
    assert "does NOT beat" in table3_markdown(build_table3(rows))


def test_flops_and_complexity_exponents():
    ar = ARConfig(depth=2, embed_dim_override=32, num_classes=2, vocab_size=16, patch_nums=(4,))
    # AR, 16 tokens, no AdaLN: 2 * [16 * (2*24*C^2 + 2CV) + 2*4*C*sum(1..16)]
    C = 32
    assert generation_flops(ar) == 2 * (16 * (2 * 24 * C * C + 2 * C * 16) + 2 * 4 * C * 136)
    ns = [8, 16, 32, 64]
    assert abs(fit_power_law(ns, [paper_attention_cost("ar", (n,)) for n in ns]).alpha - 6) < 0.1
    # VAR: n^4 up to the slowly growing number of scales (log n), so the fitted slope is a little above 4
    assert 3.9 < fit_power_law(ns, [paper_attention_cost("var", var_patch_nums(n)) for n in ns]).alpha < 4.6
    assert var_patch_nums(32)[-1] == 32 and var_patch_nums(16)[:4] == (1, 2, 3, 4)
