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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pipeline.params import Params, load_params, select

console = Console(stderr=True)


def stage_parser(stage: str, doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m pipeline.stages.{stage}", description=(doc or "").strip().split("\n")[0])
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--configfile", action="append", default=[],
                   help="override file merged over --params (repeatable; Snakemake's --configfile is forwarded)")
    p.add_argument("--log", "--log-file", dest="log", default=None,
                   help="log file of this stage (the DAG gives logs/<stage>.log; --log-file under torchrun)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    # the same stage CLIs serve Table 2's resolution setting and the AR baseline's tokenizer
    p.add_argument("--setting", default="", help="a key of params `settings` merged over the params (Table 2)")
    p.add_argument("--scales", default="all", choices=("all", "last"),
                   help="last: the tokenizer quantises only its final scale (the AR baseline's VQGAN-style one)")
    return p


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


def run_stage(stage: str, main: Callable[[argparse.Namespace, logging.Logger], dict],
              parser: argparse.ArgumentParser, argv: list[str] | None = None) -> None:
    """Parse args, log to the stage's file, run `main(args, log) -> summary dict`, print the summary line.

    Errors are logged (to the log file too) and exit non-zero, so Snakemake/DVC mark the stage failed; the
    outputs are written atomically by the stage, so a failure never leaves a partial file at an output path.
    """
    args = parser.parse_args(argv)
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
        values = main(args, log) or {}
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
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
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
    """(row, the params of the row's setting / tokenizer kind)."""
    base = load_stage_params(args)
    if name not in base.rows:
        raise KeyError(f"unknown row {name!r}; rows in params: {', '.join(base.rows)}")
    row = base.rows[name]
    return row, load_params(args.params, args.configfile, setting=row.setting, single_scale=row.kind == "ar")
