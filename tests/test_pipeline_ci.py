"""The whole DAG on the `ci` config through both front ends, each in a scratch git repository: Snakemake in one,
`dvc repro` (on a dvc.yaml rendered for the override) in the other. They must write the same outputs (byte for byte,
wall-clock fields aside), which is also determinism across two from-scratch runs. Then DVC adopts the Snakemake run
(`dvc commit`), metrics are compared across two commits (`dvc metrics diff HEAD~1`), and a dvc.yaml left stale by a
params edit is refused."""
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

from pipeline.params import load_params
from pipeline.plan import build_plan

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKFLOW_FILES = ("Snakefile", "params.yaml", "configs", "pipeline", "var", "eval", ".dvc", ".dvcignore",
                  ".gitignore")
CI = ("--configfile", "configs/ci.yaml")
TARGETS = ("table1", "table3")
# Fixed identities and dates: two scratch repositories with the same files get the same commit hash, which the
# results record (provenance).
ENV = {"PATH": f"{BIN}:/usr/bin:/bin", "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "ci",
       "GIT_AUTHOR_EMAIL": "ci@example.com", "GIT_COMMITTER_NAME": "ci", "GIT_COMMITTER_EMAIL": "ci@example.com",
       "GIT_AUTHOR_DATE": "1767225600 +0000", "GIT_COMMITTER_DATE": "1767225600 +0000"}


def run(cmd, cwd, timeout=900, ok=True):
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                         env={**ENV, "HOME": str(cwd)})
    if ok:
        assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res.stdout + res.stderr if ok else res


def scratch_repo(dst: Path) -> None:
    """A clone-like copy of the workflow with dvc.yaml rendered for the ci override, committed to a new git repo."""
    for f in WORKFLOW_FILES:
        (shutil.copytree if (ROOT / f).is_dir() else shutil.copy)(
            ROOT / f, dst / f, **({"ignore": shutil.ignore_patterns("__pycache__", "tmp", "cache")}
                                  if (ROOT / f).is_dir() else {}))
    run([BIN / "python", "-m", "pipeline.render", "--configfile", "configs/ci.yaml"], dst)
    run(["git", "init", "-q"], dst)
    run(["git", "add", "-A"], dst)
    run(["git", "commit", "-q", "-m", "workflow"], dst)


# Wall-clock fields: the only values allowed to differ between two runs.
TIMING_KEY = re.compile(r"seconds|time|_per_s$|_s$|sec_per_image")
TIMING_COLUMNS = ("time", "cost")


def without_timing(obj):
    if isinstance(obj, dict):
        return {k: without_timing(v) for k, v in obj.items() if not TIMING_KEY.search(k)}
    return [without_timing(v) for v in obj] if isinstance(obj, list) else obj


def mask_md_columns(text: str, names=TIMING_COLUMNS) -> str:
    """A Markdown table with the cells of the named columns blanked (every table of the file), and the measured
    wall-clock ratio of Table 3's summary sentence."""
    text = re.sub(r"[0-9.]+x its measured wall-clock", "Nx its measured wall-clock", text)
    out, cols = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            cells = line.split("|")
            if not cols or set(cells[1].strip()) <= {"-", ":"}:
                cols = [i for i, c in enumerate(cells) if c.strip() in names] if not cols else cols
            else:
                cells = [("" if i in cols else c) for i, c in enumerate(cells)]
            out.append("|".join(cells))
        else:
            cols = []
            out.append(line)
    return "\n".join(out)


def assert_same_file(a: Path, b: Path) -> None:
    if a.read_bytes() == b.read_bytes():
        return
    name = str(a)
    if a.suffix == ".json":
        assert without_timing(json.loads(a.read_text())) == without_timing(json.loads(b.read_text())), name
    elif a.suffix == ".csv":
        ta, tb = (pd.read_csv(p) for p in (a, b))
        drop = [c for c in ta.columns if c in TIMING_COLUMNS]
        pd.testing.assert_frame_equal(ta.drop(columns=drop), tb.drop(columns=drop), obj=name)
    elif a.suffix == ".md":
        assert mask_md_columns(a.read_text()) == mask_md_columns(b.read_text()), name
    elif a.suffix == ".npz":
        with np.load(a, allow_pickle=False) as x, np.load(b, allow_pickle=False) as y:
            assert sorted(x.files) == sorted(y.files), name
            for k in x.files:
                assert np.array_equal(x[k], y[k]), f"{name}:{k}"
    else:
        raise AssertionError(f"{name} differs between the two front ends")


def outputs_of(targets, p) -> list[str]:
    """Every output of the jobs the targets need."""
    plan = build_plan(p)
    by_path = {o: j for j in plan.jobs for o in j.outputs.values()}
    todo = [j for j in plan.jobs if j.name in targets]
    seen: dict[str, object] = {}
    while todo:
        j = todo.pop()
        if j.name in seen:
            continue
        seen[j.name] = j
        todo += [by_path[i] for i in j.input_paths() if i in by_path]
    return sorted(o for j in seen.values() for o in j.outputs.values())


@pytest.mark.slow
def test_snakemake_and_dvc_agree_and_dvc_tracks_metrics(tmp_path_factory):
    p = load_params(ROOT / "params.yaml", [ROOT / "configs/ci.yaml"])
    smk, dvc = tmp_path_factory.mktemp("snakemake"), tmp_path_factory.mktemp("dvc")
    for d in (smk, dvc):
        scratch_repo(d)

    out = run([BIN / "snakemake", "--cores", "2", *TARGETS, "tokenizer_ablation", *CI], smk)
    assert "steps (100%) done" in out, out[-2000:]
    # a fresh workspace previews with --force (DVC's plain --dry hashes outputs that do not exist yet); nothing runs
    preview = run([BIN / "dvc", "repro", "--dry", "--force", "table1"], dvc)
    planned = re.findall(r"Running stage '([^']+)'", preview)
    assert planned[0] == "data" and planned[-1] == "table1" and "evalnet" in planned, preview
    assert not (dvc / "runs").exists()
    run([BIN / "dvc", "repro", *TARGETS], dvc)

    files = outputs_of(TARGETS, p)
    assert "results/ci/table1.csv" in files and "metrics/ci/table1.json" in files
    for f in files:
        assert_same_file(smk / f, dvc / f)

    # the results themselves
    assert "| residual-full |" in (smk / "results/ci/tokenizer_ablation.md").read_text()
    df = pd.read_csv(smk / "results/ci/table1.csv")
    meas = df[df.source == "measured"]
    assert list(meas.model) == [*p.table1_models, "validation data"]
    assert all(math.isfinite(v) for v in meas[["FID", "IS", "Pre", "Rec"]].to_numpy().ravel())
    assert set(df[df.source == "paper"].model) >= {"VAR-d16", "VAR-d30"}
    md = (smk / "results/ci/table1.md").read_text()
    assert "evalnet-FID" in md and "SMOKE TEST" in md.splitlines()[0]
    scores = json.loads((smk / f"runs/ci/var/{p.table1_models[0]}/scores.json").read_text())
    assert 0.0 <= scores["class_acc_evalnet"] <= 1.0
    assert scores["provenance"]["config_files"] == ["params.yaml", "configs/ci.yaml"]
    assert re.fullmatch(r"[0-9a-f]{40}", scores["provenance"]["git_commit"])
    for m in p.table1_models:        # resume state stays outside the declared outputs
        assert (smk / f"runs/ci/state/train_var/{m}/state.pt").is_file()
    assert "Nothing to be done" in run([BIN / "snakemake", "-n", "--cores", "2", *TARGETS, *CI], smk)

    # DVC adopts the Snakemake run: `dvc commit` records dvc.lock; then nothing is stale and repro reruns nothing
    built = [*TARGETS, "tokenizer_ablation"]
    run([BIN / "dvc", "commit", "-f", "-q", "--with-deps", *built], smk)
    assert "up to date" in run([BIN / "dvc", "status", "--with-deps", *built], smk)
    assert "Running stage" not in run([BIN / "dvc", "repro", *built], smk)

    # Metrics across two commits: a params edit, rerun, commit, `dvc metrics diff HEAD~1`
    run(["git", "add", "-A"], dvc)
    run(["git", "commit", "-q", "-m", "ci run"], dvc)
    cfg = dvc / "configs/ci.yaml"
    raw = yaml.safe_load(cfg.read_text())
    raw["sample"]["sampler"] = {"cfg": 3.0}
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    dry = run([BIN / "dvc", "repro", "--dry", "table1"], dvc)      # the plain preview, once the outputs exist
    assert "Running stage 'sample_ci-d2'" in dry and "Running stage 'train_var_ci-d2'" not in dry, dry
    repro = run([BIN / "dvc", "repro", "table1"], dvc)
    assert "Running stage 'sample_ci-d2'" in repro and "Running stage 'train_var_ci-d2'" not in repro
    run(["git", "add", "-A"], dvc)
    run(["git", "commit", "-q", "-m", "cfg 3"], dvc)
    diff = run([BIN / "dvc", "metrics", "diff", "HEAD~1"], dvc)
    assert "metrics/ci/table1.json" in diff and f"{p.table1_models[0]}.fid_evalnet" in diff, diff

    # Two Table 3 rows as DVC experiments: the shared stages (data, evalnet, tokenizer, tokens) are not rerun, and
    # `dvc metrics diff` between the experiments lists the row metrics with their values
    first = run([BIN / "dvc", "exp", "run", "-n", "var-plain", "-S", "ablation.row=var-plain", "ablation"], dvc)
    second = run([BIN / "dvc", "exp", "run", "-n", "var-adaln", "-S", "ablation.row=var-adaln", "ablation"], dvc)
    for log in (first, second):
        assert "Running stage 'ablation_train'" in log, log[-3000:]
        for shared in ("data", "evalnet", "tokenizer", "tokens", "tokenizer_ar", "tokens_ar"):
            assert f"Running stage '{shared}'" not in log, f"{shared} ran again:\n{log[-3000:]}"
    diff = run([BIN / "dvc", "metrics", "diff", "var-plain", "var-adaln"], dvc)
    assert "metrics/ci/ablation.json" in diff and "fid_evalnet" in diff and "val_loss" in diff, diff
    assert "fid_evalnet_sd" in diff, diff      # the experiments score every sampling seed (the count: below)
    # --csv: the table view truncates names to the terminal width
    shown = run([BIN / "dvc", "exp", "show", "--csv"], dvc)
    assert "var-plain" in shown and "var-adaln" in shown and "ablation.row" in shown, shown
    run([BIN / "dvc", "plots", "diff", "var-plain", "var-adaln", "-o", "plots_html"], dvc)
    html = next((dvc / "plots_html").glob("*.html")).read_text()
    assert "ablation_train.png" in html and "<script src=\"http" not in html      # images: renders offline
    # Table 3 built from the experiments: each row's FID is the one `dvc metrics diff` showed for its experiment
    run([BIN / "python", "-m", "pipeline.exp_table", "--configfile", "configs/ci.yaml", "--rows", "var-plain",
         "var-adaln"], dvc)
    table = pd.read_csv(dvc / "results/ci/table3_experiments.csv")
    fid_line = next(ln.split() for ln in diff.splitlines() if ln.split()[1:2] == ["fid_evalnet"])
    assert list(table.row) == ["var-plain", "var-adaln"] and list(table.experiment) == ["var-plain", "var-adaln"]
    assert list(table.seeds) == [p.score.seeds] * 2 and table.FID_sd.notna().all()
    assert table.FID.round(4).tolist() == pytest.approx([float(fid_line[2]), float(fid_line[3])], abs=1e-4)

    # A params edit that changes the plan, without re-rendering dvc.yaml: the stale command is refused
    # (the models in another order: the rows and zeroshot keep naming table1 models, table1's command changes)
    raw["table1"]["models"] = list(reversed(p.table1_models))
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    res = run([BIN / "dvc", "repro", "table1"], dvc, ok=False)
    assert res.returncode != 0 and "dvc.yaml is stale" in res.stdout + res.stderr, res.stdout + res.stderr
