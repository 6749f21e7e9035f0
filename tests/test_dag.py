"""One DAG, two front ends: dvc.yaml is generated from pipeline/dag.py's registry, and the Snakefile (built from
the same registry) runs exactly the commands of dvc.yaml."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import dag
from pipeline.params import load_params

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
WORKFLOW_FILES = ("Snakefile", "params.yaml", "configs", "pipeline", "var", "eval")


def test_committed_dvc_yaml_is_generated_from_the_registry():
    text = dag.render_dvc_yaml(load_params(ROOT / "params.yaml"))
    assert (ROOT / "dvc.yaml").read_text() == text, "dvc.yaml is stale: run `python -m pipeline.dag`"


def test_registry_is_consistent():
    for st in dag.STAGES:
        for name, ref in st.inputs.items():
            src, out, _ = dag.resolve(ref)
            assert out in src.outputs, f"{st.name}.{name} -> {ref}"
            assert dag.STAGES.index(src) < dag.STAGES.index(st), f"{st.name} reads a later stage {src.name}"
        for f in st.deps_code:
            assert (ROOT / f).is_file(), f"{st.name}: its code dependency {f} does not exist"
        assert all(o not in st.outputs.values() for o in st.args.values()), "resume state must not be an output"
    paths = [p for st in dag.STAGES for p in st.outputs.values()]
    assert len(paths) == len(set(paths)), "two stages write the same path"


def test_dvc_stages_declare_params_deps_and_metrics():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    p = load_params(ROOT / "params.yaml")
    assert {f"train_var_{m}" for m in p.table1_models} <= set(stages)
    for name, st in stages.items():
        assert st["deps"][0].startswith("pipeline/") and st["params"], name
    metrics = [next(iter(m)) for st in stages.values() for m in st.get("metrics", [])]
    assert "runs/valdata/scores.json" in metrics
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
    # every rule as a target (not only table1): stages outside table1 (tokenizer_ablation, ...) are in dvc.yaml too
    cmds = snakemake_commands(tmp_path, *(st.name for st in dag.STAGES if "{" not in " ".join(st.outputs.values())))
    dvc_cmds = [st["cmd"] for st in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values()]
    assert sorted(cmds) == sorted(dvc_cmds)


def test_configfile_is_forwarded_to_every_stage(tmp_path):
    cmds = snakemake_commands(tmp_path, "--configfile", "configs/ci.yaml")
    assert cmds and all(" --configfile configs/ci.yaml " in c for c in cmds)
    ci = load_params(ROOT / "params.yaml", [ROOT / "configs/ci.yaml"])
    assert sum("pipeline.train_var" in c for c in cmds) == len(ci.table1_models)


def test_environment_yml_mirrors_requirements():
    reqs = [l.strip() for l in (ROOT / "requirements.txt").read_text().splitlines()
            if l.strip() and not l.startswith("#")]
    pip = next(d["pip"] for d in yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
               if isinstance(d, dict))
    assert [x for x in pip if x != "-e ."] == reqs


@pytest.mark.parametrize("stage", dag.MULTI_GPU_STAGES)
def test_torchrun_commands_reach_the_stage_intact(stage):
    """torchrun's own parser grabs options that abbreviate its options (`--log` would be ambiguous with --log-dir)
    even after the module: every multi-GPU stage command must leave all its arguments to the stage's parser."""
    import shlex
    from torch.distributed.run import get_args_parser
    p = load_params("params.yaml")
    cmd = dag.command(dag.BY_NAME[stage], p.table1_models, gpus=2)
    argv = shlex.split(cmd)
    assert argv[:4] == ["torchrun", "--standalone", "--nproc_per_node", "2"]
    ns = get_args_parser().parse_args(argv[1:])
    assert ns.module and ns.training_script == f"pipeline.{dag.BY_NAME[stage].cli}"
    assert ns.training_script_args == argv[argv.index(ns.training_script) + 1:]
    assert "--log-file" in ns.training_script_args
