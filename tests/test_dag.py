"""One DAG, two front ends: dvc.yaml is rendered from the plan of pipeline/registry.py's stages, and the Snakefile
(built from the same plan) runs exactly the commands of dvc.yaml."""
from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.params import load_params
from pipeline.plan import build_plan
from pipeline.registry import BY_NAME, MULTI_GPU_STAGES, STAGES
from pipeline.render import render_dvc_yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
WORKFLOW_FILES = ("Snakefile", "params.yaml", "configs", "pipeline", "var", "eval")


def test_committed_dvc_yaml_is_generated_from_the_registry():
    text = render_dvc_yaml(load_params(ROOT / "params.yaml"))
    assert (ROOT / "dvc.yaml").read_text() == text, "dvc.yaml is stale: run `python -m pipeline.render`"


def test_registry_is_consistent():
    order = [s.name for s in STAGES]
    for st in STAGES:
        for name, ref in st.inputs.items():
            src, out = ref.lstrip("*").split(".")
            assert out in BY_NAME[src].outputs, f"{st.name}.{name} -> {ref}"
            assert order.index(src) < order.index(st.name), f"{st.name} reads a later stage {src}"
        assert (ROOT / "pipeline" / "stages" / f"{st.module}.py").is_file(), f"{st.name}: no stage module"
        assert st.state not in st.outputs.values(), "resume state must not be an output"
    for cfg in ((), ("configs/ci.yaml",), ("configs/imagenet256.yaml",)):
        plan = build_plan(load_params(ROOT / "params.yaml", [ROOT / c for c in cfg]))
        paths = [p for j in plan.jobs for p in j.outputs.values()]
        assert len(paths) == len(set(paths)), "two jobs write the same path"
        assert len({j.name for j in plan.jobs}) == len(plan.jobs), "two jobs share a name"
        made = set(paths)
        for j in plan.jobs:      # every input is made by an earlier job (files named in params are the user's)
            earlier = {p for k in plan.jobs[:plan.jobs.index(j)] for p in k.outputs.values()}
            ins = [p for p in j.input_paths() if p not in j.files]
            assert all(p in earlier for p in ins if p in made), j.name
            assert all(p in made for p in ins), f"{j.name} reads a file no job writes"


def test_dvc_stages_declare_params_deps_and_metrics():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    p = load_params(ROOT / "params.yaml")
    assert {f"train_var_{m}" for m in p.table1_models} <= set(stages)
    for name, st in stages.items():
        assert st["deps"][0].startswith("pipeline/stages/") and st["params"], name
    metrics = [next(iter(m)) for st in stages.values() for m in st.get("metrics", [])]
    assert "metrics/default/table1.json" in metrics and "metrics/default/tokenizer.json" in metrics
    plots = [next(iter(m)) for st in stages.values() for m in st.get("plots", [])]
    assert plots and all(p.startswith("metrics/default/plots/") and p.endswith(".png") for p in plots)
    assert all(m["cache"] is False for st in stages.values() for e in st.get("metrics", []) for m in e.values())


def snakemake_commands(tmp_path: Path, *extra: str) -> list[str]:
    for f in WORKFLOW_FILES:
        src = ROOT / f
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / f)
    res = subprocess.run([str(SNAKEMAKE), "-n", "-p", "--forceall", "--cores", "1", "table1", *extra],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    return [line.split("Shell command: ", 1)[1].strip() for line in (res.stdout + res.stderr).splitlines()
            if line.startswith("Shell command: ")]


def test_snakefile_runs_the_dvc_commands(tmp_path):
    # every job's outputs as targets (not only table1): jobs outside table1 (tokenizer_ablation, ...) are in
    # dvc.yaml too
    plan = build_plan(load_params(ROOT / "params.yaml"))
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    cmds = snakemake_commands(tmp_path, *(next(iter(j.outputs.values())) for j in plan.jobs))
    assert sorted(cmds) == sorted(st["cmd"] for st in dvc.values())


def test_configfile_is_forwarded_to_every_stage(tmp_path):
    cmds = snakemake_commands(tmp_path, "--configfile", "configs/ci.yaml")
    assert cmds and all(" --configfile configs/ci.yaml " in c for c in cmds)
    ci = load_params(ROOT / "params.yaml", [ROOT / "configs/ci.yaml"])
    assert sum("pipeline.stages.train_var" in c for c in cmds) == len(ci.table1_models)


def test_environment_yml_mirrors_requirements():
    reqs = [l.strip() for l in (ROOT / "requirements.txt").read_text().splitlines()
            if l.strip() and not l.startswith("#")]
    pip = next(d["pip"] for d in yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
               if isinstance(d, dict))
    assert [x for x in pip if x != "-e ."] == reqs


@pytest.mark.parametrize("stage", MULTI_GPU_STAGES)
def test_torchrun_commands_reach_the_stage_intact(stage):
    """torchrun's own parser grabs options that abbreviate its options (`--log` would be ambiguous with --log-dir)
    even after the module: every multi-GPU stage command must leave all its arguments to the stage's parser."""
    from torch.distributed.run import get_args_parser
    plan = build_plan(load_params(ROOT / "params.yaml"))
    job = next(j for j in plan.jobs if j.stage.name == stage)
    argv = shlex.split(job.command(gpus=2))
    assert argv[:4] == ["torchrun", "--standalone", "--nproc_per_node", "2"]
    ns = get_args_parser().parse_args(argv[1:])
    assert ns.module and ns.training_script == f"pipeline.stages.{BY_NAME[stage].module}"
    assert ns.training_script_args == argv[argv.index(ns.training_script) + 1:]
    assert "--log-file" in ns.training_script_args


def test_the_ablation_stages_read_the_classifier_a_rejection_row_needs(tmp_path):
    """`ablation.row` is chosen at run time (`dvc exp run -S ablation.row=...`), so ablation_sample reads the
    evaluation network whenever some row samples with rejection against it: a "-re" row can be an experiment."""
    p = load_params(ROOT / "params.yaml", [ROOT / "configs/ci.yaml"])
    assert any(r.sampler.rejection.enabled for r in p.rows.values())
    job = next(j for j in build_plan(p).jobs if j.name == "ablation_sample")
    assert job.inputs["classifier"] == "runs/ci/evalnet/model.pt"
    # score.seeds > 1: the seed file is declared whichever row runs, and scored (a rejection row writes one seed)
    score = next(j for j in build_plan(p).jobs if j.name == "ablation_score")
    assert p.score.seeds > 1 and job.outputs["seed_samples"] == score.inputs["seed_samples"]
    plain = tmp_path / "plain.yaml"     # the same config without its rejection rows: no classifier input
    raw = yaml.safe_load((ROOT / "configs/ci.yaml").read_text())
    rej = [r for r, v in p.rows.items() if v.sampler.rejection.enabled]
    plain.write_text(yaml.safe_dump({"rows": {r: {"sampler": {"rejection": {"threshold": 0.0}}} for r in rej}}))
    p2 = load_params(ROOT / "params.yaml", [ROOT / "configs/ci.yaml", plain])
    assert not any(r.sampler.rejection.enabled for r in p2.rows.values()), raw.get("rows")
    job2 = next(j for j in build_plan(p2).jobs if j.name == "ablation_sample")
    assert "classifier" not in job2.inputs
