"""Crash safety through the real stage CLIs: atomic artifacts (a stage killed mid-write leaves nothing at its output
path and Snakemake reruns it), clear errors for bad input that name the file or key, safe loading everywhere.

Stage CLIs run in subprocesses (they set process-wide torch flags and logging), on the tiny `ci` params."""
from __future__ import annotations

import dataclasses
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pipeline.params import load_params, load_raw
from var.checkpoint import save_checkpoint
from var.data import load_split_arrays
from var.io import atomic_path, atomic_savez, atomic_torch_save, load_npz, load_torch
from var.transformer import VAR
from var.vqvae import VQVAE

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SOURCE_DIRS = ("pipeline", "var", "eval")


def ci_raw(**data) -> dict:
    raw = load_raw(ROOT / "params.yaml", [ROOT / "configs/ci.yaml"])
    if data:
        raw["data"] = data
    return raw


def write_params(tmp_path: Path, raw: dict, name: str = "params.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def stage(module: str, cwd: Path, *args, params="params.yaml", log="stage.log", expect_ok=True, argv0=None):
    """Run `python -m pipeline.stages.<module>` (or a wrapper script) in `cwd`; returns (returncode, log text + output)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, *(argv0 or ["-m", f"pipeline.stages.{module}"]), "--params", str(params), "--log", log,
           "--device", "cpu", *map(str, args)]
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=180, env=env)
    text = ((cwd / log).read_text() if (cwd / log).is_file() else "") + res.stdout + res.stderr
    if expect_ok is not None:
        assert (res.returncode == 0) == expect_ok, f"{' '.join(cmd)} -> {res.returncode}\n{text[-4000:]}"
    return res.returncode, text


# ------------------------------------------------------------------------------------------- atomic writes
class Killed(BaseException):
    """Stands for the process dying: not an Exception, so no `except Exception` in the writer can swallow it."""


@pytest.mark.parametrize("writer", ["savez", "torch", "raw"])
def test_exception_mid_write_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch, writer):
    """A writer failing half-way leaves neither a partial file at the path nor a temp file, and a complete
    earlier version stays untouched (the rename is the only step that makes a file visible)."""
    out = tmp_path / "out" / "artifact.bin"

    def boom(f, *a, **k):                      # writes half a file, then the process "dies"
        (f.write if hasattr(f, "write") else Path(f).write_bytes)(b"PARTIAL" * 100)
        raise Killed("killed mid-write")

    def write():
        if writer == "savez":
            monkeypatch.setattr(np, "savez", boom)
            atomic_savez(out, a=np.zeros(3))
        elif writer == "torch":                # serialised in memory, then written: die half-way through that
            def half(self, data):
                with open(self, "wb") as f:
                    f.write(data[:len(data) // 2])
                raise Killed("killed mid-write")
            monkeypatch.setattr(Path, "write_bytes", half)
            atomic_torch_save(out, {"a": torch.zeros(3)})
        else:
            with atomic_path(out) as tmp:
                boom(tmp)

    with pytest.raises(Killed):
        write()
    assert not out.exists()
    assert list(out.parent.iterdir()) == []                                 # no temp file left behind
    with open(out, "wb") as f:
        f.write(b"complete old version")
    with pytest.raises(Killed):
        write()
    assert out.read_bytes() == b"complete old version"
    assert [p.name for p in out.parent.iterdir()] == ["artifact.bin"]


KILL_ON_SECOND_SAVEZ = textwrap.dedent('''
    import os, signal, sys
    import numpy as np
    calls = []
    real = np.savez
    def savez(f, **arrays):
        calls.append(1)
        if len(calls) == 2:             # the second output (val split): write part of it, then SIGKILL ourselves
            f.write(b"PK\\x03\\x04 partial zip")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real(f, **arrays)
    np.savez = savez
    from pipeline.stages.data import cli
    cli(sys.argv[1:])
''')


def copy_workflow(dst: Path, raw: dict) -> None:
    for f in ("Snakefile", "configs", "pipeline", "var", "eval"):
        src = ROOT / f
        if src.is_dir():
            shutil.copytree(src, dst / f, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst / f)
    write_params(dst, raw)


def test_stage_killed_mid_write_leaves_no_output_and_snakemake_reruns_it(tmp_path):
    copy_workflow(tmp_path, ci_raw())
    (tmp_path / "kill_data.py").write_text(KILL_ON_SECOND_SAVEZ)
    # the data job's own paths (runs/<run.name>/data/, the ci config's run is `ci`), so Snakemake sees them
    code, text = stage("data", tmp_path, "--train", "runs/ci/data/train.npz", "--val", "runs/ci/data/val.npz",
                       "--classes", "runs/ci/data/classes.json", argv0=["kill_data.py"], log="logs/ci/data.log",
                       expect_ok=None)
    assert code == -signal.SIGKILL, text
    data = tmp_path / "runs/ci/data"
    assert (data / "train.npz").is_file()                  # finished before the kill: complete and loadable
    load_split_arrays(data / "train.npz")
    assert not (data / "val.npz").exists() and not (data / "classes.json").exists()
    leftovers = [p.name for p in data.iterdir() if p.name != "train.npz"]
    # the only trace of the killed write: a hidden temp file, which no stage's declared input can name
    assert len(leftovers) == 1 and re.fullmatch(r"\.val\.npz\..+\.tmp\.npz", leftovers[0]), leftovers

    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path)}
    res = subprocess.run([BIN / "snakemake", "--cores", "1", "data"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=180, env=env)
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "rule data:" in out, out[-3000:]
    assert re.search(r"[Mm]issing output files", out), out[-3000:]
    for f in ("train.npz", "val.npz"):
        load_split_arrays(data / f)
    assert yaml.safe_load((data / "classes.json").read_text())["num_classes"] == 4
    res = subprocess.run([BIN / "snakemake", "-n", "--cores", "1", "data"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=180, env=env)
    assert "Nothing to be done" in res.stdout + res.stderr


WRITE_PATTERNS = r"np\.savez|torch\.save\(|\.save\(|(?<![\w.])open\([^)]*['\"][wax]b?\+?['\"]|\.write_text\(|" \
                 r"\.write_bytes\(|json\.dump\(|\.to_csv\((?!index=)|shutil\.copy|os\.rename|os\.replace"
# By convention the temporary path of `with atomic_path(out) as tmp:` is `tmp`: writes to it are fine.
INSIDE_ATOMIC_PATH = re.compile(r"\(tmp\b|, tmp\)")
ALLOWED_WRITES = {("eval/inception.py", "torch.save({}, buf)"),   # an in-memory buffer, not a file
                  ("pipeline/common.py", 'open(path, "a+")')}       # the job lock (flock), not an artifact


def test_every_writer_goes_through_var_io():
    """grep: outside var/io.py, no pipeline/library code writes a file except through var.io's atomic helpers."""
    offenders = []
    for d in SOURCE_DIRS:
        for f in sorted((ROOT / d).rglob("*.py")):      # pipeline/stages/ and var/config/ included
            rel = f.relative_to(ROOT).as_posix()
            if rel == "var/io.py":
                continue
            text = re.sub(r'"""[\s\S]*?"""', lambda m: "\n" * m.group().count("\n"), f.read_text())  # docstrings
            for n, line in enumerate(text.splitlines(), 1):
                code = line.split("#", 1)[0]
                if re.search(WRITE_PATTERNS, code) and not INSIDE_ATOMIC_PATH.search(code) \
                        and not any(rel == a and s in code for a, s in ALLOWED_WRITES):
                    offenders.append(f"{rel}:{n}: {line.strip()}")
    assert offenders == [], "non-atomic writes:\n" + "\n".join(offenders)


# ------------------------------------------------------------------------------------------- safe loading
def _calls(text: str, name: str):
    """The full argument text of every call `name(...)` (balanced parentheses)."""
    for m in re.finditer(re.escape(name) + r"\(", text):
        depth, i = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        yield text[m.start():i]


def test_every_load_is_safe():
    """grep: every torch.load passes weights_only=True and every np.load allow_pickle=False (tests included)."""
    bad = []
    for d in (*SOURCE_DIRS, "tests", "benchmarks", "scripts"):
        for f in sorted((ROOT / d).rglob("*.py")):
            text = f.read_text()
            if f.name == Path(__file__).name:
                continue
            bad += [f"{f.relative_to(ROOT)}: {c}" for c in _calls(text, "torch.load") if "weights_only=True" not in c]
            bad += [f"{f.relative_to(ROOT)}: {c}" for c in _calls(text, "np.load") if "allow_pickle=False" not in c]
    assert bad == [], "\n".join(bad)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_torch_load_default_refuses_pickles(tmp_path, monkeypatch):
    """A bare torch.load defaults to weights_only=True in the installed torch, so a payload is refused (and
    `load_torch` refuses it explicitly). torch-fidelity 0.4.0 passes weights_only=False for its Inception file,
    which is why eval/inception.py never hands it a file (tests/test_weights_safety.py)."""
    monkeypatch.chdir(tmp_path)
    torch.save({"w": torch.zeros(1)}, tmp_path / "ok.pt")
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"w": _Evil()}, f)
    assert torch.load(tmp_path / "ok.pt")["w"].shape == (1,)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "evil.pt")
    with pytest.raises(Exception, match="evil.pt"):
        load_torch(tmp_path / "evil.pt")
    np.savez(tmp_path / "obj.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(Exception, match="pickle"):
        load_npz(tmp_path / "obj.npz")
    assert not (tmp_path / "PWNED").exists()


# ------------------------------------------------------------------------------------------------- bad input
def image_folder(root: Path, corrupt: bool) -> None:
    """root/{train,val}/{a,b}: RGB, grayscale, RGBA, palette images at odd sizes (+ a truncated and a fake JPEG)."""
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
        Image.new("RGB", (40, 30), (255, 0, 0)).save(root / split / "a" / "rgb.jpg", quality=95)
        Image.new("L", (30, 50), 128).save(root / split / "a" / "gray.png")
        Image.new("RGBA", (32, 32), (0, 0, 255, 0)).save(root / split / "b" / "alpha.png")
        Image.new("P", (20, 20), 3).save(root / split / "b" / "pal.bmp")
        Image.new("LA", (24, 24), (50, 255)).save(root / split / "b" / "gray_alpha.png")
    if corrupt:
        big = root / "train" / "a" / "big.jpg"
        Image.new("RGB", (64, 64), (9, 99, 199)).save(big, quality=95)
        (root / "train" / "a" / "truncated.jpg").write_bytes(big.read_bytes()[:300])
        (root / "train" / "b" / "fake.jpg").write_bytes(b"this is not a jpeg at all")


def folder_params(tmp_path: Path, root: Path, **extra) -> Path:
    return write_params(tmp_path, ci_raw(kind="imagefolder", root=str(root), image_size=16, num_classes=2,
                                         **extra))


DATA_OUT = ("--train", "data/train.npz", "--val", "data/val.npz", "--classes", "data/classes.json")


def test_corrupt_image_fails_the_data_stage_naming_the_file(tmp_path):
    image_folder(tmp_path / "imgs", corrupt=True)
    folder_params(tmp_path, tmp_path / "imgs")
    _, text = stage("data", tmp_path, *DATA_OUT, expect_ok=False)
    assert "CorruptImageError" in text and "truncated.jpg" in text and "data.skip_corrupt" in text, text
    assert "2 undecodable" in text
    assert not (tmp_path / "data").exists() or list((tmp_path / "data").iterdir()) == []


def test_skip_corrupt_counts_in_log_and_modes_reach_the_tokens(tmp_path):
    """skip_corrupt: the data stage drops the 2 bad files with a count in its log; grayscale, RGBA, LA and palette
    images then go through the real `tokens` stage as (N, L) token maps."""
    image_folder(tmp_path / "imgs", corrupt=True)
    folder_params(tmp_path, tmp_path / "imgs", skip_corrupt=True)
    _, text = stage("data", tmp_path, *DATA_OUT)
    assert "skipped 2 undecodable image(s) of 8" in text and "skipped=2" in text, text
    assert "truncated.jpg" in text and "fake.jpg" in text
    _, paths, labels = load_split_arrays(tmp_path / "data/train.npz")
    assert sorted(Path(p).name for p in paths) == ["alpha.png", "big.jpg", "gray.png", "gray_alpha.png",
                                                   "pal.bmp", "rgb.jpg"]
    p = load_params(tmp_path / "params.yaml")
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "tok.pt", VQVAE(p.tokenizer.model), kind="vqvae")
    tok_args = ("--tokenizer", "tok.pt", "--train", "data/train.npz", "--val", "data/val.npz",
                "--train-tokens", "tokens/train.npz", "--val-tokens", "tokens/val.npz")
    stage("tokens", tmp_path, *tok_args, log="tokens.log")
    t = load_npz(tmp_path / "tokens/train.npz")
    L = sum(pn * pn for pn in p.tokenizer.model.patch_nums)
    assert t["idx_NL"].shape == (6, L) and t["labels_N"].tolist() == labels.tolist()


def test_checkpoint_not_matching_the_params_is_refused_by_the_stage(tmp_path):
    """tokens stage given a VAR checkpoint, a tokenizer of another config, or no file: exit 1, names the file."""
    p = load_params(write_params(tmp_path, ci_raw()))
    arrays = np.zeros((4, 16, 16, 3), np.uint8)
    atomic_savez(tmp_path / "split.npz", images=arrays, labels=np.arange(4, dtype=np.int64))
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "var.pt", VAR(p.models["ci-d2"].model), kind="var")
    other = VQVAE(dataclasses.replace(p.tokenizer.model, vocab_size=32))
    save_checkpoint(tmp_path / "tok32.pt", other, kind="vqvae")
    args = ("--train", "split.npz", "--val", "split.npz", "--train-tokens", "t.npz", "--val-tokens", "v.npz")
    _, text = stage("tokens", tmp_path, "--tokenizer", "var.pt", *args, expect_ok=False)
    assert "var.pt: holds a 'var' model, expected 'vqvae'" in text, text
    _, text = stage("tokens", tmp_path, "--tokenizer", "tok32.pt", *args, expect_ok=False)
    assert "tok32.pt does not match params 'tokenizer.model'" in text and "vocab_size: checkpoint 32 vs params 64" \
        in text, text
    _, text = stage("tokens", tmp_path, "--tokenizer", "nope.pt", *args, expect_ok=False)
    assert "missing file: nope.pt" in text, text
    assert not (tmp_path / "t.npz").exists() and not (tmp_path / "v.npz").exists()


def test_misspelled_params_key_through_a_stage(tmp_path):
    raw = ci_raw()
    raw["sample"]["top_kk"] = 5
    write_params(tmp_path, raw)
    _, text = stage("data", tmp_path, *DATA_OUT, expect_ok=False)
    assert "unknown key(s) 'sample.top_kk'" in text and "valid keys of 'sample'" in text and "top_k" in text, text
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("layout, msg", [("empty", "image folder is empty"),
                                         ("flat", "no class sub-folders"),
                                         ("noimg", "class folder has no images")])
def test_empty_or_classless_image_folder(tmp_path, layout, msg):
    root = tmp_path / "imgs"
    image_folder(root, corrupt=False)
    shutil.rmtree(root / "train")
    (root / "train").mkdir()
    if layout == "flat":
        Image.new("RGB", (8, 8)).save(root / "train" / "x.png")
    elif layout == "noimg":
        (root / "train" / "a").mkdir()
        (root / "train" / "a" / "readme.txt").write_text("no images here")
    folder_params(tmp_path, root)
    _, text = stage("data", tmp_path, *DATA_OUT, expect_ok=False)
    assert msg in text and str(root / "train") in text, text


def test_missing_inception_weights_names_the_file_and_where_to_put_it(tmp_path):
    raw = ci_raw()
    raw["score"].update(extractor="inception", inception_weights=str(tmp_path / "w" / "inception.pth"))
    write_params(tmp_path, raw)
    imgs = np.zeros((4, 16, 16, 3), np.uint8)
    atomic_savez(tmp_path / "s.npz", images=imgs, labels=np.zeros(4, np.int64))
    _, text = stage("score", tmp_path, "--name", "x", "--samples", "s.npz", "--real", "s.npz", "--evalnet",
                    "none.pt", "--scores", "scores.json", expect_ok=False)
    assert f"Inception weights not found at {tmp_path / 'w' / 'inception.pth'}" in text, text
    assert "Put weights-inception-2015-12-05-6726825d.pth" in text and "Nothing is downloaded" in text
    assert not (tmp_path / "scores.json").exists()


NAN_TRAIN = textwrap.dedent('''
    import sys
    from var.transformer import VAR
    forward, calls = VAR.forward, []
    def nan_forward(self, label_B, x_BLCv, generator=None):   # the 4th training step's logits are NaN
        out = forward(self, label_B, x_BLCv, generator)
        if self.training:
            calls.append(1)
            if len(calls) == 4:
                return out * float("nan")
        return out
    VAR.forward = nan_forward
    from pipeline.stages.train_var import cli
    cli(sys.argv[1:])
''')


def test_nan_loss_in_the_train_var_stage_keeps_the_last_good_state(tmp_path):
    raw = ci_raw()
    p = load_params(write_params(tmp_path, raw))
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "tok.pt", VQVAE(p.tokenizer.model), kind="vqvae")
    rng = np.random.default_rng(0)
    L = sum(pn * pn for pn in p.tokenizer.model.patch_nums)
    for split, n in (("train", 64), ("val", 16)):
        atomic_savez(tmp_path / f"{split}_tokens.npz", idx_NL=rng.integers(0, 64, (n, L)).astype(np.int16),
                     labels_N=rng.integers(0, 4, n).astype(np.int64),
                     patch_nums=np.asarray(p.tokenizer.model.patch_nums, np.int64))
    (tmp_path / "nan_train.py").write_text(NAN_TRAIN)
    _, text = stage("train_var", tmp_path, "--model-name", "ci-d2", "--tokenizer", "tok.pt", "--train-tokens",
                    "train_tokens.npz", "--val-tokens", "val_tokens.npz", "--model", "out/model.pt", "--metrics",
                    "out/metrics.json", "--curves", "out/curves.png", "--init", "out/init.pt", "--state-dir", "state",
                    argv0=["nan_train.py"],
                    expect_ok=False)
    assert "FloatingPointError" in text and "at step 3" in text and "last good state kept in" in text, text
    st = load_torch(tmp_path / "state/state.pt")
    assert st["step"] == 2
    assert not any(torch.isnan(v).any() for v in st["model"].values() if v.is_floating_point())  # (masks hold -inf)
    assert not (tmp_path / "out/model.pt").exists() and not (tmp_path / "out/metrics.json").exists()


# ------------------------------------------------------------------------------------- outputs appear together
def test_output_group_renames_all_or_removes_all(tmp_path):
    from var.io import output_group
    with output_group() as g:
        atomic_savez(g.pending(tmp_path / "a.npz"), x=np.arange(3))
        (g.pending(tmp_path / "b.json")).write_text("{}")
        assert not (tmp_path / "a.npz").exists()          # nothing visible before the block ends
    assert (tmp_path / "a.npz").exists() and (tmp_path / "b.json").read_text() == "{}"
    with pytest.raises(ValueError, match="late failure"):
        with output_group() as g:
            atomic_savez(g.pending(tmp_path / "c.npz"), x=np.arange(3))
            raise ValueError("late failure")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.json"]      # no c.npz, no pending file


def test_tokens_stage_writes_neither_token_file_when_the_val_split_fails(tmp_path, request):
    """The train tokens are encoded first; a corrupt val split must not leave them behind as a finished output."""
    from pipeline.stages import tokens
    from var.data import write_split
    p = load_params(ROOT / "params.yaml", [ROOT / "configs/ci.yaml"])
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "vq.pt", VQVAE(p.tokenizer.model), kind="vqvae")
    H = p.data.image_size
    write_split(tmp_path / "train.npz", np.random.default_rng(0).integers(0, 256, (6, H, H, 3), dtype=np.uint8),
                np.arange(6, dtype=np.int64) % p.data.num_classes)
    (tmp_path / "val.npz").write_bytes(b"PK\x03\x04 truncated")
    argv = ["--params", str(ROOT / "params.yaml"), "--configfile", str(ROOT / "configs/ci.yaml"), "--device", "cpu",
            "--tokenizer", str(tmp_path / "vq.pt"), "--train", str(tmp_path / "train.npz"),
            "--val", str(tmp_path / "val.npz"), "--train-tokens", str(tmp_path / "out/train_tokens.npz"),
            "--val-tokens", str(tmp_path / "out/val_tokens.npz"), "--log", str(tmp_path / "tokens.log")]
    # run_stage flushes denormals to zero for the process (a CLI's whole life); in-process it must not leak into
    # later tests, which draw subnormal floats
    request.addfinalizer(lambda: torch.set_flush_denormal(False))
    with pytest.raises(SystemExit) as exc:
        tokens.cli(argv)
    assert exc.value.code == 1
    assert "val.npz" in (tmp_path / "tokens.log").read_text()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    shutil.copy(tmp_path / "train.npz", tmp_path / "val.npz")
    tokens.cli(argv)
    assert sorted(x.name for x in (tmp_path / "out").iterdir()) == ["train_tokens.npz", "val_tokens.npz"]
