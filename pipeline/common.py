"""Shared plumbing of the stage CLIs: arguments, params, logging, progress, device, resumable state.

Every stage is `python -m pipeline.<stage> --params params.yaml [--configfile X ...] --<input> P --<output> P
--log logs/<stage>.log`. `run_stage` sets up a log file (the `log:` path Snakemake/DVC give) plus a console
handler, times the stage, and prints exactly one summary line `[stage] key=value ...` at the end.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Column

from pipeline.params import Params, load_params, params_to_dict, select

console = Console(stderr=True)


def stage_parser(stage: str, doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m pipeline.stages.{stage}", description=(doc or "").strip().split("\n")[0])
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--configfile", action="append", default=[],
                   help="override file merged over --params (repeatable; Snakemake's --configfile is forwarded)")
    p.add_argument("--log", "--log-file", dest="log", default=None,
                   help="log file of this stage (the DAG gives logs/<stage>.log; --log-file under torchrun)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--job", default="", help="the DAG's name of this job: the stage checks that its command is the "
                   "one the params plan for it (a stale dvc.yaml is refused); omit when running by hand")
    # the same stage CLIs serve Table 2's resolution setting and the AR baseline's tokenizer
    p.add_argument("--setting", default="", help="a key of params `settings` merged over the params (Table 2)")
    p.add_argument("--scales", default="all", choices=("all", "last"),
                   help="last: the tokenizer quantises only its final scale (the AR baseline's VQGAN-style one)")
    return p


class StalePlanError(RuntimeError):
    """A job's command (from dvc.yaml or a script) is not the one the current params plan for it."""


def check_job(args, parser: argparse.ArgumentParser) -> None:
    """`--job NAME`: the plan of the params (and override files) this command names must hold a job NAME whose
    command parses to the same arguments (the device aside): otherwise dvc.yaml was rendered for other params."""
    import shlex

    from pipeline.plan import build_plan
    overrides = tuple(args.configfile)
    render = " ".join(["python -m pipeline.render", *(["--configfile", *overrides] if overrides else [])])
    src = " + ".join((args.params, *overrides))
    jobs = {j.name: j for j in build_plan(load_params(args.params, overrides)).jobs}
    if args.job not in jobs:
        raise StalePlanError(f"job {args.job!r} is not in the plan of {src}: dvc.yaml is stale, run `{render}`")
    argv = shlex.split(jobs[args.job].command(overrides))[3:]      # after `python -m <module>`
    want = {k: v for k, v in vars(parser.parse_args(argv)).items() if k != "device"}
    got = {k: v for k, v in vars(args).items() if k != "device"}
    if want != got:
        diff = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
        raise StalePlanError(f"this command differs from the plan of {src} for job {args.job!r} in {diff}: "
                             f"dvc.yaml is stale, run `{render}`")


def provenance(args, p: Params) -> dict:
    """Where a result came from: the params files, the run's name, a digest of the params the job read (its
    rerun fingerprint: the resolved values of its params keys; all params for a command run by hand), the git
    commit of the code and whether the code differs from it. Recorded in every scores.json and table."""
    import subprocess
    if getattr(args, "job", ""):       # run through the DAG (a library caller may build args by hand)
        from pipeline.plan import build_plan
        keys = next(j.params for j in build_plan(load_params(args.params, args.configfile)).jobs if j.name == args.job)
        read = select(p, keys)
    else:
        read = params_to_dict(p)
    digest = hashlib.sha256(json.dumps(read, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def git(*cmd: str) -> str | None:
        try:
            res = subprocess.run(["git", *cmd], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.stdout.strip() if res.returncode == 0 else None
    commit = git("rev-parse", "HEAD")
    changed = git("status", "--porcelain", "--", "var", "eval", "pipeline") if commit else None
    return {"config_files": [str(args.params), *map(str, args.configfile)], "run": p.run.name,
            "smoke_test": p.run.smoke_test, "params_sha256": digest, "git_commit": commit,
            "code_modified": bool(changed) if commit else None}


def summary_of(scores: dict, train_metrics: dict, sample_metrics: dict) -> dict:
    """A measured row's DVC metrics: its scores (keys name their extractor: fid_evalnet is not fid_inception; means
    over the sampling seeds with `_sd` beside them), class accuracy, the seed count, validation loss and sampling
    cost, flat and numeric."""
    keys = [k for k in scores if k.split("_")[0] in ("fid", "is", "precision", "recall", "kid", "density",
                                                     "coverage", "fd") and isinstance(scores[k], (int, float))]
    out = {k: scores[k] for k in keys if "untrained" not in k and "ratio" not in k}
    for src, key, name in ((scores, "class_acc_evalnet", "class_acc"), (scores, "class_acc_evalnet_sd", "class_acc_sd"),
                           (scores, "num_seeds", "num_seeds"), (train_metrics, "val_loss", "val_loss"),
                           (train_metrics, "val_err_last", "val_err_last"),
                           (sample_metrics, "seconds_per_image", "sec_per_image"),
                           (sample_metrics, "flops_per_image", "flops_per_image")):
        if isinstance(src.get(key), (int, float)):
            out[name] = src[key]
    return out


def annotate_measured(df, key: str, sample_metrics: dict[str, dict], prov: dict):
    """Measured rows of a table (`df[key]` names them) get their sample count, sampler seed and the table's
    provenance (run name, params digest, commit) as columns."""
    measured = df["source"] == "measured"
    for name, g in sample_metrics.items():
        at = measured & (df[key] == name)
        df.loc[at, "samples"] = g.get("num_images")
        df.loc[at, "seed"] = (g.get("sampler") or {}).get("seed")
    for k in ("run", "params_sha256", "git_commit"):
        df.loc[measured, k] = prov[k]
    return df


def with_provenance(md: str, args, p: Params, samples: int | None = None) -> tuple[str, dict]:
    """(The Markdown of a table with its provenance under the title, the provenance dict). A smoke-test config
    (`run.smoke_test`, the ci config) says so in the title itself."""
    prov = provenance(args, p)
    title, _, rest = md.partition("\n")
    if p.run.smoke_test:
        title += f" -- SMOKE TEST (config `{p.run.name}`): tiny models, not results"
    line = (f"Config `{p.run.name}` ({', '.join(prov['config_files'])}); params sha256 {prov['params_sha256']}; "
            f"code {prov['git_commit'] or 'not in a git repository'}{' (modified)' if prov['code_modified'] else ''}"
            + (f"; {samples} samples per model" if samples else "") + ".")
    return f"{title}\n\n{line}\n{rest}", prov


def load_stage_params(args) -> Params:
    return load_params(args.params, args.configfile, setting=getattr(args, "setting", ""),
                       single_scale=getattr(args, "scales", "all") == "last")


def select_device(name: str = "auto"):
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return dev


def setup_logging(log_path: str | None) -> logging.Logger:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(RichHandler(console=console, show_path=False, show_time=False, markup=False))
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_path, mode="a", encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(fh)
    return logging.getLogger("pipeline")


def summary_line(stage: str, values: dict) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)
    return f"[{stage}] " + " ".join(f"{k}={fmt(v)}" for k, v in values.items())


@contextlib.contextmanager
def job_lock(args, parser: argparse.ArgumentParser) -> Iterator[None]:
    """One run of a job at a time in a workspace, whichever front end (or shell) starts it: Snakemake and DVC each
    lock only against themselves. The lock is an flock on .pipeline-locks/<digest of the job's first output>, so
    it is released however the process ends."""
    import fcntl
    outs = [a.dest for a in parser._actions if a.help and a.help.startswith("output")]
    first = next((getattr(args, d) for d in outs if getattr(args, d, None)), None)
    if not first or int(os.environ.get("RANK", "0")):          # under torchrun rank 0 holds it for the job
        yield
        return
    Path(".pipeline-locks").mkdir(exist_ok=True)
    path = Path(".pipeline-locks") / (hashlib.sha256(str(Path(first).resolve()).encode()).hexdigest()[:16] + ".lock")
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise RuntimeError(f"another run of this job (writing {first}) is in progress in this workspace "
                               f"({f.read().strip() or 'pid unknown'}); wait for it, or stop it, then rerun") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}: {' '.join(sys.argv)}\n")
        f.flush()
        yield


def run_stage(stage: str, main: Callable[[argparse.Namespace, logging.Logger], dict],
              parser: argparse.ArgumentParser, argv: list[str] | None = None) -> None:
    """Parse args, log to the stage's file, run `main(args, log) -> summary dict`, print the summary line.

    Errors are logged (to the log file too) and exit non-zero, so Snakemake/DVC mark the stage failed; the
    outputs are written atomically by the stage, so a failure never leaves a partial file at an output path.
    """
    args = parser.parse_args(argv)
    if args.job:
        check_job(args, parser)
    import torch
    # AdaLN gammas start near 1e-5, so AdamW's second moments underflow into denormals, which x86 CPUs process
    # ~15x slower (measured: a VAR-d4 step 4.7 s -> 0.3 s). Flushing them to zero changes no result that matters.
    torch.set_flush_denormal(True)
    log = setup_logging(args.log)
    rank = int(os.environ.get("RANK", "0"))       # under torchrun only rank 0 reports; the others log warnings
    if rank:
        logging.getLogger().setLevel(logging.WARNING)
    log.info("%s: %s", stage, " ".join(sys.argv[1:] if argv is None else argv))
    t0 = time.perf_counter()
    try:
        with job_lock(args, parser):
            values = main(args, log) or {}
    except KeyboardInterrupt:
        state = getattr(args, "state_dir", None)
        log.error("%s interrupted%s; outputs are written atomically, so none is half-written. Run the same command "
                  "(or snakemake / dvc repro) again to %s", stage, f" on rank {rank}" if rank else "",
                  f"resume from {state}" if state else "rerun it")
        raise SystemExit(130)
    except Exception as e:
        log.error("%s failed%s: %s: %s", stage, f" on rank {rank}" if rank else "", type(e).__name__, e)
        if not isinstance(e, (ValueError, RuntimeError, FileNotFoundError, KeyError, FloatingPointError)):
            log.exception("traceback")
        raise SystemExit(1)
    finally:
        from var.distributed import shutdown
        shutdown()
    if rank:
        return
    values["time_s"] = round(time.perf_counter() - t0, 2)
    line = summary_line(stage, values)
    for h in logging.getLogger().handlers:     # the summary goes to stdout once, and into the log file
        if isinstance(h, logging.FileHandler):
            h.emit(logging.makeLogRecord({"msg": line, "levelname": "INFO", "name": "pipeline.summary"}))
    print(line, flush=True)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[Callable[..., None]]:
    """A rich progress bar; yields `update(done, total=None, **info)` (the libraries' progress callbacks)."""
    # Step count and ETA first and never squeezed: on a narrow (80-column) terminal only the bar and the free-form
    # info shrink (the info is cut with an ellipsis).
    columns = (TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True, max_width=24)),
               MofNCompleteColumn(table_column=Column(no_wrap=True)),
               TimeRemainingColumn(table_column=Column(no_wrap=True)), BarColumn(bar_width=16),
               TextColumn("{task.fields[info]}", table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)))
    with Progress(*columns, console=console, transient=False, disable=not console.is_terminal) as prog:
        task = prog.add_task(description, total=total, info="")

        def update(done: int, total: int | None = None, info: dict | None = None, **kw):
            info = {**(info or {}), **kw}
            text = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items()
                            if isinstance(v, (int, float)))
            prog.update(task, completed=done, total=total if total is not None else prog.tasks[0].total,
                        info=text)
        yield update


# ----------------------------------------------------------------------------------------- resumable state
def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(params: Params, keys: list[str] | tuple[str, ...], inputs: list[str | Path]) -> str:
    """What a resumable stage's state depends on: the params it reads and the content of its inputs."""
    blob = json.dumps({"params": select(params, keys),
                       "inputs": {str(p): file_digest(p) for p in inputs}}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prepare_state_dir(state_dir: str | Path, fp: str, log: logging.Logger) -> Path:
    """The trainer's resume directory, kept outside the DAG's declared outputs (Snakemake deletes those when a
    job fails, DVC before it reruns a stage). State written under other params or inputs is discarded, so a
    changed recipe never resumes from a stale run."""
    from var.io import atomic_write_text
    state_dir = Path(state_dir)
    stamp = state_dir / "FINGERPRINT"
    if state_dir.exists() and (not stamp.is_file() or stamp.read_text().strip() != fp):
        log.info("discarding resume state in %s (written for other params/inputs)", state_dir)
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    if not stamp.is_file():
        atomic_write_text(stamp, fp + "\n")
    elif (state_dir / "state.pt").is_file():
        log.info("resuming from %s", state_dir / "state.pt")
    return state_dir


def copy_atomic(src: str | Path, dst: str | Path) -> None:
    from var.io import atomic_path
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


# ----------------------------------------------------------------------------------------- shared by stages
def row_params(args, name: str):
    """(row, the params of the row's setting / tokenizer kind). With no name (the experiment jobs, `ablation_*`)
    the row is params `ablation.row`, and an AR row reads the AR tokenizer inputs (`--ar-*`) in place of the
    multi-scale ones, so one command serves whichever row an experiment selects."""
    base = load_stage_params(args)
    if not name:
        name = args.row = base.ablation.row
        if not name:
            raise ValueError("no --row and params ablation.row is empty: nothing to run")
        if base.rows[name].kind == "ar":
            for flag in ("tokenizer", "train_tokens", "val_tokens"):
                if hasattr(args, f"ar_{flag}"):
                    if not getattr(args, f"ar_{flag}"):
                        raise ValueError(f"ablation.row {name!r} is an AR row: --ar-{flag.replace('_', '-')} needed")
                    setattr(args, flag, getattr(args, f"ar_{flag}"))
    if name not in base.rows:
        raise KeyError(f"unknown row {name!r}; rows in params: {', '.join(base.rows)}")
    row = base.rows[name]
    return row, load_params(args.params, args.configfile, setting=row.setting, single_scale=row.kind == "ar")
