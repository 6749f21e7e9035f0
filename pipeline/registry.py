"""The stages of the pipeline DAG, as data: what each one runs, reads, writes and which params keys it reads.

This module imports nothing of the project. `pipeline/plan.py` turns it and a params file into concrete jobs
(one per model, row, setting or tokenizer variant) and `pipeline/render.py` writes those jobs as Snakemake rules
and as `dvc.yaml`, through one code path, so both front ends run byte-identical commands on identical paths.

A stage is a CLI, `python -m pipeline.stages.<module> --params params.yaml --<input> PATH ... --<output> PATH
--log LOG`. Its inputs name outputs of other stages ("tokens.train_tokens"); the plan resolves each to the
instance of that stage in the job's own context (the same setting, tokenizer variant, model or row); a name
prefixed with "*" is the list over every member of a table (its models or rows).

Path templates: {n} is the run's name (params `run.name`: every config writes under its own runs/<n>/,
results/<n>/, metrics/<n>/ and logs/<n>/, so artifacts of two configs never mix); {model} and {row} are names from
params; {s} is a setting's suffix ("" or "_hires": Table 2's
resolution), {t} a tokenizer variant's suffix ("", "_ar" for the AR baseline's single-scale tokenizer, "_hires").
DVC metrics and plots live under metrics/<n>/ (cache: false): small files meant to be committed to git, so
`dvc metrics diff`, `dvc exp show` and `dvc plots diff` work across commits and experiments; every other output is
cached by DVC. Resumable trainers keep their state under `runs/<n>/state/` (the `state` template): never a declared output, so
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
    metrics: tuple[str, ...] = ()               # outputs that are DVC metrics: small flat JSON under metrics/
    plots: tuple[str, ...] = ()                 # outputs that are DVC plots: PNG figures under metrics/plots/
    state: str = ""                             # resumable state directory template (not an output)
    args: dict[str, str] = field(default_factory=dict)   # fixed CLI args
    light: bool = False                         # Snakemake: one thread (runs beside others); else all cores
    gpus: str = "one"                           # "none": CPU job | "one" | "many": torchrun with several GPUs
    table: str = ""                             # a table stage: its members are this table's models / rows
    context: dict[str, str] = field(default_factory=dict)   # fixed context of a single stage (e.g. its setting)
    # Files named in params that the stage reads (weights, reference batches): inputs whenever the key is set, so
    # both front ends rerun the job when the file changes (params key -> what it is).
    files: tuple[str, ...] = ()
    # Inputs the job has only when a condition of the params holds (input flag -> condition, see pipeline/plan.py).
    when: dict[str, str] = field(default_factory=dict)
    # Another stage whose instances this one replaces when its condition holds (released weights are imported
    # instead of trained: same outputs, no training inputs).
    replaces: str = ""
    only_when: str = ""                         # instances exist only where this condition holds
    # Inputs read in another context than the job's own (input flag -> context fields), e.g. the AR tokenizer.
    input_context: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def per_instance(self) -> bool:
        return self.over != SINGLE


STAGES: tuple[Stage, ...] = (
    # --- data and the offline evaluation network (per setting: Table 2's resolution has its own)
    Stage("data", "data", SETTING, inputs={},
          outputs={"train": "runs/{n}/data{s}/train.npz", "val": "runs/{n}/data{s}/val.npz", "classes": "runs/{n}/data{s}/classes.json"},
          params=("seed", "data"), files=("data.root",), light=True, gpus="none"),
    Stage("evalnet", "evalnet", SETTING, inputs={"train": "data.train", "val": "data.val"},
          outputs={"model": "runs/{n}/evalnet{s}/model.pt", "metrics": "runs/{n}/evalnet{s}/metrics.json",
                   "summary": "metrics/{n}/evalnet{s}.json"},
          params=("seed", "data", "evalnet"), metrics=("summary",)),
    # --- the tokenizer and the token maps (per tokenizer variant). evalnet is an input of the tokenizer: its
    # per-epoch rFID, and the offline (`perceptual: evalnet`) perceptual loss.
    Stage("tokenizer", "tokenizer", TOKENIZER, inputs={"train": "data.train", "val": "data.val",
                                                       "evalnet": "evalnet.model"},
          outputs={"model": "runs/{n}/tokenizer{t}/model.pt", "metrics": "runs/{n}/tokenizer{t}/metrics.json",
                   "history": "runs/{n}/tokenizer{t}/history.csv", "summary": "metrics/{n}/tokenizer{t}.json",
                   "curves": "metrics/{n}/plots/tokenizer{t}.png"},
          params=("seed", "data", "tokenizer", "score.extractor", "score.inception_weights"),
          files=("score.inception_weights", "tokenizer.train.init_from", "tokenizer.train.perceptual_weights"),
          metrics=("summary",), plots=("curves",), state="runs/{n}/state/tokenizer{t}", gpus="many"),
    Stage("import_tokenizer", "import_weights", TOKENIZER, replaces="tokenizer", inputs={},
          outputs={"model": "runs/{n}/tokenizer{t}/model.pt", "metrics": "runs/{n}/tokenizer{t}/metrics.json",
                   "summary": "metrics/{n}/tokenizer{t}.json"},
          params=("tokenizer",), metrics=("summary",), files=("tokenizer.pretrained",), args={"kind": "vqvae"},
          light=True, gpus="none"),
    Stage("tokens", "tokens", TOKENIZER, gpus="many",
          inputs={"tokenizer": "tokenizer.model", "train": "data.train", "val": "data.val"},
          outputs={"train_tokens": "runs/{n}/tokens{t}/train.npz", "val_tokens": "runs/{n}/tokens{t}/val.npz"},
          params=("data",)),
    # --- Table 1: one VAR per entry of `table1.models`
    Stage("train_var", "train_var", MODEL, inputs={"tokenizer": "tokenizer.model",
                                                   "train_tokens": "tokens.train_tokens",
                                                   "val_tokens": "tokens.val_tokens"},
          outputs={"model": "runs/{n}/var/{model}/model.pt", "metrics": "runs/{n}/var/{model}/metrics.json",
                   "init": "runs/{n}/var/{model}/model_init.pt", "curves": "metrics/{n}/plots/train_{model}.png"},
          params=("seed", "data.num_classes", "tokenizer.model", "models.{model}"), plots=("curves",),
          state="runs/{n}/state/train_var/{model}", args={"model_name": "{model}"}, gpus="many"),
    Stage("import_var", "import_weights", MODEL, replaces="train_var", inputs={},
          outputs={"model": "runs/{n}/var/{model}/model.pt", "metrics": "runs/{n}/var/{model}/metrics.json"},
          params=("tokenizer.model", "models.{model}"), files=("models.{model}.pretrained",),
          args={"kind": "var", "model_name": "{model}"}, light=True, gpus="none"),
    # With score.seeds > 1 the same images are drawn again under further sampling seeds (`seed_samples`), so every
    # score is reported as mean +- sd over seeds.
    Stage("sample", "sample", MODEL, inputs={"model": "train_var.model", "tokenizer": "tokenizer.model"},
          outputs={"samples": "runs/{n}/var/{model}/samples.npz", "grid": "runs/{n}/var/{model}/grid.png",
                   "metrics": "runs/{n}/var/{model}/sample_metrics.json",
                   "seed_samples": "runs/{n}/var/{model}/samples_seeds.npz"},
          when={"seed_samples": "several_seeds"},
          params=("seed", "sample", "score.seeds"), args={"model_name": "{model}"}, gpus="many"),
    # The same model at its initial weights, sampled and scored alike: "the model learns" is measured against it.
    Stage("sample_untrained", "sample", MODEL, inputs={"model": "train_var.init", "tokenizer": "tokenizer.model"},
          only_when="untrained_baseline",
          outputs={"samples": "runs/{n}/var/{model}/untrained/samples.npz",
                   "grid": "runs/{n}/var/{model}/untrained/grid.png",
                   "metrics": "runs/{n}/var/{model}/untrained/sample_metrics.json"},
          params=("seed", "sample"), args={"model_name": "{model}"}),
    # The real side is the validation split, or the standard evaluator's reference batch when one is configured;
    # the evaluation network is an input when it is the extractor (it also gives the class accuracy).
    Stage("score", "score", MODEL, inputs={"samples": "sample.samples", "real": "data.val",
                                           "evalnet": "evalnet.model", "untrained": "sample_untrained.samples",
                                           "seed_samples": "sample.seed_samples", "sample_metrics": "sample.metrics"},
          when={"evalnet": "evalnet_scores", "untrained": "untrained_baseline", "real": "no_reference_batch",
                "seed_samples": "several_seeds"},
          files=("score.inception_weights", "score.reference_batch"),
          outputs={"scores": "runs/{n}/var/{model}/scores.json"}, params=("data", "score"),
          args={"name": "{model}"}, light=True),
    # Table 1's "validation data" row: real val images scored against the real train split.
    Stage("score_valdata", "score", SETTING, inputs={"samples": "data.val", "real": "data.train",
                                                     "evalnet": "evalnet.model"},
          when={"evalnet": "evalnet_scores"}, files=("score.inception_weights",), only_when="validation_row",
          outputs={"scores": "runs/{n}/valdata{s}/scores.json"}, params=("data", "score"),
          args={"name": "valdata"}, light=True),
    Stage("table1", "table1", SINGLE, table="table1",
          inputs={"scores": "*score.scores", "train_metrics": "*train_var.metrics",
                  "sample_metrics": "*sample.metrics", "valdata": "score_valdata.scores"},
          when={"valdata": "validation_row"},
          outputs={"md": "results/{n}/table1.md", "csv": "results/{n}/table1.csv",
                   "summary": "metrics/{n}/table1.json"}, params=("score", "table1"), metrics=("summary",),
          light=True, gpus="none"),
    # --- Tables 2 and 3: one train / sample / score job per row (a row with `model_from` samples another's model)
    Stage("train_row", "train_row", ROW, inputs={"tokenizer": "tokenizer.model", "train_tokens": "tokens.train_tokens",
                                                 "val_tokens": "tokens.val_tokens"},
          outputs={"model": "runs/{n}/rows/{row}/model.pt", "metrics": "runs/{n}/rows/{row}/metrics.json",
                   "curves": "metrics/{n}/plots/train_row_{row}.png"},
          params=("seed", "data.num_classes", "rows.{row}"), plots=("curves",),
          state="runs/{n}/state/train_row/{row}", args={"row": "{row}"}),
    # A rejection-sampled row reads its classifier: the setting's evaluation network, or a weights file in params.
    Stage("sample_row", "sample_row", ROW, inputs={"model": "train_row.model", "tokenizer": "tokenizer.model",
                                                   "classifier": "evalnet.model"},
          when={"classifier": "rejection_evalnet", "seed_samples": "row_several_seeds"},
          files=("rows.{row}.sampler.rejection.classifier_weights",),
          outputs={"samples": "runs/{n}/rows/{row}/samples.npz", "grid": "runs/{n}/rows/{row}/grid.png",
                   "metrics": "runs/{n}/rows/{row}/sample_metrics.json",
                   "seed_samples": "runs/{n}/rows/{row}/samples_seeds.npz"},
          params=("seed", "sample", "rows.{row}", "score.seeds"), args={"row": "{row}"}),
    Stage("score_row", "score", ROW, inputs={"samples": "sample_row.samples", "real": "data.val",
                                             "evalnet": "evalnet.model", "seed_samples": "sample_row.seed_samples",
                                             "sample_metrics": "sample_row.metrics"},
          when={"evalnet": "evalnet_scores", "real": "no_reference_batch", "seed_samples": "row_several_seeds"},
          files=("score.inception_weights", "score.reference_batch"),
          outputs={"scores": "runs/{n}/rows/{row}/scores.json"}, params=("data", "score"),
          args={"name": "{row}"}, light=True),
    Stage("table3", "row_table", SINGLE, table="table3",
          inputs={"scores": "*score_row.scores", "train_metrics": "*train_row.metrics",
                  "sample_metrics": "*sample_row.metrics"},
          outputs={"md": "results/{n}/table3.md", "csv": "results/{n}/table3.csv",
                   "summary": "metrics/{n}/table3.json"}, params=("rows", "table3"), metrics=("summary",),
          args={"table": "table3"}, light=True, gpus="none"),
    Stage("table2", "row_table", SINGLE, table="table2", context={"setting": "hires"},
          inputs={"scores": "*score_row.scores", "train_metrics": "*train_row.metrics",
                  "sample_metrics": "*sample_row.metrics", "valdata": "score_valdata.scores"},
          outputs={"md": "results/{n}/table2.md", "csv": "results/{n}/table2.csv",
                   "summary": "metrics/{n}/table2.json"}, params=("rows", "table2"), metrics=("summary",),
          args={"table": "table2"}, light=True, gpus="none"),
    # --- one row as a DVC experiment: `dvc exp run -S ablation.row=<row>` trains, samples and scores that row at
    # fixed paths, so `dvc metrics diff` / `dvc plots diff` compare experiments. The commands do not name the row (the
    # stages read params ablation.row) and carry the AR tokenizer's files too, so one dvc.yaml serves every row.
    # The seed file is always declared (score.seeds > 1); a rejection row writes it with its first seed only.
    Stage("ablation_train", "train_row", SINGLE, only_when="ablation",
          inputs={"tokenizer": "tokenizer.model", "train_tokens": "tokens.train_tokens", "val_tokens": "tokens.val_tokens",
                  "ar_tokenizer": "tokenizer.model", "ar_train_tokens": "tokens.train_tokens",
                  "ar_val_tokens": "tokens.val_tokens"},
          input_context={k: {"tok": "_ar"} for k in ("ar_tokenizer", "ar_train_tokens", "ar_val_tokens")},
          when={k: "ar_rows" for k in ("ar_tokenizer", "ar_train_tokens", "ar_val_tokens")},
          outputs={"model": "runs/{n}/ablation/model.pt", "metrics": "runs/{n}/ablation/metrics.json",
                   "curves": "metrics/{n}/plots/ablation_train.png"},
          params=("seed", "data.num_classes", "ablation", "rows", "row_train"), plots=("curves",),
          state="runs/{n}/state/ablation"),
    Stage("ablation_sample", "sample_row", SINGLE, only_when="ablation",
          inputs={"model": "ablation_train.model", "tokenizer": "tokenizer.model", "ar_tokenizer": "tokenizer.model",
                  "classifier": "evalnet.model"},
          input_context={"ar_tokenizer": {"tok": "_ar"}},
          when={"ar_tokenizer": "ar_rows", "classifier": "rejection_evalnet_rows", "seed_samples": "several_seeds"},
          outputs={"samples": "runs/{n}/ablation/samples.npz", "grid": "runs/{n}/ablation/grid.png",
                   "metrics": "runs/{n}/ablation/sample_metrics.json",
                   "seed_samples": "runs/{n}/ablation/samples_seeds.npz"},
          params=("seed", "sample", "ablation", "rows", "score.seeds")),
    Stage("ablation_score", "score", SINGLE, only_when="ablation",
          inputs={"samples": "ablation_sample.samples", "real": "data.val", "evalnet": "evalnet.model",
                  "seed_samples": "ablation_sample.seed_samples", "sample_metrics": "ablation_sample.metrics"},
          when={"evalnet": "evalnet_scores", "real": "no_reference_batch", "seed_samples": "several_seeds"},
          files=("score.inception_weights", "score.reference_batch"),
          outputs={"scores": "runs/{n}/ablation/scores.json"}, params=("data", "score"), args={"name": "ablation"},
          light=True),
    Stage("ablation", "row_table", SINGLE, only_when="ablation",
          inputs={"scores": "ablation_score.scores", "train_metrics": "ablation_train.metrics",
                  "sample_metrics": "ablation_sample.metrics"},
          outputs={"md": "results/{n}/ablation.md", "csv": "results/{n}/ablation.csv",
                   "summary": "metrics/{n}/ablation.json"},
          params=("ablation", "rows"), metrics=("summary",), args={"table": "ablation"}, light=True, gpus="none"),
    # --- residual vs independent multi-scale quantisation, L2+VQ vs the full loss (paper Sec. 3.2; small budget)
    Stage("tokenizer_ablation", "tokenizer_ablation", SINGLE,
          inputs={"train": "data.train", "val": "data.val", "evalnet": "evalnet.model"},
          outputs={"md": "results/{n}/tokenizer_ablation.md", "json": "results/{n}/tokenizer_ablation.json",
                   "summary": "metrics/{n}/tokenizer_ablation.json"},
          params=("seed", "data", "tokenizer", "tokenizer_ablation"), metrics=("summary",),
          state="runs/{n}/state/tokenizer_ablation"),
    # --- depth sweep and scaling-law fits (Fig. 5-6), the sample grid over size x training (Fig. 7), and zero-shot
    # in-/out-painting and class-conditional editing (Fig. 8)
    Stage("scaling_train", "scaling_train", SINGLE,
          inputs={"tokenizer": "tokenizer.model", "train_tokens": "tokens.train_tokens",
                  "val_tokens": "tokens.val_tokens"},
          outputs={"points": "runs/{n}/scaling/points.json", "snapshots": "runs/{n}/scaling/snapshots.pt"},
          params=("seed", "data.num_classes", "tokenizer.model", "scaling.depths", "scaling.width_per_depth",
                  "scaling.train", "scaling.eval_fractions", "scaling.eval_max_images", "scaling.fig7_depths",
                  "scaling.fig7_fractions"),
          state="runs/{n}/state/scaling"),
    Stage("scaling", "scaling", SINGLE, inputs={"points": "scaling_train.points"},
          outputs={"csv": "results/{n}/scaling.csv", "md": "results/{n}/scaling.md",
                   "plot_n": "metrics/{n}/plots/scaling_N.png", "plot_c": "metrics/{n}/plots/scaling_C.png",
                   "points_n": "results/{n}/scaling_vs_N.csv", "points_c": "results/{n}/scaling_vs_C.csv",
                   "metrics": "metrics/{n}/scaling_fits.json"},
          params=("scaling",), metrics=("metrics",), plots=("plot_n", "plot_c"), light=True, gpus="none"),
    Stage("fig7", "fig7", SINGLE, inputs={"snapshots": "scaling_train.snapshots", "tokenizer": "tokenizer.model",
                                          "val_tokens": "tokens.val_tokens"},
          outputs={"figure": "results/{n}/fig7.png"},
          params=("seed", "scaling", "sample.fast", "sample.precision", "sample.compile"), light=True),
    Stage("zeroshot", "zeroshot", SINGLE, table="table1",
          inputs={"model": "*train_var.model", "tokenizer": "tokenizer.model", "val": "data.val"},
          outputs={"inpaint": "results/{n}/zeroshot/inpaint.png", "outpaint": "results/{n}/zeroshot/outpaint.png",
                   "edit": "results/{n}/zeroshot/edit.png", "metrics": "metrics/{n}/zeroshot.json"},
          params=("seed", "zeroshot", "table1", "sample.fast", "sample.precision", "sample.compile"),
          metrics=("metrics",), light=True),
)

BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}
MULTI_GPU_STAGES: tuple[str, ...] = tuple(s.name for s in STAGES if s.gpus == "many")
CPU_STAGES: tuple[str, ...] = tuple(s.name for s in STAGES if s.gpus == "none")
