# VAR pipeline. The stages live in one registry (pipeline/registry.py); pipeline/plan.py expands it over the params
# into jobs, and this file makes their rules: one per job, or one per per-model / per-row stage with a wildcard
# (pipeline/render.py; dvc.yaml is rendered from the same jobs).
#   snakemake --cores all table1                                # embedded default (params.yaml)
#   snakemake --cores all table1 --configfile configs/ci.yaml   # an override file merged over params.yaml
import os
import re
import sys

sys.path.insert(0, workflow.basedir)
from pipeline.params import load_params
from pipeline.yamlio import config_difference, load_raw
from pipeline.render import snakemake_rules

configfile: "params.yaml"

# The stage CLIs read params.yaml themselves; forward the --configfile overrides so they see what Snakemake sees.
# load_params validates every section here, so a misspelled key stops the run before any job starts.
OVERRIDES = tuple(os.path.relpath(p) for p in workflow.overwrite_configfiles)
P = load_params("params.yaml", OVERRIDES)
# `--config k=v` would change Snakemake's view only: the stage commands read params.yaml and the --configfile files.
# Refused, so that no run is labelled with params it did not use.
_extra = config_difference(config, load_raw("params.yaml", OVERRIDES))
if _extra:
    raise ValueError(f"--config is not supported ({', '.join(_extra)}): the stages read params.yaml and the "
                     f"--configfile files only; put the keys in a YAML file and pass it with --configfile")

# `python` in the commands (shared with dvc.yaml) is the interpreter that runs Snakemake (e.g. .venv/bin).
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")


for r in snakemake_rules(P):
    rule:
        name: r.name
        wildcard_constraints: **({r.wildcard: "|".join(re.escape(v) for v in r.values)} if r.wildcard else {})
        input: unpack(r.inputs if r.wildcard else (lambda wc, r=r: r.inputs))
        output: **r.outputs
        log: r.log
        # The command is a param: a rule body (`shell:`) is evaluated at run time, when the loop variable would name
        # the last rule. It reads the job's `gpu` resource (params `resources`, or `--set-resources
        # train_var:gpu=8`): more than one launches torchrun.
        params: cmd=lambda wc, resources, r=r: r.command(wc, OVERRIDES, int(resources.get("gpu", 1))),
                fingerprint=r.fingerprint
        threads: 1 if r.light else (workflow.cores or 1)   # Snakemake sets OMP_NUM_THREADS = threads
        resources: gpu=r.gpus                               # SLURM: --gpus; local: --resources gpu=N caps it
        default_target: r.name == "table1"
        shell: "{params.cmd}"
