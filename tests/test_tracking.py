"""Nothing changes unseen: an edit, addition or removal of one image in an image folder makes both front ends report
the data stage (and so everything after it) out of date, and Snakemake's `--config` (which the stage commands would
never see) is refused."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FOLDER_CONFIG = """\
run: {name: folder}
data: {kind: imagefolder, root: imgs, image_size: 16, num_classes: 2}
"""


def copy_repo(dst: Path) -> dict:
    for f in ("Snakefile", "params.yaml", "configs", "pipeline", "var", "eval", ".dvc", ".dvcignore"):
        src = ROOT / f
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst / f)
    return {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(dst), "DVC_NO_ANALYTICS": "1",
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def write_image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)


def run(args, cwd: Path, env: dict, ok: bool = True) -> str:
    res = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    if ok:
        assert res.returncode == 0, out[-4000:]
    return out


def snakemake_plans(cwd: Path, env: dict) -> set[str]:
    """The jobs `snakemake -n table1` would run."""
    out = run([BIN / "snakemake", "-n", "--cores", "1", "table1", "--configfile", "configs/ci.yaml", "folder.yaml"],
              cwd, env)
    if "Nothing to be done" in out:
        return set()
    stats = out[out.index("Job stats:"):].split("total")[0].splitlines()[3:]
    return {line.split()[0] for line in stats if line.strip()}


@pytest.fixture(scope="module")
def folder_repo(tmp_path_factory):
    """A copy of the repository with an image folder as the data, its data stage run by Snakemake and adopted by
    DVC (so both report it up to date before each change)."""
    repo = tmp_path_factory.mktemp("tracking")
    env = copy_repo(repo)
    (repo / "folder.yaml").write_text(FOLDER_CONFIG)
    for split, n in (("train", 3), ("val", 2)):
        for c in ("cat", "dog"):
            for i in range(n):
                write_image(repo / f"imgs/{split}/{c}/{i}.png", 10 * i + len(c) + len(split))
    run([sys.executable, "-m", "pipeline.render", "--configfile", "configs/ci.yaml", "folder.yaml"], repo, env)
    run(["git", "init", "-q"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "base"], repo, env)
    run([BIN / "snakemake", "--cores", "1", "data", "--configfile", "configs/ci.yaml", "folder.yaml"], repo, env)
    return repo, env


def adopt(repo: Path, env: dict) -> None:
    """Make both front ends consider the data stage done for the folder as it is now."""
    run([BIN / "snakemake", "--cores", "1", "data", "--configfile", "configs/ci.yaml", "folder.yaml"], repo, env)
    run([BIN / "dvc", "commit", "-f", "data"], repo, env)
    assert "data" not in snakemake_plans(repo, env)
    assert "Data and pipelines are up to date" in run([BIN / "dvc", "status", "data"], repo, env)


@pytest.mark.parametrize("change", ["edit", "add", "remove"])
def test_a_changed_image_folder_reruns_the_data_stage_in_both_front_ends(folder_repo, change):
    repo, env = folder_repo
    adopt(repo, env)
    before = snakemake_plans(repo, env)
    target = repo / "imgs/train/cat/0.png"
    if change == "edit":                  # same size, same name: only the pixels (and the mtime) change
        arr = np.asarray(Image.open(target)).copy()
        arr[0, 0] = 255 - arr[0, 0]
        Image.fromarray(arr).save(target)
        os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    elif change == "add":
        write_image(repo / "imgs/train/dog/9.png", 99)
    else:
        (repo / "imgs/train/dog/2.png").unlink()
    after = snakemake_plans(repo, env)
    assert "data" in after and "data" not in before, (before, after)
    assert after >= {"data", "tokenizer", "tokens", "train_var", "sample", "score", "table1"}, after
    status = run([BIN / "dvc", "status", "data"], repo, env)
    assert "data:" in status and "modified" in status and "imgs" in status, status
    # downstream: `dvc repro tokens` (and every later stage) reaches the changed data stage first
    down = run([BIN / "dvc", "status", "--with-deps", "tokens"], repo, env)
    assert "data:" in down and "imgs" in down, down


def test_snakemake_config_overrides_are_refused(tmp_path):
    env = copy_repo(tmp_path)
    out = run([BIN / "snakemake", "-n", "--cores", "1", "table1", "--config", "seed=5"], tmp_path, env, ok=False)
    assert "--config is not supported (seed)" in out and "--configfile" in out, out[-2000:]
    nested = run([BIN / "snakemake", "-n", "--cores", "1", "table1", "--configfile", "configs/ci.yaml", "--config",
                  'sample={"per_class": 3}'], tmp_path, env, ok=False)
    assert "--config is not supported (sample.per_class)" in nested, nested[-2000:]
    # the same keys from a file are honoured: every stage command receives the file
    (tmp_path / "more.yaml").write_text("sample: {per_class: 3}\n")
    out = run([BIN / "snakemake", "-n", "--cores", "1", "-p", "table1", "--configfile", "configs/ci.yaml",
               "more.yaml"], tmp_path, env)
    assert "--configfile configs/ci.yaml --configfile more.yaml" in out, out[-2000:]
