"""The ImageNet configs: their recipes give the reference lr/wd schedule, and Snakemake plans the whole
Table 1 DAG on them without ImageNet, the weights or a GPU being present."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.params import load_params
from var.config import build_config
from var.schedule import lr_wd_at
from var.train import TrainConfig, schedule_lengths

from conftest import fixture_path

ROOT = Path(__file__).resolve().parents[1]
IMAGENET_TRAIN = 1_281_167          # images of the ImageNet-1k train split (the fixture's iters = ceil(N / B))
RECIPES = {"d16": ("imagenet256", "var-d16"), "d20": ("imagenet256", "var-d20"), "d24": ("imagenet256", "var-d24"),
           "d30": ("imagenet256", "var-d30"), "d36s_512": ("imagenet512", "var-d36-s")}


def train_section(config: str, model: str) -> TrainConfig:
    """The recipe exactly as the config file states it, through the strict loader of params.yaml sections."""
    raw = yaml.safe_load((ROOT / "configs" / f"{config}.yaml").read_text())
    return build_config(TrainConfig, raw["models"][model]["train"], f"models.{model}.train")


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_config_recipes_give_the_reference_schedule(name):
    fx = json.loads(fixture_path("fixture_lr_schedule.json").read_text())["configs"][name]
    config, model = RECIPES[name]
    cfg = train_section(config, model)
    a = fx["args"]
    assert (cfg.batch_size, cfg.epochs, cfg.base_lr_per_256, cfg.final_lr_ratio, cfg.weight_decay, cfg.wd_end) == \
        (a["bs"], a["ep"], a["tblr"], a["wpe"], a["twd"], a["twde"])
    iters, max_it, warmup_it = schedule_lengths(cfg, IMAGENET_TRAIN)
    assert (iters, max_it, warmup_it) == (fx["iters_per_ep"], fx["max_it"], fx["wp_it"])
    assert cfg.peak_lr == pytest.approx(fx["peak_lr"], rel=1e-15)
    for smp in fx["samples"]:
        lr, wd = lr_wd_at(smp["it"], peak_lr=cfg.peak_lr, max_it=max_it, warmup_it=warmup_it, wd=cfg.weight_decay,
                          wd_end=cfg.wd_end, warmup_start_ratio=cfg.warmup_start_ratio,
                          final_lr_ratio=cfg.final_lr_ratio, schedule=cfg.schedule)
        assert lr == pytest.approx(smp["lr"], rel=1e-12, abs=0) and wd == pytest.approx(smp["wd"], rel=1e-12)


def test_recipes_set_the_reference_adaln_gamma_init():
    gammas = [train_section("imagenet256", f"var-d{d}").init_adaln_gamma for d in (16, 20, 24, 30)]
    assert gammas == [1e-3, 1e-3, 1e-4, 1e-5]
    assert train_section("imagenet512", "var-d36-s").init_adaln_gamma == 5e-6


def test_configs_validate():
    for configs in (["imagenet256"], ["imagenet256", "imagenet256_released"], ["imagenet512"]):
        p = load_params(ROOT / "params.yaml", [ROOT / "configs" / f"{c}.yaml" for c in configs])
        assert all(p.model(m).train.micro_batch_size > 0 for m in p.table1_models)
    assert load_params(ROOT / "params.yaml", [ROOT / "configs" / "imagenet512.yaml"]).model("var-d36-s").model.shared_aln


@pytest.mark.parametrize("configs", [("imagenet256",), ("imagenet256", "imagenet256_released"), ("imagenet512",)])
def test_snakemake_plans_table1_without_imagenet(tmp_path, configs):
    for f in ("Snakefile", "params.yaml", "configs", "pipeline", "var", "eval"):
        src = ROOT / f
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / f)
    args = [str(Path(sys.executable).parent / "snakemake"), "-n", "-p", "--cores", "1", "table1", "--configfile",
            *[f"configs/{c}.yaml" for c in configs]]
    res = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    p = load_params(ROOT / "params.yaml", [ROOT / "configs" / f"{c}.yaml" for c in configs])
    released = "imagenet256_released" in configs
    for m in p.table1_models:
        for stage in ("import_weights" if released else "train_var", "sample", "score"):
            assert f"runs/{p.run.name}/var/{m}/" in out and f"pipeline.stages.{stage} " in out
        assert f"--model-name {m} " in out
    if not released:
        gpus = p.resources.gpus_for("train_var")
        assert f"torchrun --standalone --nproc_per_node {gpus} -m pipeline.stages.train_var" in out
    assert "python -m pipeline.stages.score " in out              # single-GPU stages keep the plain command


RELEASED = ("--configfile", "configs/imagenet256.yaml", "configs/imagenet256_released.yaml")
# Table 1 from released weights needs the weight files, the reference batch and the Inception weights: import the
# tokenizer, and per model import, sample, score; then the table. No data indexing, evaluation network, tokens,
# training or untrained sampling.
RELEASED_JOBS = {"import_tokenizer": 1, "import_var": 4, "sample": 4, "score": 4, "table1": 1}


def test_released_weights_table1_plans_only_what_it_needs(tmp_path):
    for f in ("Snakefile", "params.yaml", "configs", "pipeline", "var", "eval", ".dvc", ".dvcignore"):
        src = ROOT / f
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / f)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path), "DVC_NO_ANALYTICS": "1"}
    bin_ = Path(sys.executable).parent
    res = subprocess.run([str(bin_ / "snakemake"), "-n", "--cores", "1", "table1", *RELEASED], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, env=env)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    stats = out[out.index("Job stats:"):].split("total")[0].splitlines()[3:]
    assert {line.split()[0]: int(line.split()[1]) for line in stats if line.strip()} == RELEASED_JOBS, out
    # DVC: the same plan (dvc.yaml rendered for the two override files). `--force` previews without hashing the
    # weights (which this test does not create; DVC's plain --dry hashes every dependency first).
    subprocess.run([sys.executable, "-m", "pipeline.render", "--configfile", *RELEASED[1:]], cwd=tmp_path, check=True,
                   env=env, capture_output=True)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True, env=env)
    res = subprocess.run([str(bin_ / "dvc"), "repro", "--dry", "--force", "table1"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, env=env)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    ran = sorted(line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage"))
    models = load_params(ROOT / "params.yaml", [ROOT / c for c in RELEASED[1:]]).table1_models
    assert ran == sorted(["import_tokenizer", "table1", *(f"{s}_{m}" for s in ("import_var", "sample", "score")
                                                          for m in models)]), out
