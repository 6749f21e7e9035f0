"""The plan as the two front ends see it: `dvc.yaml` (written by `python -m pipeline.render`) and the Snakemake
rules (the Snakefile calls `snakemake_rules`). One code path for every job -- models, rows, settings -- so both run
byte-identical commands on identical paths, with the same code, input and params dependencies.

    python -m pipeline.render                              # write dvc.yaml from params.yaml
    python -m pipeline.render --configfile configs/ci.yaml # ... for an override config (then `dvc repro`)
    python -m pipeline.render --check                      # exit 1 if dvc.yaml is stale

Every stage command carries `--job <name>`; the stage refuses to run when its command is not the one the current
params plan for that job (pipeline/common.py), so a stale dvc.yaml cannot silently run an old plan.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from pipeline.codedeps import code_files
from pipeline.params import Params, load_params, read_yaml, select
from pipeline.plan import Job, build_plan
from pipeline.registry import MODEL, ROW

HEADER = ("# GENERATED from the stage registry (pipeline/registry.py) and params.yaml by `python -m pipeline.render`;\n"
          "# do not edit. The Snakefile builds its rules from the same plan (tests/test_dag.py checks both agree).\n")


@dataclass(frozen=True)
class Rule:
    """What the Snakefile's `rule:` block needs of one job, or of all jobs of a per-model / per-row stage (then one
    rule with a wildcard, named after the stage, so profiles can set resources per stage: `set-resources:
    train_var: ...`). `inputs`, `fingerprint` and `command` are functions of the wildcards for such a rule."""
    name: str
    wildcard: str                              # "" for a single job; else "model" or "row"
    values: tuple[str, ...]                    # the wildcard's values (its constraint)
    inputs: dict[str, Any]
    outputs: dict[str, str]
    log: str
    fingerprint: Any
    gpus: int
    light: bool
    command: Callable[..., str]                # (wildcards, overrides, gpus) -> shell command


def job_gpus(p: Params, job: Job) -> int:
    """GPUs the job asks for: params `resources` for multi-GPU stages, none for CPU-only stages, else one."""
    return p.resources.gpus_for(job.stage.name, job.stage.gpus)


def _rule_inputs(job: Job) -> dict[str, str | list[str]]:
    """A job's inputs from other jobs; the code it runs is an input too (Snakemake reruns a job whose inputs are
    newer than its outputs), as DVC lists it among a stage's deps. Files named in params (weights, reference batches,
    image folders) are not inputs but part of the fingerprint (`files_fingerprint`): a plan can be made (`-n`)
    before they exist, and the job fails naming a missing one when it runs."""
    out: dict[str, str | list[str]] = {k: list(v) if isinstance(v, tuple) else v for k, v in job.inputs.items()
                                       if not (isinstance(v, str) and v in job.files)}
    out["code"] = list(code_files(job.module))
    return out


def files_fingerprint(paths) -> list[str]:
    """What Snakemake compares to rerun a job when a file named in params changes: per path its size and mtime
    (a folder: every file's relative path, size and mtime, so an edit, addition or removal shows), or 'missing'.
    DVC hashes their content instead (they are deps of its stages)."""
    import hashlib
    import os
    out = []
    for path in paths:
        if os.path.isdir(path):
            h = hashlib.sha256()
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for f in sorted(files):
                    st = os.stat(os.path.join(root, f))
                    h.update(f"{os.path.relpath(os.path.join(root, f), path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            out.append(f"{path}: folder {h.hexdigest()[:16]}")
        elif os.path.isfile(path):
            st = os.stat(path)
            out.append(f"{path}: {st.st_size} bytes, mtime {st.st_mtime_ns}")
        else:
            out.append(f"{path}: missing")
    return out


def _fingerprint(p: Params, job: Job) -> str:
    return repr(select(p, job.params)) + (repr(files_fingerprint(job.files)) if job.files else "")


def snakemake_rules(p: Params) -> list[Rule]:
    plan = build_plan(p)
    rules, grouped = [], {}
    for job in plan.jobs:
        st = job.stage
        if st.over not in (MODEL, ROW):
            rules.append(Rule(job.name, "", (), _rule_inputs(job), dict(job.outputs), job.log,
                              _fingerprint(p, job), job_gpus(p, job), st.light,
                              lambda wc, overrides, gpus, job=job: job.command(overrides, gpus)))
        elif st.name not in grouped:
            grouped[st.name] = len(rules)
            rules.append(None)
    for stage, i in grouped.items():
        jobs = {(j.context.model or j.context.row): j for j in plan.jobs if j.stage.name == stage}
        first = next(iter(jobs.values()))
        key = "model" if first.stage.over == MODEL else "row"
        rules[i] = Rule(stage, key, tuple(jobs), lambda wc, jobs=jobs, key=key: _rule_inputs(jobs[wc[key]]),
                        {k: v.replace("{n}", p.run.name) for k, v in first.stage.outputs.items()
                         if k in first.outputs},
                        f"logs/{p.run.name}/{stage}/{{{key}}}.log",
                        lambda wc, jobs=jobs, key=key: _fingerprint(p, jobs[wc[key]]),
                        job_gpus(p, first), first.stage.light,
                        lambda wc, overrides, gpus, jobs=jobs, key=key: jobs[wc[key]].command(overrides, gpus))
    return rules


def _has_key(raw: dict, dotted: str) -> bool:
    cur = raw
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False
        cur = cur[part]
    return True


def dvc_params(job: Job, files: dict[str, dict]) -> list:
    """The job's params keys as DVC lists them: per params file (params.yaml, then each override file), the keys the
    job reads that the file sets, each as the longest prefix present there (DVC refuses a key its file lacks; a key
    set in no file takes its default from the code, a dependency already)."""
    out: list = []
    for path, raw in files.items():
        keys = []
        for key in job.params:
            parts = key.split(".")
            present = next((".".join(parts[:i]) for i in range(len(parts), 0, -1)
                            if _has_key(raw, ".".join(parts[:i]))), None)
            if present:
                keys.append(present)
        keys = list(dict.fromkeys(keys))
        if path == "params.yaml":
            out += keys
        elif keys:
            out.append({path: keys})
    return out


def dvc_stage(p: Params, job: Job, overrides: tuple[str, ...], files: dict[str, dict]) -> dict:
    st = job.stage
    entry = {"cmd": job.command(overrides, gpus=job_gpus(p, job)),
             "deps": [*code_files(job.module), *job.input_paths()],
             "params": dvc_params(job, files)}
    outs = [v for k, v in job.outputs.items() if k not in st.metrics and k not in st.plots]
    if outs:
        entry["outs"] = outs
    if st.metrics:
        entry["metrics"] = [{job.outputs[k]: {"cache": False}} for k in st.metrics]
    if st.plots:
        entry["plots"] = [{job.outputs[k]: {"cache": False}} for k in st.plots]
    return entry


def render_dvc_yaml(p: Params, overrides: tuple[str, ...] = (), params_file: str = "params.yaml") -> str:
    """dvc.yaml text of the jobs of `p` (params.yaml with `overrides` merged over it): commands pass the override
    files on, and each stage's params are tracked in the file that sets them."""
    files = {"params.yaml": read_yaml(params_file), **{o: read_yaml(o) for o in overrides}}
    plan = build_plan(p)
    stages = {job.name: dvc_stage(p, job, overrides, files) for job in plan.jobs}
    header = HEADER + (f"# Rendered for: params.yaml + {' + '.join(overrides)}\n" if overrides else "")
    return header + yaml.safe_dump({"stages": stages}, sort_keys=False, width=10_000)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.render", description="write dvc.yaml from the registry")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--configfile", nargs="+", default=[], help="override files merged over params.yaml (as "
                    "Snakemake's --configfile): dvc.yaml's commands pass them on and DVC tracks their params")
    ap.add_argument("--out", default="dvc.yaml")
    ap.add_argument("--check", action="store_true", help="exit 1 if --out differs from the generated text")
    args = ap.parse_args(argv)
    overrides = tuple(args.configfile)
    text = render_dvc_yaml(load_params(args.params, overrides), overrides, args.params)
    out = Path(args.out)
    if args.check:
        if not out.is_file() or out.read_text() != text:
            cmd = " ".join(["python -m pipeline.render", *(["--configfile", *overrides] if overrides else [])])
            print(f"{out} is stale: run `{cmd}`", file=sys.stderr)
            return 1
        return 0
    from var.io import atomic_write_text
    atomic_write_text(out, text)
    print(f"wrote {out} for params.yaml{''.join(' + ' + o for o in overrides)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
