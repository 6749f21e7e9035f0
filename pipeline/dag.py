"""The one stage registry of the pipeline DAG; the Snakefile builds its rules from it and `dvc.yaml` is generated
from it (`python -m pipeline.dag` writes it, `--check` fails if the committed file is stale).

A stage is a CLI call `python -m pipeline.<module> --params params.yaml --<name> <path> ... --log <log>`: each
input names an output of an earlier stage (`"tokens.train"`), so the edges of the DAG exist only here, and both
front ends run byte-identical commands on identical paths.

Paths may contain `{model}` (per-model stages run once per key of params `models`). Resumable trainers keep their
state under `runs/state/` -- never a declared output, so neither Snakemake (which deletes the outputs of a failed
job) nor DVC (which deletes a stage's outputs before rerunning it) throws away a half-finished run.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

LIB_PARAMS = ("pipeline/params.py", "pipeline/common.py", "var/config.py", "var/io.py")
ALL_MODELS = "*"     # an input prefixed with this is expanded over the models of table1


@dataclass(frozen=True)
class Stage:
    name: str                                   # rule / DVC stage name (per-model DVC stages get "_<model>")
    inputs: dict[str, str]                      # CLI flag -> "<stage>.<output>" ("*<stage>.<output>": all models)
    outputs: dict[str, str]                     # CLI flag -> path (may hold {model})
    params: tuple[str, ...]                     # params.yaml keys the stage reads ({model} allowed)
    code: tuple[str, ...]                       # library files it runs (its own CLI file is added)
    metrics: tuple[str, ...] = ()               # outputs that are metrics (DVC: metrics, cache: false)
    per_model: bool = False
    module: str = ""                            # pipeline.<module>; default: the stage name
    args: dict[str, str] = field(default_factory=dict)  # further fixed CLI args (may hold {model})
    light: bool = False                         # Snakemake: 1 thread (runs beside others); else all cores

    @property
    def cli(self) -> str:
        return self.module or self.name

    @property
    def log(self) -> str:
        return f"logs/{self.name}/{{model}}.log" if self.per_model else f"logs/{self.name}.log"

    @property
    def deps_code(self) -> tuple[str, ...]:
        return (f"pipeline/{self.cli}.py", *LIB_PARAMS, *self.code)


MODEL_CODE = ("var/transformer.py", "var/vqvae.py", "var/quant.py", "var/checkpoint.py")

STAGES: tuple[Stage, ...] = (
    Stage("data", inputs={},
          outputs={"train": "data/train.npz", "val": "data/val.npz", "classes": "data/classes.json"},
          params=("seed", "data"), code=("var/data.py",), light=True),
    Stage("tokenizer", inputs={"train": "data.train", "val": "data.val"},
          outputs={"model": "runs/tokenizer/model.pt", "metrics": "runs/tokenizer/metrics.json"},
          params=("seed", "data", "tokenizer"), code=("var/tokenizer_train.py", "var/data.py", *MODEL_CODE),
          metrics=("metrics",), args={"state_dir": "runs/state/tokenizer"}),
    Stage("tokens", inputs={"tokenizer": "tokenizer.model", "train": "data.train", "val": "data.val"},
          outputs={"train_tokens": "runs/tokens/train.npz", "val_tokens": "runs/tokens/val.npz"},
          params=("data",), code=("var/data.py", *MODEL_CODE)),
    Stage("train_var", per_model=True,
          inputs={"tokenizer": "tokenizer.model", "train_tokens": "tokens.train_tokens",
                  "val_tokens": "tokens.val_tokens"},
          outputs={"model": "runs/var/{model}/model.pt", "metrics": "runs/var/{model}/metrics.json"},
          params=("seed", "data.num_classes", "tokenizer.model", "models.{model}"),
          code=("var/train.py", "var/schedule.py", *MODEL_CODE), metrics=("metrics",),
          args={"model_name": "{model}", "state_dir": "runs/state/train_var/{model}"}),
    Stage("sample", per_model=True, inputs={"model": "train_var.model", "tokenizer": "tokenizer.model"},
          outputs={"samples": "runs/var/{model}/samples.npz", "grid": "runs/var/{model}/grid.png",
                   "metrics": "runs/var/{model}/sample_metrics.json"},
          params=("seed", "sample"), code=("var/sampling.py", *MODEL_CODE), metrics=("metrics",),
          args={"model_name": "{model}"}),
    Stage("evalnet", inputs={"train": "data.train", "val": "data.val"},
          outputs={"model": "runs/evalnet/model.pt", "metrics": "runs/evalnet/metrics.json"},
          params=("seed", "data", "evalnet"), code=("eval/evalnet.py", "var/data.py"), metrics=("metrics",)),
    Stage("score", per_model=True, inputs={"samples": "sample.samples", "real": "data.val",
                                           "evalnet": "evalnet.model"},
          outputs={"scores": "runs/var/{model}/scores.json"}, params=("data", "score"),
          code=("eval/score.py", "eval/metrics.py", "eval/features.py", "eval/inception.py", "eval/evalnet.py"),
          metrics=("scores",), args={"name": "{model}"}, light=True),
    # Table 1's "validation data" row: real val images scored against the real train split.
    Stage("score_valdata", module="score", inputs={"samples": "data.val", "real": "data.train",
                                                   "evalnet": "evalnet.model"},
          outputs={"scores": "runs/valdata/scores.json"}, params=("data", "score"),
          code=("eval/score.py", "eval/metrics.py", "eval/features.py", "eval/inception.py", "eval/evalnet.py"),
          metrics=("scores",), args={"name": "valdata"}, light=True),
    Stage("table1", inputs={"scores": "*score.scores", "train_metrics": "*train_var.metrics",
                            "sample_metrics": "*sample.metrics", "valdata": "score_valdata.scores"},
          outputs={"md": "results/table1.md", "csv": "results/table1.csv"}, params=("score", "table1"),
          code=("eval/tables.py",), args={"models": ALL_MODELS}, light=True),
)
BY_NAME = {s.name: s for s in STAGES}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def resolve(ref: str) -> tuple[Stage, str, bool]:
    """'*stage.output' -> (stage, output name, expand over models)."""
    every = ref.startswith(ALL_MODELS)
    stage, out = ref.lstrip(ALL_MODELS).split(".")
    return BY_NAME[stage], out, every


def input_paths(st: Stage, models: tuple[str, ...]) -> dict[str, list[str] | str]:
    """Input flag -> path template ({model} kept for a per-model input of a per-model stage) or list of paths."""
    out = {}
    for name, ref in st.inputs.items():
        src, o, every = resolve(ref)
        path = src.outputs[o]
        out[name] = [path.format(model=m) for m in models] if every else path
    return out


def command(st: Stage, table_models: tuple[str, ...], overrides: tuple[str, ...] = ()) -> str:
    """The stage's shell command ({model} left in for per-model stages)."""
    parts = ["python -m", f"pipeline.{st.cli}", "--params params.yaml"]
    parts += [f"--configfile {o}" for o in overrides]
    for name, p in {**input_paths(st, table_models), **st.outputs, **st.args}.items():
        vals = list(table_models) if p == ALL_MODELS else (p if isinstance(p, list) else [p])
        parts.append(f"{flag(name)} {' '.join(vals)}")
    parts.append(f"--log {st.log}")
    return " ".join(parts)


def params_keys(st: Stage, model: str | None = None) -> list[str]:
    return [k.format(model=model) if model else k for k in st.params]


# ------------------------------------------------------------------------------------------------- DVC
def dvc_stages(table_models: tuple[str, ...]) -> dict:
    """dvc.yaml `stages`: one DVC stage per (stage, model) for per-model stages (DVC has no wildcards). Only the
    models of table1 get stages, as only they are built by Snakemake's `table1` target."""
    out = {}
    for st in STAGES:
        for m in (table_models if st.per_model else (None,)):
            sub = (lambda s: s.format(model=m)) if m else (lambda s: s)
            ins = input_paths(st, table_models)
            deps = [*st.deps_code]
            for v in ins.values():
                deps += [sub(x) for x in (v if isinstance(v, list) else [v])]
            outs = [sub(p) for k, p in st.outputs.items() if k not in st.metrics]
            entry = {"cmd": sub(command(st, table_models)), "deps": deps, "params": params_keys(st, m)}
            if outs:
                entry["outs"] = outs
            if st.metrics:
                entry["metrics"] = [{sub(st.outputs[k]): {"cache": False}} for k in st.metrics]
            out[f"{st.name}_{m}" if m else st.name] = entry
    return out


HEADER = ("# GENERATED from the stage registry in pipeline/dag.py by `python -m pipeline.dag`; do not edit.\n"
          "# The Snakefile builds its rules from the same registry (tests/test_dag.py checks both agree).\n")


def render_dvc_yaml(params) -> str:
    """dvc.yaml text for a loaded `Params` (its model names decide the per-model stages)."""
    stages = dvc_stages(params.table1_models)
    body = yaml.safe_dump({"stages": stages}, sort_keys=False, width=10_000)
    return HEADER + body


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.dag", description="write dvc.yaml from the registry")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="dvc.yaml")
    ap.add_argument("--check", action="store_true", help="exit 1 if --out differs from the generated text")
    args = ap.parse_args(argv)
    from pipeline.params import load_params
    params = load_params(args.params)
    text = render_dvc_yaml(params)
    out = Path(args.out)
    if args.check:
        if not out.is_file() or out.read_text() != text:
            print(f"{out} is stale: run `python -m pipeline.dag`", file=sys.stderr)
            return 1
        return 0
    from var.io import atomic_write_text
    atomic_write_text(out, text)
    print(f"wrote {out} from the registry in pipeline/dag.py")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
