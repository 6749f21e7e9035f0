# VAR pipeline. Stages, paths and edges live in ONE registry, pipeline/dag.py; this file turns it into rules and
# dvc.yaml is generated from it too (tests/test_dag.py checks the two agree).
#   snakemake --cores all table1                              # embedded default (params.yaml)
#   snakemake --cores all table1 --configfile configs/ci.yaml   # an override file merged over params.yaml
import os
import re
import sys

sys.path.insert(0, workflow.basedir)
from pipeline import dag
from pipeline.params import load_params, select

configfile: "params.yaml"

# The stage CLIs read params.yaml themselves; forward the --configfile overrides so they see what Snakemake sees.
# load_params validates every section here, so a misspelled key stops the run before any job starts.
OVERRIDES = tuple(os.path.relpath(p) for p in workflow.overwrite_configfiles)
P = load_params("params.yaml", OVERRIDES)
MODELS, TABLE_MODELS = tuple(P.models), P.table1_models

# `python` in the commands (shared with dvc.yaml) is the interpreter that runs Snakemake (e.g. .venv/bin).
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

wildcard_constraints:
    model="|".join(re.escape(m) for m in MODELS),
    row="|".join(re.escape(r) for r in P.rows) or "NO_ROWS",    # issue 6: rows of Tables 2/3


def stage_inputs(st):
    """Inputs as rules.<stage>.output.<name> (expanded over the table's models where the registry says so)."""
    if st.per_row:      # issue 6: a row's inputs depend on its kind / setting / model_from (an input function)
        return {name: (lambda wc, name=name: dag.row_input_paths(st, P, wc.row)[name]) for name in st.inputs}
    if st.table:
        return dag.row_input_paths(st, P)
    out = {}
    for name, ref in st.inputs.items():
        src, o, every = dag.resolve(ref)
        path = getattr(rules, src.name).output[o]
        out[name] = expand(path, model=TABLE_MODELS) if every else path
    return out


def fingerprint(st):
    """The resolved params the stage reads: a change reruns it (Snakemake's 'params' rerun trigger)."""
    return lambda wc: repr(select(P, dag.params_keys(st, wc.get("model"), wc.get("row"))))


def command(st):
    """The registry's command for this job. Given as a param, because a rule body (`shell:`) is evaluated at
    run time, when the loop variable `st` would name the last stage. It reads the job's `gpu` resource (params
    `resources`, or `--set-resources train_var:gpu=8`): more than one launches torchrun."""
    return lambda wc, resources: dag.command(st, TABLE_MODELS, OVERRIDES, gpus=int(resources.get("gpu", 1)),
                                             params=P, row=wc.get("row")).replace(
        "{model}", wc.get("model", "{model}"))


for st in dag.STAGES:
    rule:
        name: st.name
        input: **stage_inputs(st)
        output: **st.outputs
        log: st.log
        params: cmd=command(st), fingerprint=fingerprint(st)
        threads: 1 if st.light else (workflow.cores or 1)   # Snakemake sets OMP_NUM_THREADS = threads
        resources: gpu=P.resources.gpus_for(st.name)         # SLURM: --gpus; local: --resources gpu=N caps it
        default_target: st.name == "table1"
        shell: "{params.cmd}"
