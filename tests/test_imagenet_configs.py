"""The ImageNet configs: their recipes are the reference's flags for the released models, give the reference lr/wd
schedule, and Snakemake plans the whole Table 1 DAG on them without ImageNet, the weights or a GPU being present.

The reference flags of each recipe are tests/data/fixture_lr_schedule.json's `args` (a copy of
../shared/fixtures/fixture_lr_schedule.json: bs, ep, tblr, wpe, twd, twde) plus the AdaLN gamma init `alng` of the
README commands; every other flag is the reference default. They are translated by
var.reference_args.train_config_from_reference, the same mapping the training-step parity test uses."""
from __future__ import annotations

import inspect
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import fixture_path

from pipeline.params import load_params
from var.config import build_config, config_to_dict
from var.reference_args import REFERENCE_TRAIN_DEFAULTS, train_config_from_reference
from var.schedule import lr_wd_at
from var.train import SPEED_ONLY_KEYS, TrainConfig, schedule_lengths
from var.transformer import VAR

ROOT = Path(__file__).resolve().parents[1]
LR_SCHEDULE = fixture_path("fixture_lr_schedule.json")
IMAGENET_TRAIN = 1_281_167          # images of the ImageNet-1k train split (the fixture's iters = ceil(N / B))
RECIPES = {"d16": ("imagenet256", "var-d16"), "d20": ("imagenet256", "var-d20"), "d24": ("imagenet256", "var-d24"),
           "d30": ("imagenet256", "var-d30"), "d36s_512": ("imagenet512", "var-d36-s")}
ALNG = {"d16": 1e-3, "d20": 1e-3, "d24": 1e-4, "d30": 1e-5, "d36s_512": 5e-6}   # README commands' --alng
# TrainConfig fields that are not part of a recipe: how a run is executed and logged. `precision` too: the configs
# train in bf16 autocast, a choice of arithmetic (the reference flag fp16 1 = fp16 with a loss scaler is not
# implemented, train_config_from_reference refuses it).
NOT_RECIPE = {"seed", "ckpt_every_steps", "eval_every_epochs", "eval_batch_size", "log_every_steps", "nan_policy",
              "micro_batch_size", "shard_optimizer", "precision", *SPEED_ONLY_KEYS}


def train_section(config: str, model: str) -> TrainConfig:
    """The recipe exactly as the config file states it, through the strict loader of params.yaml sections."""
    raw = yaml.safe_load((ROOT / "configs" / f"{config}.yaml").read_text())
    return build_config(TrainConfig, raw["models"][model]["train"], f"models.{model}.train")


def reference_flags(name: str) -> dict:
    return {**json.loads(LR_SCHEDULE.read_text())["configs"][name]["args"], "alng": ALNG[name]}


def recipe(cfg: TrainConfig) -> dict:
    """The recipe settings of a TrainConfig, with the '-1: default' conventions resolved to the values they mean."""
    d = {k: v for k, v in config_to_dict(cfg).items() if k not in NOT_RECIPE}
    d["warmup_epochs"] = cfg.warmup_epochs if cfg.warmup_epochs >= 0 else cfg.epochs / 50
    d["weight_decay_end"] = cfg.wd_end
    model_default = inspect.signature(VAR.init_weights).parameters["init_adaln_gamma"].default
    d["init_adaln_gamma"] = cfg.init_adaln_gamma if cfg.init_adaln_gamma >= 0 else model_default
    return d


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_config_recipes_are_the_reference_flags(name):
    """Every recipe setting of the config file equals the reference flags' translation."""
    cfg = train_section(*RECIPES[name])
    assert recipe(cfg) == recipe(train_config_from_reference(reference_flags(name)))


def test_train_config_defaults_are_the_reference_defaults():
    """TrainConfig() is the reference's default recipe, except the run length: epochs defaults to 200 here, 250 in the
    reference (every config sets epochs or max_steps; the default feeds every stage's fingerprint)."""
    assert REFERENCE_TRAIN_DEFAULTS["ep"] == 250 and TrainConfig().epochs == 200
    ref = train_config_from_reference({"ep": TrainConfig().epochs})
    assert recipe(TrainConfig()) == recipe(ref)
    assert TrainConfig().precision == ref.precision == "fp32"


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_config_recipes_give_the_reference_schedule(name):
    fx = json.loads(fixture_path("fixture_lr_schedule.json").read_text())["configs"][name]
    config, model = RECIPES[name]
    cfg = train_section(config, model)      # its settings are the flags': test_config_recipes_are_the_reference_flags
    iters, max_it, warmup_it = schedule_lengths(cfg, IMAGENET_TRAIN)
    assert (iters, max_it, warmup_it) == (fx["iters_per_ep"], fx["max_it"], fx["wp_it"])
    assert cfg.peak_lr == pytest.approx(fx["peak_lr"], rel=1e-15)
    for smp in fx["samples"]:
        lr, wd = lr_wd_at(smp["it"], peak_lr=cfg.peak_lr, max_it=max_it, warmup_it=warmup_it, wd=cfg.weight_decay,
                          wd_end=cfg.wd_end, warmup_start_ratio=cfg.warmup_start_ratio,
                          final_lr_ratio=cfg.final_lr_ratio, schedule=cfg.schedule)
        assert lr == pytest.approx(smp["lr"], rel=1e-12, abs=0) and wd == pytest.approx(smp["wd"], rel=1e-12)


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
