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
from dataclasses import dataclass, field, replace
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
    plots: dict[str, tuple[str, ...]] = field(default_factory=dict)  # output -> (x, *y) columns (DVC plots)
    per_row: bool = False                       # issue 6: one job per row of Tables 2/3 (paths hold {row})
    table: str = ""                             # issue 6: "*<per-row stage>" inputs expand over this table's rows

    @property
    def cli(self) -> str:
        return self.module or self.name

    @property
    def log(self) -> str:
        if self.per_row:
            return f"logs/{self.name}/{{row}}.log"
        return f"logs/{self.name}/{{model}}.log" if self.per_model else f"logs/{self.name}.log"

    @property
    def deps_code(self) -> tuple[str, ...]:
        return (f"pipeline/{self.cli}.py", *LIB_PARAMS, *self.code)


MODEL_CODE = ("var/transformer.py", "var/vqvae.py", "var/quant.py", "var/checkpoint.py", "var/weights.py")
DATA_CODE = ("var/data.py", "var/images.py")       # split files + how image files decode
TOKENIZER_EVAL_CODE = ("eval/recon.py", "eval/metrics.py", "eval/features.py", "eval/inception.py", "eval/evalnet.py")

STAGES: tuple[Stage, ...] = (
    Stage("data", inputs={},
          outputs={"train": "data/train.npz", "val": "data/val.npz", "classes": "data/classes.json"},
          params=("seed", "data"), code=DATA_CODE, light=True),
    Stage("evalnet", inputs={"train": "data.train", "val": "data.val"},
          outputs={"model": "runs/evalnet/model.pt", "metrics": "runs/evalnet/metrics.json"},
          params=("seed", "data", "evalnet"), code=("eval/evalnet.py", *DATA_CODE), metrics=("metrics",)),
    # evalnet is an input of the tokenizer: per-epoch rFID and the offline (`perceptual: evalnet`) perceptual loss
    Stage("tokenizer", inputs={"train": "data.train", "val": "data.val", "evalnet": "evalnet.model"},
          outputs={"model": "runs/tokenizer/model.pt", "metrics": "runs/tokenizer/metrics.json",
                   "history": "runs/tokenizer/history.csv"},
          params=("seed", "data", "tokenizer", "score.extractor", "score.inception_weights"),
          code=("var/tokenizer_train.py", "var/perceptual.py", *DATA_CODE, *MODEL_CODE, *TOKENIZER_EVAL_CODE),
          metrics=("metrics",), args={"state_dir": "runs/state/tokenizer"},
          plots={"history": ("epoch", "val_psnr", "val_ssim", "val_rfid", "val_usage_mean")}),
    Stage("tokens", inputs={"tokenizer": "tokenizer.model", "train": "data.train", "val": "data.val"},
          outputs={"train_tokens": "runs/tokens/train.npz", "val_tokens": "runs/tokens/val.npz"},
          params=("data",), code=(*DATA_CODE, *MODEL_CODE)),
    Stage("train_var", per_model=True,
          inputs={"tokenizer": "tokenizer.model", "train_tokens": "tokens.train_tokens",
                  "val_tokens": "tokens.val_tokens"},
          outputs={"model": "runs/var/{model}/model.pt", "metrics": "runs/var/{model}/metrics.json",
                   "init": "runs/var/{model}/model_init.pt"},
          params=("seed", "data.num_classes", "tokenizer.model", "models.{model}"),
          code=("var/train.py", "var/schedule.py", *MODEL_CODE), metrics=("metrics",),
          args={"model_name": "{model}", "state_dir": "runs/state/train_var/{model}"}),
    Stage("sample", per_model=True, inputs={"model": "train_var.model", "tokenizer": "tokenizer.model"},
          outputs={"samples": "runs/var/{model}/samples.npz", "grid": "runs/var/{model}/grid.png",
                   "metrics": "runs/var/{model}/sample_metrics.json"},
          params=("seed", "sample"), code=("var/sampling.py", *MODEL_CODE), metrics=("metrics",),
          args={"model_name": "{model}"}),
    # The same model at its initial weights, sampled and scored alike: "the model learns" is measured against it.
    Stage("sample_untrained", module="sample", per_model=True,
          inputs={"model": "train_var.init", "tokenizer": "tokenizer.model"},
          outputs={"samples": "runs/var/{model}/untrained/samples.npz", "grid": "runs/var/{model}/untrained/grid.png",
                   "metrics": "runs/var/{model}/untrained/sample_metrics.json"},
          params=("seed", "sample"), code=("var/sampling.py", *MODEL_CODE), args={"model_name": "{model}"}),
    Stage("score", per_model=True, inputs={"samples": "sample.samples", "real": "data.val",
                                           "evalnet": "evalnet.model", "untrained": "sample_untrained.samples"},
          outputs={"scores": "runs/var/{model}/scores.json"}, params=("data", "score"),
          code=("eval/score.py", "eval/metrics.py", "eval/features.py", "eval/inception.py", "eval/evalnet.py",
                "eval/cleanfid_check.py", "var/images.py", "var/weights.py"),
          metrics=("scores",), args={"name": "{model}"}, light=True),
    # Table 1's "validation data" row: real val images scored against the real train split.
    Stage("score_valdata", module="score", inputs={"samples": "data.val", "real": "data.train",
                                                   "evalnet": "evalnet.model"},
          outputs={"scores": "runs/valdata/scores.json"}, params=("data", "score"),
          code=("eval/score.py", "eval/metrics.py", "eval/features.py", "eval/inception.py", "eval/evalnet.py",
                "eval/cleanfid_check.py", "var/images.py", "var/weights.py"),
          metrics=("scores",), args={"name": "valdata"}, light=True),
    Stage("table1", inputs={"scores": "*score.scores", "train_metrics": "*train_var.metrics",
                            "sample_metrics": "*sample.metrics", "valdata": "score_valdata.scores"},
          outputs={"md": "results/table1.md", "csv": "results/table1.csv"}, params=("score", "table1"),
          code=("eval/tables.py",), args={"models": ALL_MODELS}, light=True),
    # issue 5: residual vs independent multi-scale quantisation, L2+VQ vs full loss (a small training budget)
    Stage("tokenizer_ablation", inputs={"train": "data.train", "val": "data.val", "evalnet": "evalnet.model"},
          outputs={"md": "results/tokenizer_ablation.md", "json": "results/tokenizer_ablation.json"},
          params=("seed", "data", "tokenizer", "tokenizer_ablation"),
          code=("var/tokenizer_train.py", "var/quant_independent.py", "var/perceptual.py", "pipeline/tokenizer.py",
                *DATA_CODE, *MODEL_CODE, *TOKENIZER_EVAL_CODE),
          metrics=("json",), args={"state_dir": "runs/state/tokenizer_ablation"}),
    # --- issue 7: depth sweep + scaling-law fits (Fig. 5-6), sample grid over size x training (Fig. 7),
    # zero-shot in-/out-painting and class-conditional editing (Fig. 8)
    Stage("scaling_train", inputs={"tokenizer": "tokenizer.model", "train_tokens": "tokens.train_tokens",
                                   "val_tokens": "tokens.val_tokens"},
          outputs={"points": "runs/scaling/points.json", "snapshots": "runs/scaling/snapshots.pt"},
          params=("seed", "data.num_classes", "tokenizer.model", "scaling.depths", "scaling.width_per_depth",
                  "scaling.train", "scaling.eval_fractions", "scaling.eval_max_images", "scaling.fig7_depths",
                  "scaling.fig7_fractions"),
          code=("eval/scaling.py", "var/train.py", "var/schedule.py", *MODEL_CODE),
          args={"state_dir": "runs/state/scaling"}),
    Stage("scaling", inputs={"points": "scaling_train.points"},
          outputs={"csv": "results/scaling.csv", "md": "results/scaling.md", "plot_n": "results/scaling_N.png",
                   "plot_c": "results/scaling_C.png", "points_n": "results/scaling_vs_N.csv",
                   "points_c": "results/scaling_vs_C.csv", "metrics": "results/scaling_fits.json"},
          params=("scaling",), code=("eval/scaling.py",), metrics=("metrics",), light=True,
          plots={"points_n": ("log10_N", "log10_L_last", "log10_L_mean", "log10_err_last", "log10_err_mean"),
                 "points_c": ("log10_C", "log10_L_last", "log10_L_mean", "log10_err_last", "log10_err_mean")}),
    Stage("fig7", inputs={"snapshots": "scaling_train.snapshots", "tokenizer": "tokenizer.model",
                          "val_tokens": "tokens.val_tokens"},
          outputs={"figure": "results/fig7.png"}, params=("seed", "scaling"),
          code=("var/sampling.py", "var/editing.py", "var/train.py", "eval/scaling.py", *MODEL_CODE), light=True),
    Stage("zeroshot", inputs={"model": "*train_var.model", "tokenizer": "tokenizer.model", "val": "data.val"},
          outputs={"inpaint": "results/zeroshot/inpaint.png", "outpaint": "results/zeroshot/outpaint.png",
                   "edit": "results/zeroshot/edit.png", "metrics": "results/zeroshot/metrics.json"},
          params=("seed", "zeroshot", "table1"), code=("var/editing.py", "var/sampling.py", *DATA_CODE, *MODEL_CODE),
          metrics=("metrics",), args={"models": ALL_MODELS}, light=True),
    # --- end issue 7
)


# --- issue 6: Tables 2 and 3. Variants of existing stages for the AR baseline's single-scale tokenizer (suffix
# `_ar`, `--scales last`) and for Table 2's resolution setting (suffix `_hires`, `--setting hires`): the same CLI,
# outputs in `<dir>_<suffix>/`. Then one train/sample/score job per row (pipeline/rows.py) and the two tables.
def variant(base: Stage, suffix: str, family: tuple[str, ...], params: tuple[str, ...] = (), **args) -> Stage:
    """`base` rerun for a variant: outputs under `<dir><suffix>/`, inputs from the variants of `family`."""
    def out(path: str) -> str:
        q = Path(path)
        return str(q.parent.with_name(q.parent.name + suffix) / q.name)

    def ref(r: str) -> str:
        st, o = r.split(".")
        return f"{st}{suffix}.{o}" if st in family else r
    fixed = {k: (v + suffix if k == "state_dir" else v) for k, v in base.args.items()}
    return replace(base, name=base.name + suffix, module=base.cli, inputs={k: ref(v) for k, v in base.inputs.items()},
                   outputs={k: out(v) for k, v in base.outputs.items()}, params=(*base.params, *params),
                   args={**fixed, **{k: v for k, v in args.items()}}, plots={})


_BASE = {s.name: s for s in STAGES}
_HIRES = ("data", "evalnet", "tokenizer", "tokens", "score_valdata")
ALL_ROWS = "*rows"                  # arg value of a table stage: its rows, in order
ROW_CODE = ("pipeline/rows.py", "var/ar.py")
SCORE_CODE = ("eval/score.py", "eval/metrics.py", "eval/features.py", "eval/inception.py", "eval/evalnet.py",
              "eval/cleanfid_check.py", "var/images.py", "var/weights.py")
STAGES = STAGES + (
    variant(_BASE["tokenizer"], "_ar", ("tokenizer",), scales="last"),
    variant(_BASE["tokens"], "_ar", ("tokenizer",), scales="last"),
    *(variant(_BASE[n], "_hires", _HIRES, ("settings.hires",), setting="hires") for n in _HIRES),
    Stage("train_row", per_row=True,
          inputs={"tokenizer": "tokenizer{tok}.model", "train_tokens": "tokens{tok}.train_tokens",
                  "val_tokens": "tokens{tok}.val_tokens"},
          outputs={"model": "runs/rows/{row}/model.pt", "metrics": "runs/rows/{row}/metrics.json"},
          params=("seed", "data.num_classes", "rows.{row}"),
          code=("var/train.py", "var/schedule.py", *ROW_CODE, *MODEL_CODE), metrics=("metrics",),
          args={"row": "{row}", "state_dir": "runs/state/train_row/{row}"}),
    Stage("sample_row", per_row=True, inputs={"model": "train_row.model", "tokenizer": "tokenizer{tok}.model"},
          outputs={"samples": "runs/rows/{row}/samples.npz", "grid": "runs/rows/{row}/grid.png",
                   "metrics": "runs/rows/{row}/sample_metrics.json"},
          params=("seed", "sample", "rows.{row}"), code=("var/sampling.py", "pipeline/sample.py", *ROW_CODE,
                                                         *MODEL_CODE),
          metrics=("metrics",), args={"row": "{row}"}),
    Stage("score_row", per_row=True, module="score",
          inputs={"samples": "sample_row.samples", "real": "data{res}.val", "evalnet": "evalnet{res}.model"},
          outputs={"scores": "runs/rows/{row}/scores.json"}, params=("data", "score"), code=SCORE_CODE,
          metrics=("scores",), args={"name": "{row}"}, light=True),
    Stage("table3", table="table3", inputs={"scores": "*score_row.scores", "train_metrics": "*train_row.metrics",
                                            "sample_metrics": "*sample_row.metrics"},
          outputs={"md": "results/table3.md", "csv": "results/table3.csv"}, params=("rows", "table3"),
          code=("eval/row_tables.py", "pipeline/rows.py"), args={"rows": ALL_ROWS}, light=True),
    Stage("table2", table="table2", inputs={"scores": "*score_row.scores", "train_metrics": "*train_row.metrics",
                                            "sample_metrics": "*sample_row.metrics",
                                            "valdata": "score_valdata_hires.scores"},
          outputs={"md": "results/table2.md", "csv": "results/table2.csv"}, params=("rows", "table2"),
          code=("eval/row_tables.py", "pipeline/rows.py"), args={"rows": ALL_ROWS}, light=True),
)
# --- end issue 6
BY_NAME = {s.name: s for s in STAGES}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def resolve(ref: str) -> tuple[Stage, str, bool]:
    """'*stage.output' -> (stage, output name, expand over models)."""
    every = ref.startswith(ALL_MODELS)
    # issue 6: a per-row ref's {tok}/{res} resolves to the base stage unless row_input_paths filled it in
    stage, out = ref.lstrip(ALL_MODELS).format(tok="", res="").split(".")
    return BY_NAME[stage], out, every


def input_paths(st: Stage, models: tuple[str, ...]) -> dict[str, list[str] | str]:
    """Input flag -> path template ({model} kept for a per-model input of a per-model stage) or list of paths."""
    out = {}
    for name, ref in st.inputs.items():
        src, o, every = resolve(ref)
        path = src.outputs[o]
        out[name] = [path.format(model=m) for m in models] if every else path
    return out


# Stages that can spread over several GPUs of one node (params `resources`): with more than one they are launched
# by torchrun, one process per GPU; with one, the command is the plain `python -m` one.
MULTI_GPU_STAGES = ("tokenizer", "train_var", "sample")


def launcher(st: Stage, gpus: int = 1) -> str:
    if gpus > 1 and st.name in MULTI_GPU_STAGES:
        return f"torchrun --standalone --nproc_per_node {gpus} -m"
    return "python -m"


def command(st: Stage, table_models: tuple[str, ...], overrides: tuple[str, ...] = (), gpus: int = 1,
            params=None, row: str | None = None) -> str:
    """The stage's shell command ({model} left in for per-model stages); `gpus` > 1 runs it under torchrun.
    Row stages (issue 6) need the loaded `params` (and the `row` of a per-row stage)."""
    if st.per_row or st.table:
        return row_command(st, params, row, overrides)
    parts = [launcher(st, gpus), f"pipeline.{st.cli}", "--params params.yaml"]
    parts += [f"--configfile {o}" for o in overrides]
    for name, p in {**input_paths(st, table_models), **st.outputs, **st.args}.items():
        vals = list(table_models) if p == ALL_MODELS else (p if isinstance(p, list) else [p])
        parts.append(f"{flag(name)} {' '.join(vals)}")
    # torchrun's parser takes any option that abbreviates one of its own (`--log` -> --log-dir, --logs-specs, ...)
    # even after the module name, so under torchrun the log goes by its unambiguous alias
    torchrun = launcher(st, gpus).startswith("torchrun")
    parts.append(f"{'--log-file' if torchrun else '--log'} {st.log}")
    return " ".join(parts)


def params_keys(st: Stage, model: str | None = None, row: str | None = None) -> list[str]:
    keys = [k.format(model=model) if model else k for k in st.params]
    return [k.replace("{row}", row) for k in keys] if row else keys     # issue 6: per-row stages


# --- issue 6: resolving the inputs of row stages. A per-row input ref may hold {tok} / {res} (the row's
# tokenizer / resolution suffix, pipeline.rows.row_source); a ref to train_row resolves to the row whose model
# it samples (`model_from`), or to train_var's output for a table1 model; "*<stage>.<output>" in a table stage
# expands over the table's rows.
def _row_path(src: Stage, out: str, params, row: str) -> str:
    if src.name == "train_row":
        from pipeline.rows import model_owner
        kind, owner = model_owner(params, row)
        if kind == "model":
            return BY_NAME["train_var"].outputs[out].format(model=owner)
        row = owner
    return src.outputs[out].format(row=row)


def row_input_paths(st: Stage, params, row: str | None = None) -> dict[str, list[str] | str]:
    from pipeline.rows import row_source
    out = {}
    for name, ref in st.inputs.items():
        if st.per_row:
            ref = ref.format(**row_source(params.rows[row]))
        src, o, every = resolve(ref)
        if every:
            out[name] = [_row_path(src, o, params, r) for r in getattr(params, st.table).rows]
        elif src.per_row:
            out[name] = _row_path(src, o, params, row)
        else:
            out[name] = src.outputs[o]
    return out


def row_command(st: Stage, params, row: str | None, overrides: tuple[str, ...] = ()) -> str:
    parts = ["python -m", f"pipeline.{st.cli}", "--params params.yaml"]
    parts += [f"--configfile {o}" for o in overrides]
    for name, p in {**row_input_paths(st, params, row), **st.outputs, **st.args}.items():
        vals = list(getattr(params, st.table).rows) if p == ALL_ROWS else (p if isinstance(p, list) else [p])
        parts.append(f"{flag(name)} {' '.join(v.replace('{row}', row or '') for v in vals)}")
    parts.append(f"--log {st.log.replace('{row}', row or '')}")
    return " ".join(parts)


def dvc_row_stages(params) -> dict:
    """DVC stages of the row stages: per row of Tables 2/3 (train_row only for rows that train their own model)."""
    from pipeline.rows import table_rows
    out = {}
    for st in STAGES:
        if not (st.per_row or st.table):
            continue
        rows = [r for r in table_rows(params) if st.name != "train_row" or not params.rows[r].model_from] \
            if st.per_row else [None]
        if st.table and not getattr(params, st.table).rows:
            continue
        for r in rows:
            sub = (lambda s: s.replace("{row}", r)) if r else (lambda s: s)
            deps = [*st.deps_code]
            for v in row_input_paths(st, params, r).values():
                deps += v if isinstance(v, list) else [v]
            outs = [sub(p) for k, p in st.outputs.items() if k not in st.metrics]
            entry = {"cmd": row_command(st, params, r), "deps": list(dict.fromkeys(deps)),
                     "params": [sub(k) for k in st.params]}
            if outs:
                entry["outs"] = outs
            if st.metrics:
                entry["metrics"] = [{sub(st.outputs[k]): {"cache": False}} for k in st.metrics]
            out[f"{st.name}_{r}" if r else st.name] = entry
    return out
# --- end issue 6


# ------------------------------------------------------------------------------------------------- DVC
def dvc_stages(table_models: tuple[str, ...], gpus_for=lambda stage: 1) -> dict:
    """dvc.yaml `stages`: one DVC stage per (stage, model) for per-model stages (DVC has no wildcards). Only the
    models of table1 get stages, as only they are built by Snakemake's `table1` target."""
    out = {}
    for st in STAGES:
        if st.per_row or st.table:      # issue 6: dvc_row_stages
            continue
        for m in (table_models if st.per_model else (None,)):
            sub = (lambda s: s.format(model=m)) if m else (lambda s: s)
            ins = input_paths(st, table_models)
            deps = [*st.deps_code]
            for v in ins.values():
                deps += [sub(x) for x in (v if isinstance(v, list) else [v])]
            outs = [sub(p) for k, p in st.outputs.items() if k not in st.metrics and k not in st.plots]
            entry = {"cmd": sub(command(st, table_models, gpus=gpus_for(st.name))), "deps": deps,
                     "params": params_keys(st, m)}
            if outs:
                entry["outs"] = outs
            if st.metrics:
                entry["metrics"] = [{sub(st.outputs[k]): {"cache": False}} for k in st.metrics]
            if st.plots:
                entry["plots"] = [{sub(st.outputs[k]): {"cache": False}} for k in st.plots]
            out[f"{st.name}_{m}" if m else st.name] = entry
    return out


HEADER = ("# GENERATED from the stage registry in pipeline/dag.py by `python -m pipeline.dag`; do not edit.\n"
          "# The Snakefile builds its rules from the same registry (tests/test_dag.py checks both agree).\n")


def render_dvc_yaml(params) -> str:
    """dvc.yaml text for a loaded `Params` (its model names decide the per-model stages)."""
    stages = dvc_stages(params.table1_models, params.resources.gpus_for)
    stages.update(dvc_row_stages(params))      # issue 6
    plots = [{st.outputs[k]: {"x": cols[0], "y": list(cols[1:])}} for st in STAGES for k, cols in st.plots.items()]
    body = yaml.safe_dump({"stages": stages, **({"plots": plots} if plots else {})}, sort_keys=False, width=10_000)
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
