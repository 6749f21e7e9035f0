"""params.yaml: the single source of hyperparameters, validated on load. Imports no torch.

`load_params(path, overrides)` reads the YAML (duplicate keys refused), deep-merges override files on top (the
`--configfile` of the stage CLIs and of Snakemake: mappings merge key by key, anything else replaces), and builds
every section through the strict `build_config`, so an unknown or misspelled key anywhere, or a value outside its
stated range, is a `ConfigError` naming the key (and the valid keys, or the range).

The transformer sections do not repeat what the tokenizer fixes: `vocab_size`, `z_channels` and `patch_nums` of
every `models.<name>.model` are filled in from `tokenizer.model` (giving them is an error), and `num_classes` from
`data.num_classes` unless given. The top-level `seed` is the default of every section's own `seed`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from eval.config import EvalNetConfig, ScalingConfig, ScoreConfig
from pipeline.registry import CPU_STAGES, MULTI_GPU_STAGES
from pipeline.rows import RowConfig, RowTableConfig, build_rows, setting_overlay
from pipeline.yamlio import deep_merge, load_raw, read_yaml, section, seeded
from var.config import (
    Config,
    ConfigError,
    DataConfig,
    SampleConfig,
    TokenizerTrainConfig,
    TrainConfig,
    VARConfig,
    VQVAEConfig,
    ZeroShotConfig,
    build_config,
    check_sha256,
    param,
)

FROM_TOKENIZER = ("vocab_size", "z_channels", "patch_nums")   # VARConfig fields the tokenizer decides
NAME_RE = r"[A-Za-z0-9_-]+"


@dataclass(frozen=True)
class TokenizerAblationConfig(Config):
    """params.yaml `tokenizer_ablation` (stage `tokenizer_ablation`): residual vs independent scales and L2+VQ vs
    the full loss, each trained from the same init for `max_steps` on tokenizer.model."""
    variants: tuple[str, ...] = ("residual-full", "independent-full", "residual-l2vq",  # <quantizer>-<loss>
                                 "independent-l2vq")
    max_steps: int = param(150, ge=1)
    batch_size: int = param(32, ge=1)
    lr: float = param(1e-3, gt=0, le=10)
    warmup_steps: int = param(20, ge=0)
    lambda_p: float = param(1.0, ge=0)        # 'full': evalnet perceptual weight
    lambda_g: float = param(0.1, ge=0)        # 'full': adversarial weight (times the VQGAN adaptive weight)
    disc_start_step: int = param(75, ge=0)    # 'full': discriminator on from here (half the budget)
    disc_ch: int = param(32, ge=1)            # 'full': PatchGAN width (CPU-sized)
    disc_layers: int = param(3, ge=1)         # 'full': PatchGAN stride-2 layers (1 for 16 px images)
    seed: int = param(0, ge=0, lt=2 ** 63)

    def __post_init__(self):
        super().__post_init__()
        for v in self.variants:
            q, _, loss = v.partition("-")
            if q not in ("residual", "independent") or loss not in ("full", "l2vq"):
                raise ValueError(f"tokenizer_ablation.variants: {v!r} is not <residual|independent>-<full|l2vq>")


@dataclass(frozen=True)
class RunConfig(Config):
    """params.yaml `run`: which configuration this is. Every output goes under runs/<name>/, results/<name>/,
    metrics/<name>/ and logs/<name>/, so the artifacts of two configs (the default, `ci`, ImageNet) never mix."""
    name: str = "default"
    smoke_test: bool = False     # tiny models and data (the `ci` config): tables say so in their title

    def __post_init__(self):
        super().__post_init__()
        if not re.fullmatch(NAME_RE, self.name):
            raise ValueError(f"run.name {self.name!r}: use letters, digits, '-' and '_' only (it becomes a path)")


@dataclass(frozen=True)
class Table1Config(Config):
    """params.yaml `table1`: which measured models appear (in this order; empty = every entry of `models`), and which
    extra rows are built."""
    models: tuple[str, ...] = ()
    untrained_baseline: bool = True   # each trained model also sampled and scored at its initial weights
    validation_row: bool = True       # the "validation data" row: real val images scored against the train split


@dataclass(frozen=True)
class AblationConfig(Config):
    """params.yaml `ablation`: the row of `rows` the experiment jobs (`ablation_*`) train, sample and score, so one
    DVC experiment per row (`dvc exp run -S ablation.row=<row>`) and `dvc metrics diff` between them compare rows.
    Empty: no experiment jobs."""
    row: str = ""


@dataclass(frozen=True)
class TokenizerSection:
    model: VQVAEConfig = field(default_factory=VQVAEConfig)
    train: TokenizerTrainConfig = field(default_factory=TokenizerTrainConfig)
    pretrained: str = ""         # a released tokenizer checkpoint (e.g. vae_ch160v4096z32.pth): imported, not trained
    pretrained_sha256: str = ""  # optional full sha256 of `pretrained`; the digest loaded is recorded either way


@dataclass(frozen=True)
class ModelSection:
    model: VARConfig
    train: TrainConfig
    pretrained: str = ""         # a released VAR checkpoint (e.g. var_d16.pth): imported (import_var), not trained
    pretrained_sha256: str = ""  # optional full sha256 of `pretrained`; the digest loaded is recorded either way


@dataclass(frozen=True)
class ResourcesConfig(Config):
    """params.yaml `resources`: GPUs of the jobs that can use several (one node each, torchrun). Not part of any
    stage's fingerprint: training resumes across GPU counts, and samples do not depend on it."""
    gpus: int = param(1, ge=1)                                 # default of every multi-GPU stage
    stage_gpus: dict[str, int] = field(default_factory=dict)   # per stage, e.g. {train_var: 8, sample: 4}

    def __post_init__(self):
        super().__post_init__()
        bad = sorted(set(self.stage_gpus) - set(MULTI_GPU_STAGES))
        if bad:
            raise ValueError(f"resources.stage_gpus: {bad} are not multi-GPU stages ({', '.join(MULTI_GPU_STAGES)})")
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.stage_gpus.values()):
            raise ValueError("resources: GPU counts must be integers >= 1")

    def gpus_for(self, stage: str, kind: str | None = None) -> int:
        """GPUs a job of `stage` asks for: the configured count for multi-GPU stages, none for the CPU-only ones
        (data indexing, table assembly), one for every other stage."""
        kind = kind or ("many" if stage in MULTI_GPU_STAGES else "none" if stage in CPU_STAGES else "one")
        if kind == "many":
            return self.stage_gpus.get(stage, self.gpus)
        return 0 if kind == "none" else 1


@dataclass(frozen=True)
class Params:
    seed: int
    data: DataConfig
    tokenizer: TokenizerSection
    models: dict[str, ModelSection]
    sample: SampleConfig
    evalnet: EvalNetConfig
    score: ScoreConfig
    table1: Table1Config
    run: RunConfig = field(default_factory=RunConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    zeroshot: ZeroShotConfig = field(default_factory=ZeroShotConfig)
    settings: dict[str, Any] = field(default_factory=dict)     # name -> overlay (raw mapping), pipeline/rows.py
    row_train: TrainConfig = field(default_factory=TrainConfig)
    rows: dict[str, RowConfig] = field(default_factory=dict)
    table2: RowTableConfig = field(default_factory=RowTableConfig)
    table3: RowTableConfig = field(default_factory=RowTableConfig)
    tokenizer_ablation: TokenizerAblationConfig = field(default_factory=TokenizerAblationConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)

    @property
    def table1_models(self) -> tuple[str, ...]:
        return self.table1.models or tuple(self.models)

    def model(self, name: str) -> ModelSection:
        if name not in self.models:
            raise ConfigError(f"unknown model {name!r}; models in params: {', '.join(self.models)}")
        return self.models[name]


SECTIONS = tuple(f.name for f in fields(Params))


def _path_key(sec: Mapping, where: str) -> str:
    """An optional path (`pretrained`): a string, or empty/absent."""
    val = sec.get(where.rsplit(".", 1)[1]) or ""
    if not isinstance(val, str):
        raise ConfigError(f"{where}: expected a path string, got {val!r}")
    return val


def _sha256_key(sec: Mapping, where: str) -> str:
    """An optional pin of a third-party weights file: '' or its full sha256 (64 hex digits)."""
    try:
        return check_sha256(sec.get(where.rsplit(".", 1)[1]) or "", where)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _check_top_k(top_k: int, vocab: int, where: str) -> None:
    if top_k > vocab:
        raise ConfigError(f"{where} = {top_k}: must be in [0, {vocab}] (0 = off; the tokenizer has {vocab} codes)")


def _models(raw: Mapping, seed: int, data: DataConfig, tokenizer: TokenizerSection) -> dict[str, ModelSection]:
    models_raw = section(raw, "models", "models", ())
    if not models_raw:
        raise ConfigError("params section 'models' must name at least one model (e.g. 'var-d4: {model: "
                          "{depth: 4}, train: {...}}')")
    models = {}
    for name in models_raw:
        where = f"models.{name}"
        if not isinstance(name, str) or not re.fullmatch(NAME_RE, name):
            raise ConfigError(f"model name {name!r}: use letters, digits, '-' and '_' only (it becomes a path "
                              f"and a wildcard)")
        spec = section(models_raw, name, where, ("model", "train", "pretrained", "pretrained_sha256"))
        m = dict(spec.get("model") or {})
        repeated = [k for k in FROM_TOKENIZER if k in m]
        if repeated:
            raise ConfigError(f"{', '.join(repr(f'{where}.model.{k}') for k in repeated)}: taken from "
                              f"tokenizer.model, do not repeat it here")
        if "num_classes" not in m:
            if data.num_classes == 0:
                raise ConfigError(f"{where}.model.num_classes must be set when data.num_classes is 0 (infer)")
            m["num_classes"] = data.num_classes
        for k in FROM_TOKENIZER:
            m[k] = getattr(tokenizer.model, k)
        models[name] = ModelSection(build_config(VARConfig, m, f"{where}.model"),
                                    build_config(TrainConfig, seeded(TrainConfig, spec.get("train"), seed),
                                                 f"{where}.train"),
                                    _path_key(spec, f"{where}.pretrained"),
                                    _sha256_key(spec, f"{where}.pretrained_sha256"))
    return models


def _scaling(raw: Mapping, seed: int) -> ScalingConfig:
    sc_raw = dict(section(raw, "scaling", "scaling", ()) or {})
    if isinstance(sc_raw.get("train"), Mapping) or sc_raw.get("train") is None:
        sc_raw["train"] = seeded(TrainConfig, sc_raw.get("train") or {}, sc_raw.get("seed", seed))
    return build_config(ScalingConfig, seeded(ScalingConfig, sc_raw, seed), "scaling")


ROW_SECTIONS = ("rows", "table2", "table3")


def _rows(raw: Mapping, seed: int) -> dict:
    """`settings`, `row_train`, `rows`, `table2`, `table3` (pipeline/rows.py); each row is checked against the
    params of its own setting (its tokenizer and class count)."""
    cache: dict[str, Params] = {}

    def setting_params(name: str) -> Params:
        if name not in cache:
            base = {k: v for k, v in raw.items() if k not in (*ROW_SECTIONS, "settings", "ablation")}
            try:
                cache[name] = build_params(deep_merge(base, raw["settings"][name]) if name else base)
            except ConfigError as e:
                raise ConfigError(f"setting {name!r}: {e}") from None
        return cache[name]
    out = build_rows(raw, seed, setting_params)
    ablation = build_config(AblationConfig, raw.get("ablation"), "ablation")
    if ablation.row and ablation.row not in out["rows"]:
        raise ConfigError(f"ablation.row = {ablation.row!r}: not a key of 'rows' ({', '.join(out['rows']) or 'none'})")
    if ablation.row and out["rows"][ablation.row].setting:
        raise ConfigError(f"ablation.row = {ablation.row!r}: experiments run rows of the base setting (this row's "
                          f"setting is {out['rows'][ablation.row].setting!r}; run it with its table)")
    out["ablation"] = ablation
    for name, row in out["rows"].items():
        _check_top_k(row.sampler.top_k, setting_params(row.setting).tokenizer.model.vocab_size,
                     f"rows.{name}.sampler.top_k")
    return out


def build_params(raw: Mapping) -> Params:
    """Validate a merged params mapping into `Params` (every section, every key)."""
    unknown = sorted(set(raw) - set(SECTIONS), key=str)
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {', '.join(repr(k) for k in unknown)}; "
                          f"valid keys: {', '.join(SECTIONS)}")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63:
        raise ConfigError(f"seed = {seed!r}: must be an integer in [0, 2**63)")
    data = build_config(DataConfig, seeded(DataConfig, raw.get("data"), seed), "data")
    tok_raw = section(raw, "tokenizer", "tokenizer", ("model", "train", "pretrained", "pretrained_sha256"))
    tokenizer = TokenizerSection(build_config(VQVAEConfig, tok_raw.get("model"), "tokenizer.model"),
                                 build_config(TokenizerTrainConfig,
                                              seeded(TokenizerTrainConfig, tok_raw.get("train"), seed),
                                              "tokenizer.train"),
                                 _path_key(tok_raw, "tokenizer.pretrained"),
                                 _sha256_key(tok_raw, "tokenizer.pretrained_sha256"))
    if tokenizer.model.image_size != data.image_size:
        raise ConfigError(f"tokenizer.model gives {tokenizer.model.image_size} px images (patch_nums[-1]="
                          f"{tokenizer.model.patch_nums[-1]} x downsample {tokenizer.model.downsample}) but "
                          f"data.image_size is {data.image_size}")
    models = _models(raw, seed, data, tokenizer)
    table1 = build_config(Table1Config, raw.get("table1"), "table1")
    missing = [m for m in table1.models if m not in models]
    if missing:
        raise ConfigError(f"table1.models names {missing} not in 'models' ({', '.join(models)})")
    sample = build_config(SampleConfig, seeded(SampleConfig, raw.get("sample"), seed), "sample")
    _check_top_k(sample.sampler.top_k, tokenizer.model.vocab_size, "sample.sampler.top_k")
    zeroshot = build_config(ZeroShotConfig, seeded(ZeroShotConfig, raw.get("zeroshot"), seed), "zeroshot")
    _check_top_k(zeroshot.sampler.top_k, tokenizer.model.vocab_size, "zeroshot.sampler.top_k")
    if zeroshot.model and zeroshot.model not in (table1.models or tuple(models)):
        raise ConfigError(f"zeroshot.model {zeroshot.model!r} is not a table1 model "
                          f"({', '.join(table1.models or tuple(models))})")
    scaling = _scaling(raw, seed)
    _check_top_k(scaling.fig7_sampler.top_k, tokenizer.model.vocab_size, "scaling.fig7_sampler.top_k")
    return Params(seed=seed, data=data, tokenizer=tokenizer, models=models, sample=sample,
                  evalnet=build_config(EvalNetConfig, seeded(EvalNetConfig, raw.get("evalnet"), seed), "evalnet"),
                  score=build_config(ScoreConfig, raw.get("score"), "score"), table1=table1,
                  run=build_config(RunConfig, raw.get("run"), "run"),
                  scaling=scaling, zeroshot=zeroshot, **_rows(raw, seed),
                  tokenizer_ablation=build_config(TokenizerAblationConfig, seeded(
                      TokenizerAblationConfig, raw.get("tokenizer_ablation"), seed), "tokenizer_ablation"),
                  resources=build_config(ResourcesConfig, raw.get("resources"), "resources"))


def load_params(path: str | Path = "params.yaml", overrides: tuple[str | Path, ...] | list = (),
                setting: str = "", single_scale: bool = False) -> Params:
    """Load, merge and validate params; errors name the file or key. `setting`: a key of `settings`, whose
    overlay is merged over the result (the stages of Table 2's higher resolution); `single_scale`: the tokenizer
    keeps only its final scale (the AR baseline's tokenizer and tokens)."""
    try:
        raw = setting_overlay(load_raw(path, overrides), setting)
        if single_scale:
            last = build_params(raw).tokenizer.model.patch_nums[-1]
            raw = deep_merge(raw, {"tokenizer": {"model": {"patch_nums": [last]}}})
        return build_params(raw)
    except ConfigError as e:
        src = " + ".join(str(p) for p in (path, *(overrides or ())))
        raise ConfigError(f"{src}: {e}") from None


def params_to_dict(p: Params) -> dict:
    """Plain nested dict of the resolved params (what a stage ran with; JSON/YAML-safe)."""
    def plain(v):
        if hasattr(v, "__dataclass_fields__"):
            return {f.name: plain(getattr(v, f.name)) for f in fields(v)}
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v
    return plain(p)


def select(p: Params, keys: tuple[str, ...] | list[str]) -> dict:
    """The resolved values of dotted `keys` (e.g. 'models.var-d4', 'tokenizer.model'): a stage's fingerprint."""
    full = params_to_dict(p)
    out = {}
    for key in keys:
        cur = full
        for part in key.split("."):   # model names carry no dots (checked in build_params)
            cur = cur[part]
        out[key] = cur
    return out


__all__ = ["Params", "SampleConfig", "ScoreConfig", "Table1Config", "TokenizerSection", "ModelSection",
           "ResourcesConfig", "load_params", "load_raw", "read_yaml", "build_params", "params_to_dict", "select",
           "deep_merge", "ConfigError", "SECTIONS"]
