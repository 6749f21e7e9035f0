"""The whole DAG on the `ci` config, run by Snakemake in a scratch copy of the repository; then DVC adopts the
finished run (`dvc commit -f`) and `dvc repro` has nothing left to do; a second run from scratch gives identical
tokens, samples and scores."""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.params import load_params, load_raw

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKFLOW_FILES = ("Snakefile", "configs", "pipeline", "var", "eval")


def run(cmd, cwd, timeout=240):
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(cwd), "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "ci",
           "GIT_AUTHOR_EMAIL": "ci@example.com", "GIT_COMMITTER_NAME": "ci", "GIT_COMMITTER_EMAIL": "ci@example.com"}
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res.stdout + res.stderr


def scratch_repo(dst: Path) -> None:
    for f in WORKFLOW_FILES:
        (shutil.copytree if (ROOT / f).is_dir() else shutil.copy)(ROOT / f, dst / f,
                                                                  **({"ignore": shutil.ignore_patterns("__pycache__")}
                                                                     if (ROOT / f).is_dir() else {}))
    # params.yaml of the scratch repo = params.yaml merged with configs/ci.yaml, so DVC (which has no override
    # files) sees the same values as Snakemake; tests/test_dag.py checks --configfile forwarding separately.
    (dst / "params.yaml").write_text(yaml.safe_dump(load_raw(ROOT / "params.yaml", [ROOT / "configs/ci.yaml"]),
                                                    sort_keys=False))


# Wall-clock fields, and the evalnet checkpoint's sha256 (its weights are identical, but it stores its training time).
TIMING_KEY = re.compile(r"seconds|time|_per_s$|_s$|^weights_sha256$")


def without_timing(obj):
    """A metrics/scores JSON without its wall-clock fields (the only values allowed to differ between runs)."""
    if isinstance(obj, dict):
        return {k: without_timing(v) for k, v in obj.items() if not TIMING_KEY.search(k)}
    return [without_timing(v) for v in obj] if isinstance(obj, list) else obj


def assert_same_results(a: Path, b: Path, models) -> None:
    """Two from-scratch runs: identical tokens, samples, scores and training metrics (determinism)."""
    npz = ["runs/tokens/train.npz", "runs/tokens/val.npz", *(f"runs/var/{m}/samples.npz" for m in models)]
    for f in npz:
        with np.load(a / f, allow_pickle=False) as x, np.load(b / f, allow_pickle=False) as y:
            assert sorted(x.files) == sorted(y.files), f
            for k in x.files:
                assert np.array_equal(x[k], y[k]), f"{f}:{k} differs between two runs"
    js = ["runs/tokenizer/metrics.json", "runs/evalnet/metrics.json", "runs/valdata/scores.json",
          *(f"runs/var/{m}/{n}" for m in models for n in ("metrics.json", "scores.json"))]
    for f in js:
        assert without_timing(json.loads((a / f).read_text())) == without_timing(json.loads((b / f).read_text())), f
    ta, tb = (pd.read_csv(d / "results/table1.csv").drop(columns=["time"]) for d in (a, b))
    pd.testing.assert_frame_equal(ta, tb)


@pytest.mark.slow
def test_ci_dag_end_to_end_and_dvc_adopts_it(tmp_path, tmp_path_factory):
    scratch_repo(tmp_path)
    p = load_params(tmp_path / "params.yaml")
    run([BIN / "python", "-m", "pipeline.render"], tmp_path)

    out = run([BIN / "snakemake", "--cores", "2", "table1", "tokenizer_ablation"], tmp_path)
    assert "steps (100%) done" in out, out[-2000:]
    assert "| residual-full |" in (tmp_path / "results/tokenizer_ablation.md").read_text()
    assert (tmp_path / "runs/tokenizer/history.csv").read_text().startswith("epoch,")
    for m in p.table1_models:
        for f in ("model.pt", "metrics.json", "samples.npz", "grid.png", "sample_metrics.json", "scores.json"):
            assert (tmp_path / "runs/var" / m / f).is_file(), f"{m}/{f}"
        assert (tmp_path / "runs/state/train_var" / m / "state.pt").is_file()   # resume state, not an output
    df = pd.read_csv(tmp_path / "results/table1.csv")
    meas = df[df.source == "measured"]
    assert list(meas.model) == [*p.table1_models, "validation data"]
    assert all(math.isfinite(v) for v in meas[["FID", "IS", "Pre", "Rec"]].to_numpy().ravel())
    assert set(df[df.source == "paper"].model) >= {"VAR-d16", "VAR-d30"}
    assert "evalnet-FID" in (tmp_path / "results/table1.md").read_text()
    scores = json.loads((tmp_path / "runs/var" / p.table1_models[0] / "scores.json").read_text())
    assert 0.0 <= scores["class_acc_evalnet"] <= 1.0

    assert "Nothing to be done" in run([BIN / "snakemake", "-n", "--cores", "2", "table1"], tmp_path)

    # DVC adopts the Snakemake run: `dvc commit -f` records dvc.lock; then nothing is stale and repro reruns nothing
    run(["git", "init", "-q"], tmp_path)
    run([BIN / "dvc", "init", "-q"], tmp_path)
    # (only the stages this run built: the other targets' stages -- tables 2/3, scaling -- were not run here)
    built = ["table1", "tokenizer_ablation"]
    run([BIN / "dvc", "commit", "-f", "-q", "--with-deps", *built], tmp_path)
    assert "up to date" in run([BIN / "dvc", "status", "--with-deps", *built], tmp_path)
    repro = run([BIN / "dvc", "repro", *built], tmp_path)
    assert "Running stage" not in repro, repro
    assert "runs/valdata/scores.json" in run([BIN / "dvc", "metrics", "show"], tmp_path)

    # Determinism: the same DAG from scratch in a second directory gives identical results on CPU.
    again = tmp_path_factory.mktemp("ci_again")
    scratch_repo(again)
    run([BIN / "snakemake", "--cores", "2", "table1"], again)
    assert_same_results(tmp_path, again, p.table1_models)
