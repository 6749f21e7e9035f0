"""The stages of the pipeline DAG, as data: what each one runs, reads, writes and which params keys it reads.

This module imports nothing of the project. `pipeline/plan.py` turns it and a params file into concrete jobs
(one per model, row, setting or tokenizer variant) and `pipeline/render.py` writes those jobs as Snakemake rules
and as `dvc.yaml`, through one code path, so both front ends run byte-identical commands on identical paths.

A stage is a CLI, `python -m pipeline.stages.<module> --params params.yaml --<input> PATH ... --<output> PATH
--log LOG`. Its inputs name outputs of other stages ("tokens.train_tokens"); the plan resolves each to the
instance of that stage in the job's own context (the same setting, tokenizer variant, model or row); a name
prefixed with "*" is the list over every member of a table (its models or rows).

Path templates: {model} and {row} are names from params; {s} is a setting's suffix ("" or "_hires": Table 2's
resolution), {t} a tokenizer variant's suffix ("", "_ar" for the AR baseline's single-scale tokenizer, "_hires").
Resumable trainers keep their state under `runs/state/` (the `state` template): never a declared output, so
neither Snakemake (which deletes the outputs of a failed job) nor DVC (which deletes a stage's outputs before
rerunning it) throws away a half-finished run.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# What a stage runs once per.
SINGLE, SETTING, TOKENIZER, MODEL, ROW = "", "setting", "tokenizer", "model", "row"


@dataclass(frozen=True)
class Stage:
    name: str                                   # rule / DVC stage name (instances add "_<model>", "_hires", ...)
    module: str                                 # python -m pipeline.stages.<module>
    over: str                                   # SINGLE | SETTING | TOKENIZER | MODEL | ROW
    inputs: dict[str, str]                      # CLI flag -> "<stage>.<output>" ("*<stage>.<output>": every member)
    outputs: dict[str, str]                     # CLI flag -> path template
    params: tuple[str, ...]                     # params.yaml keys the stage reads (templates: {model}, {row})
    metrics: tuple[str, ...] = ()               # outputs that are metrics (JSON)
    plots: dict[str, tuple[str, ...]] = field(default_factory=dict)   # output -> (x, *y) columns (DVC plots)
    state: str = ""                             # resumable state directory template (not an output)
    args: dict[str, str] = field(default_factory=dict)   # fixed CLI args
    light: bool = False                         # Snakemake: one thread (runs beside others); else all cores
    gpus: str = "one"                           # "none": CPU job | "one" | "many": torchrun with several GPUs
    table: str = ""                             # a table stage: its members are this table's models / rows
    context: dict[str, str] = field(default_factory=dict)   # fixed context of a single stage (e.g. its setting)

    @property
    def per_instance(self) -> bool:
        return self.over != SINGLE


STAGES: tuple[Stage, ...] = (
    # --- data and the offline evaluation network (per setting: Table 2's resolution has its own)
    Stage("data", "data", SETTING, inputs={},
          outputs={"train": "data{s}/train.npz", "val": "data{s}/val.npz", "classes": "data{s}/classes.json"},
          params=("seed", "data"), light=True, gpus="none"),
    Stage("evalnet", "evalnet", SETTING, inputs={"train": "data.train", "val": "data.val"},
          outputs={"model": "runs/evalnet{s}/model.pt", "metrics": "runs/evalnet{s}/metrics.json"},
          params=("seed", "data", "evalnet"), metrics=("metrics",)),
    # --- the tokenizer and the token maps (per tokenizer variant). evalnet is an input of the tokenizer: its
    # per-epoch rFID, and the offline (`perceptual: evalnet`) perceptual loss.
    Stage("tokenizer", "tokenizer", TOKENIZER, inputs={"train": "data.train", "val": "data.val",
                                                       "evalnet": "evalnet.model"},
          outputs={"model": "runs/tokenizer{t}/model.pt", "metrics": "runs/tokenizer{t}/metrics.json",
                   "history": "runs/tokenizer{t}/history.csv"},
          params=("seed", "data", "tokenizer", "score.extractor", "score.inception_weights"),
          metrics=("metrics",), state="runs/state/tokenizer{t}", gpus="many",
          plots={"history": ("epoch", "val_psnr", "val_ssim", "val_rfid", "val_usage_mean")}),
    Stage("tokens", "tokens", TOKENIZER, inputs={"tokenizer": "tokenizer.model", "train": "data.train",
                                                 "val": "data.val"},
          outputs={"train_tokens": "runs/tokens{t}/train.npz", "val_tokens": "runs/tokens{t}/val.npz"},
          params=("data",)),
    # --- Table 1: one VAR per entry of `table1.models`
    Stage("train_var", "train_var", MODEL, inputs={"tokenizer": "tokenizer.model",
                                                   "train_tokens": "tokens.train_tokens",
                                                   "val_tokens": "tokens.val_tokens"},
          outputs={"model": "runs/var/{model}/model.pt", "metrics": "runs/var/{model}/metrics.json",
                   "init": "runs/var/{model}/model_init.pt"},
          params=("seed", "data.num_classes", "tokenizer.model", "models.{model}"), metrics=("metrics",),
          state="runs/state/train_var/{model}", args={"model_name": "{model}"}, gpus="many"),
    Stage("sample", "sample", MODEL, inputs={"model": "train_var.model", "tokenizer": "tokenizer.model"},
          outputs={"samples": "runs/var/{model}/samples.npz", "grid": "runs/var/{model}/grid.png",
                   "metrics": "runs/var/{model}/sample_metrics.json"},
          params=("seed", "sample"), metrics=("metrics",), args={"model_name": "{model}"}, gpus="many"),
    # The same model at its initial weights, sampled and scored alike: "the model learns" is measured against it.
    Stage("sample_untrained", "sample", MODEL, inputs={"model": "train_var.init", "tokenizer": "tokenizer.model"},
          outputs={"samples": "runs/var/{model}/untrained/samples.npz",
                   "grid": "runs/var/{model}/untrained/grid.png",
                   "metrics": "runs/var/{model}/untrained/sample_metrics.json"},
          params=("seed", "sample"), args={"model_name": "{model}"}),
    Stage("score", "score", MODEL, inputs={"samples": "sample.samples", "real": "data.val",
                                           "evalnet": "evalnet.model", "untrained": "sample_untrained.samples"},
          outputs={"scores": "runs/var/{model}/scores.json"}, params=("data", "score"), metrics=("scores",),
          args={"name": "{model}"}, light=True),
    # Table 1's "validation data" row: real val images scored against the real train split.
    Stage("score_valdata", "score", SETTING, inputs={"samples": "data.val", "real": "data.train",
                                                     "evalnet": "evalnet.model"},
          outputs={"scores": "runs/valdata{s}/scores.json"}, params=("data", "score"), metrics=("scores",),
          args={"name": "valdata"}, light=True),
    Stage("table1", "table1", SINGLE, table="table1",
          inputs={"scores": "*score.scores", "train_metrics": "*train_var.metrics",
                  "sample_metrics": "*sample.metrics", "valdata": "score_valdata.scores"},
          outputs={"md": "results/table1.md", "csv": "results/table1.csv"}, params=("score", "table1"),
          light=True, gpus="none"),
    # --- Tables 2 and 3: one train / sample / score job per row (a row with `model_from` samples another's model)
    Stage("train_row", "train_row", ROW, inputs={"tokenizer": "tokenizer.model", "train_tokens": "tokens.train_tokens",
                                                 "val_tokens": "tokens.val_tokens"},
          outputs={"model": "runs/rows/{row}/model.pt", "metrics": "runs/rows/{row}/metrics.json"},
          params=("seed", "data.num_classes", "rows.{row}"), metrics=("metrics",),
          state="runs/state/train_row/{row}", args={"row": "{row}"}),
    Stage("sample_row", "sample_row", ROW, inputs={"model": "train_row.model", "tokenizer": "tokenizer.model"},
          outputs={"samples": "runs/rows/{row}/samples.npz", "grid": "runs/rows/{row}/grid.png",
                   "metrics": "runs/rows/{row}/sample_metrics.json"},
          params=("seed", "sample", "rows.{row}"), metrics=("metrics",), args={"row": "{row}"}),
    Stage("score_row", "score", ROW, inputs={"samples": "sample_row.samples", "real": "data.val",
                                             "evalnet": "evalnet.model"},
          outputs={"scores": "runs/rows/{row}/scores.json"}, params=("data", "score"), metrics=("scores",),
          args={"name": "{row}"}, light=True),
    Stage("table3", "row_table", SINGLE, table="table3",
          inputs={"scores": "*score_row.scores", "train_metrics": "*train_row.metrics",
                  "sample_metrics": "*sample_row.metrics"},
          outputs={"md": "results/table3.md", "csv": "results/table3.csv"}, params=("rows", "table3"),
          args={"table": "table3"}, light=True, gpus="none"),
    Stage("table2", "row_table", SINGLE, table="table2", context={"setting": "hires"},
          inputs={"scores": "*score_row.scores", "train_metrics": "*train_row.metrics",
                  "sample_metrics": "*sample_row.metrics", "valdata": "score_valdata.scores"},
          outputs={"md": "results/table2.md", "csv": "results/table2.csv"}, params=("rows", "table2"),
          args={"table": "table2"}, light=True, gpus="none"),
    # --- residual vs independent multi-scale quantisation, L2+VQ vs the full loss (paper Sec. 3.2; small budget)
    Stage("tokenizer_ablation", "tokenizer_ablation", SINGLE,
          inputs={"train": "data.train", "val": "data.val", "evalnet": "evalnet.model"},
          outputs={"md": "results/tokenizer_ablation.md", "json": "results/tokenizer_ablation.json"},
          params=("seed", "data", "tokenizer", "tokenizer_ablation"), metrics=("json",),
          state="runs/state/tokenizer_ablation"),
    # --- depth sweep and scaling-law fits (Fig. 5-6), the sample grid over size x training (Fig. 7), and zero-shot
    # in-/out-painting and class-conditional editing (Fig. 8)
    Stage("scaling_train", "scaling_train", SINGLE,
          inputs={"tokenizer": "tokenizer.model", "train_tokens": "tokens.train_tokens",
                  "val_tokens": "tokens.val_tokens"},
          outputs={"points": "runs/scaling/points.json", "snapshots": "runs/scaling/snapshots.pt"},
          params=("seed", "data.num_classes", "tokenizer.model", "scaling.depths", "scaling.width_per_depth",
                  "scaling.train", "scaling.eval_fractions", "scaling.eval_max_images", "scaling.fig7_depths",
                  "scaling.fig7_fractions"),
          state="runs/state/scaling"),
    Stage("scaling", "scaling", SINGLE, inputs={"points": "scaling_train.points"},
          outputs={"csv": "results/scaling.csv", "md": "results/scaling.md", "plot_n": "results/scaling_N.png",
                   "plot_c": "results/scaling_C.png", "points_n": "results/scaling_vs_N.csv",
                   "points_c": "results/scaling_vs_C.csv", "metrics": "results/scaling_fits.json"},
          params=("scaling",), metrics=("metrics",), light=True, gpus="none",
          plots={"points_n": ("log10_N", "log10_L_last", "log10_L_mean", "log10_err_last", "log10_err_mean"),
                 "points_c": ("log10_C", "log10_L_last", "log10_L_mean", "log10_err_last", "log10_err_mean")}),
    Stage("fig7", "fig7", SINGLE, inputs={"snapshots": "scaling_train.snapshots", "tokenizer": "tokenizer.model",
                                          "val_tokens": "tokens.val_tokens"},
          outputs={"figure": "results/fig7.png"}, params=("seed", "scaling"), light=True),
    Stage("zeroshot", "zeroshot", SINGLE, table="table1",
          inputs={"model": "*train_var.model", "tokenizer": "tokenizer.model", "val": "data.val"},
          outputs={"inpaint": "results/zeroshot/inpaint.png", "outpaint": "results/zeroshot/outpaint.png",
                   "edit": "results/zeroshot/edit.png", "metrics": "results/zeroshot/metrics.json"},
          params=("seed", "zeroshot", "table1"), metrics=("metrics",), light=True),
)

BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}
MULTI_GPU_STAGES: tuple[str, ...] = tuple(s.name for s in STAGES if s.gpus == "many")
CPU_STAGES: tuple[str, ...] = tuple(s.name for s in STAGES if s.gpus == "none")
