"""params.yaml: the single source of hyperparameters, validated on load.

`load_params(path, overrides)` reads the YAML, deep-merges override files on top (the `--configfile` of the stage
CLIs and of Snakemake: mappings merge key by key, anything else replaces), and builds every section through the
strict `build_config`, so an unknown or misspelled key anywhere is a `ConfigError` naming it and the valid keys.

The transformer sections do not repeat what the tokenizer fixes: `vocab_size`, `z_channels` and `patch_nums` of
every `models.<name>.model` are filled in from `tokenizer.model` (giving them is an error), and `num_classes` from
`data.num_classes` unless given. The top-level `seed` is the default of every section's own `seed`.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from var.config import ConfigError, VARConfig, VQVAEConfig, build_config
from var.weights import check_sha256

# Library configs (each owned by its module; imported here only to validate their sections).
from var.data import DataConfig
from var.tokenizer_train import TokenizerTrainConfig
from var.train import TrainConfig
from eval.evalnet import EvalNetConfig
# --- issue 7: scaling sweep / Fig. 7 and zero-shot editing sections
from eval.scaling import ScalingConfig
from var.editing import ZeroShotConfig
# ---
# --- issue 6: Table 2/3 rows, named settings (Table 2's resolution)
from pipeline.rows import RowConfig, RowTableConfig, build_rows, setting_overlay
# ---

FROM_TOKENIZER = ("vocab_size", "z_channels", "patch_nums")   # VARConfig fields the tokenizer decides


@dataclass(frozen=True)
class SampleConfig:
    """params.yaml `sample`: how the `sample` stage draws images (paper Sec. 4 / reference defaults)."""
    per_class: int = 50          # images per class (50 000 for ImageNet's 1000 classes, as the paper's FID)
    batch_size: int = 50         # images per sampler call (each batch is seeded from (seed, batch index))
    cfg: float = 1.5             # classifier-free guidance scale (reference demo: 1.5 at 256 px)
    top_k: int = 900             # 0 = off
    top_p: float = 0.96          # 0 = off
    more_smooth: bool = False    # Gumbel-softmax smoothing of the token embedding (visual quality, worse FID)
    seed: int = 0
    # How the images are computed (var/engine.py), not what is sampled: `fast` uses the GenerationEngine (static KV
    # cache, CUDA graphs, fused GELU epilogue, matmul upsampling: the plain sampler's function, to float rounding);
    # `precision: bf16` stores the transformer and decoder in bf16 once (CUDA; quantiser and f_hat stay fp32;
    # logits within bf16 rounding of fp32, so a few tokens differ); `compile` adds torch.compile fusion.
    fast: bool = False
    precision: str = "fp32"      # fp32 | bf16
    compile: bool = False

    def __post_init__(self):
        if self.per_class < 1 or self.batch_size < 1:
            raise ValueError("sample.per_class and sample.batch_size must be >= 1")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"sample.precision must be fp32 or bf16, got {self.precision!r}")
        if (self.precision != "fp32" or self.compile) and not self.fast:
            raise ValueError("sample.precision bf16 and sample.compile need sample.fast: true (the engine)")


@dataclass(frozen=True)
class ScoreConfig:
    """params.yaml `score`: which feature extractor FID/IS/precision/recall are computed with."""
    extractor: str = "evalnet"   # 'evalnet' (trained offline here) | 'inception' (needs inception_weights)
    inception_weights: str = ""  # path of the torch-fidelity Inception-v3 weights (only for 'inception')
    inception_weights_sha256: str = ""  # optional: its full sha256 (else the file name's 6726825d prefix is checked)
    device: str = "auto"         # 'auto' | 'cpu' | 'cuda' | 'cuda:N'
    batch_size: int = 200        # feature-extraction batch; bounds memory only
    nearest_k: int = 3           # k of the k-NN manifolds of precision/recall (Kynkaanniemi et al. 2019)
    reference_batch: str = ""    # ADM reference batch .npz (e.g. VIRTUAL_imagenet256_labeled.npz): the real side of
                                 # the generated-sample scores instead of data.val (its stored mu/sigma give FID)
    # Optional cross-check of the Inception FID by clean-fid, legacy_tensorflow mode (eval/cleanfid_check.py),
    # reported as fid_cleanfid_legacy_tf next to fid_inception, never in its place.
    cleanfid_crosscheck: bool = False
    cleanfid_weights: str = ""   # local inception-2015-12-05.pt (clean-fid's TorchScript Inception; never downloaded)
    cleanfid_weights_sha256: str = ""  # its full sha256, needed to load it (a TorchScript archive runs code)

    def __post_init__(self):
        if self.extractor not in ("evalnet", "inception"):
            raise ValueError(f"score.extractor must be 'evalnet' or 'inception', got {self.extractor!r}")
        if self.extractor == "inception" and not self.inception_weights:
            raise ValueError("score.extractor 'inception' needs score.inception_weights (a local file)")
        if self.cleanfid_crosscheck and self.extractor != "inception":
            raise ValueError("score.cleanfid_crosscheck cross-checks the Inception FID: it needs score.extractor "
                             "'inception'")
        if self.cleanfid_crosscheck and not self.cleanfid_weights:
            raise ValueError("score.cleanfid_crosscheck needs score.cleanfid_weights (a local inception-2015-12-05.pt)")
        check_sha256(self.inception_weights_sha256, "score.inception_weights_sha256")
        check_sha256(self.cleanfid_weights_sha256, "score.cleanfid_weights_sha256")


@dataclass(frozen=True)
class TokenizerAblationConfig:
    """params.yaml `tokenizer_ablation` (pipeline/tokenizer_ablation.py, issue 5): residual vs independent scales
    and L2+VQ vs the full loss, each trained from the same init for `max_steps` on tokenizer.model."""
    variants: tuple[str, ...] = ("residual-full", "independent-full", "residual-l2vq",  # <quantizer>-<loss>
                                 "independent-l2vq")
    max_steps: int = 150
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 20
    lambda_p: float = 1.0        # 'full': evalnet perceptual weight
    lambda_g: float = 0.1        # 'full': adversarial weight (times the VQGAN adaptive weight)
    disc_start_step: int = 75    # 'full': discriminator on from here (half the budget)
    disc_ch: int = 32            # 'full': PatchGAN width (CPU-sized)
    disc_layers: int = 3         # 'full': PatchGAN stride-2 layers (1 for 16 px images)
    seed: int = 0

    def __post_init__(self):
        for v in self.variants:
            q, _, loss = v.partition("-")
            if q not in ("residual", "independent") or loss not in ("full", "l2vq"):
                raise ValueError(f"tokenizer_ablation.variants: {v!r} is not <residual|independent>-<full|l2vq>")
        if self.max_steps < 1 or self.batch_size < 1:
            raise ValueError("tokenizer_ablation.max_steps and batch_size must be >= 1")


@dataclass(frozen=True)
class Table1Config:
    """params.yaml `table1`: which measured models appear (in this order); empty = every entry of `models`."""
    models: tuple[str, ...] = ()


@dataclass(frozen=True)
class TokenizerSection:
    model: VQVAEConfig = field(default_factory=VQVAEConfig)
    train: TokenizerTrainConfig = field(default_factory=TokenizerTrainConfig)
    pretrained: str = ""         # a released tokenizer checkpoint (e.g. vae_ch160v4096z32.pth): imported, not trained
    pretrained_sha256: str = ""  # optional: its full sha256; the digest imported is recorded in the metrics


@dataclass(frozen=True)
class ModelSection:
    model: VARConfig
    train: TrainConfig
    pretrained: str = ""         # a released VAR checkpoint (e.g. var_d16.pth): train_var imports it, no training
    pretrained_sha256: str = ""  # optional: its full sha256; the digest imported is recorded in the metrics


# --- issue 9: GPUs per job (Snakemake `resources: gpu`; more than one launches torchrun)
from pipeline.dag import MULTI_GPU_STAGES as DISTRIBUTED_STAGES
CPU_STAGES = ("data", "table1", "table2", "table3", "scaling")


@dataclass(frozen=True)
class ResourcesConfig:
    """params.yaml `resources`: GPUs of the jobs that can use several (one node each, torchrun). Not part of any
    stage's fingerprint: training resumes across GPU counts, and samples do not depend on it."""
    gpus: int = 1                                          # default of every distributed stage
    stage_gpus: dict[str, int] = field(default_factory=dict)   # per stage, e.g. {train_var: 8, sample: 4}

    def __post_init__(self):
        bad = sorted(set(self.stage_gpus) - set(DISTRIBUTED_STAGES))
        if bad:
            raise ValueError(f"resources.stage_gpus: {bad} are not multi-GPU stages ({', '.join(DISTRIBUTED_STAGES)})")
        if self.gpus < 1 or any(not isinstance(n, int) or n < 1 for n in self.stage_gpus.values()):
            raise ValueError("resources: GPU counts must be integers >= 1")

    def gpus_for(self, stage: str) -> int:
        """GPUs the stage's job asks for: the configured count for multi-GPU stages, none for the CPU-only ones
        (data indexing, table assembly), one for every other stage."""
        if stage in DISTRIBUTED_STAGES:
            return self.stage_gpus.get(stage, self.gpus)
        return 0 if stage in CPU_STAGES else 1
# ---


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
    # --- issue 7 (defaults: the sections are optional)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    zeroshot: ZeroShotConfig = field(default_factory=ZeroShotConfig)
    # ---
    # --- issue 6 (pipeline/rows.py; optional sections)
    settings: dict[str, Any] = field(default_factory=dict)     # name -> overlay (raw mapping)
    row_train: TrainConfig = field(default_factory=TrainConfig)
    rows: dict[str, RowConfig] = field(default_factory=dict)
    table2: RowTableConfig = field(default_factory=RowTableConfig)
    table3: RowTableConfig = field(default_factory=RowTableConfig)
    # ---
    # --- issue 5 (optional section)
    tokenizer_ablation: TokenizerAblationConfig = field(default_factory=TokenizerAblationConfig)
    # ---
    # --- issue 9 (optional section)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    # ---

    @property
    def table1_models(self) -> tuple[str, ...]:
        return self.table1.models or tuple(self.models)

    def model(self, name: str) -> ModelSection:
        if name not in self.models:
            raise ConfigError(f"unknown model {name!r}; models in params: {', '.join(self.models)}")
        return self.models[name]


SECTIONS = tuple(f.name for f in fields(Params))


def deep_merge(base: Any, over: Any) -> Any:
    """`over` on top of `base`: mappings merge key by key (recursively), anything else replaces."""
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        out = dict(base)
        for k, v in over.items():
            out[k] = deep_merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    with open(path) as f:
        raw = yaml.safe_load(f)
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(raw).__name__}")
    return dict(raw)


def load_raw(path: str | Path = "params.yaml", overrides: tuple[str | Path, ...] | list = ()) -> dict:
    raw = read_yaml(path)
    for o in overrides or ():
        raw = deep_merge(raw, read_yaml(o))
    return raw


def _section(raw: Mapping, key: str, where: str, valid: tuple[str, ...]) -> Mapping:
    val = raw.get(key, {})
    if val is None:
        return {}
    if not isinstance(val, Mapping):
        raise ConfigError(f"params section '{where}' must be a mapping, got {val!r}")
    unknown = sorted(set(val) - set(valid)) if valid else []
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(repr(f'{where}.{k}') for k in unknown)}; "
                          f"valid keys of '{where}': {', '.join(valid)}")
    return val


def _seeded(cls: type, mapping: Any, seed: int) -> Any:
    """Top-level `seed` is the default of every section's own `seed` (one knob reseeds the whole run)."""
    if isinstance(mapping, Mapping) and "seed" not in mapping and "seed" in {f.name for f in fields(cls)}:
        return {**mapping, "seed": seed}
    if mapping is None and "seed" in {f.name for f in fields(cls)}:
        return {"seed": seed}
    return mapping


def build_params(raw: Mapping) -> Params:
    """Validate a merged params mapping into `Params` (every section, every key)."""
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {', '.join(repr(k) for k in unknown)}; "
                          f"valid keys: {', '.join(SECTIONS)}")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed: expected an integer, got {seed!r}")
    data = build_config(DataConfig, _seeded(DataConfig, raw.get("data"), seed), "data")
    tok_raw = _section(raw, "tokenizer", "tokenizer", ("model", "train", "pretrained", "pretrained_sha256"))
    tokenizer = TokenizerSection(build_config(VQVAEConfig, tok_raw.get("model"), "tokenizer.model"),
                                 build_config(TokenizerTrainConfig, _seeded(TokenizerTrainConfig, tok_raw.get("train"), seed),
                                              "tokenizer.train"),
                                 _path_key(tok_raw, "tokenizer.pretrained"),
                                 _sha256_key(tok_raw, "tokenizer.pretrained_sha256"))
    if tokenizer.model.image_size != data.image_size:
        raise ConfigError(f"tokenizer.model gives {tokenizer.model.image_size} px images (patch_nums[-1]="
                          f"{tokenizer.model.patch_nums[-1]} x downsample {tokenizer.model.downsample}) but "
                          f"data.image_size is {data.image_size}")
    models_raw = _section(raw, "models", "models", ())
    if not models_raw:
        raise ConfigError("params section 'models' must name at least one model (e.g. 'var-d4: {model: "
                          "{depth: 4}, train: {...}}')")
    models = {}
    for name in models_raw:
        where = f"models.{name}"
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ConfigError(f"model name {name!r}: use letters, digits, '-' and '_' only (it becomes a path "
                              f"and a wildcard)")
        spec = _section(models_raw, name, where, ("model", "train", "pretrained", "pretrained_sha256"))
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
                                    build_config(TrainConfig, _seeded(TrainConfig, spec.get("train"), seed),
                                                 f"{where}.train"),
                                    _path_key(spec, f"{where}.pretrained"),
                                    _sha256_key(spec, f"{where}.pretrained_sha256"))
    table1 = build_config(Table1Config, raw.get("table1"), "table1")
    missing = [m for m in table1.models if m not in models]
    if missing:
        raise ConfigError(f"table1.models names {missing} not in 'models' ({', '.join(models)})")
    return Params(seed=seed, data=data, tokenizer=tokenizer, models=models,
                  sample=build_config(SampleConfig, _seeded(SampleConfig, raw.get("sample"), seed), "sample"),
                  evalnet=build_config(EvalNetConfig, _seeded(EvalNetConfig, raw.get("evalnet"), seed), "evalnet"),
                  score=build_config(ScoreConfig, raw.get("score"), "score"), table1=table1,
                  **_issue7_sections(raw, seed, models, table1), **_issue6_sections(raw, seed),
                  tokenizer_ablation=build_config(TokenizerAblationConfig, _seeded(  # issue 5
                      TokenizerAblationConfig, raw.get("tokenizer_ablation"), seed), "tokenizer_ablation"),
                  resources=build_config(ResourcesConfig, raw.get("resources"), "resources"))  # issue 9


def _path_key(section: Mapping, where: str) -> str:
    """An optional path (`pretrained`): a string, or empty/absent."""
    val = section.get(where.rsplit(".", 1)[1]) or ""
    if not isinstance(val, str):
        raise ConfigError(f"{where}: expected a path string, got {val!r}")
    return val


def _sha256_key(section: Mapping, where: str) -> str:
    """An optional pin of a third-party weights file: '' or its full sha256 (64 hex digits)."""
    try:
        return check_sha256(section.get(where.rsplit(".", 1)[1]) or "", where)
    except ValueError as e:
        raise ConfigError(str(e)) from None


# --- issue 7: `scaling` (depth sweep, Fig. 5-7) and `zeroshot` (Fig. 8) sections
def _issue7_sections(raw: Mapping, seed: int, models: dict, table1: Table1Config) -> dict:
    sc_raw = dict(_section(raw, "scaling", "scaling", ()) or {})
    if isinstance(sc_raw.get("train"), Mapping) or sc_raw.get("train") is None:
        sc_raw["train"] = _seeded(TrainConfig, sc_raw.get("train") or {}, sc_raw.get("seed", seed))
    scaling = build_config(ScalingConfig, _seeded(ScalingConfig, sc_raw, seed), "scaling")
    zeroshot = build_config(ZeroShotConfig, _seeded(ZeroShotConfig, raw.get("zeroshot"), seed), "zeroshot")
    if zeroshot.model and zeroshot.model not in (table1.models or tuple(models)):
        raise ConfigError(f"zeroshot.model {zeroshot.model!r} is not a table1 model "
                          f"({', '.join(table1.models or tuple(models))})")
    return {"scaling": scaling, "zeroshot": zeroshot}


# --- issue 6: rows of Tables 2/3 (pipeline/rows.py); each row is checked against its setting's tokenizer
_ROW_SECTIONS = ("rows", "table2", "table3")


def _issue6_sections(raw: Mapping, seed: int) -> dict:
    cache: dict[str, Params] = {}

    def setting_params(name: str) -> Params:
        if name not in cache:
            base = {k: v for k, v in raw.items() if k not in (*_ROW_SECTIONS, "settings")}
            try:
                cache[name] = build_params(deep_merge(base, raw["settings"][name]) if name else base)
            except ConfigError as e:
                raise ConfigError(f"setting {name!r}: {e}") from None
        return cache[name]
    return build_rows(raw, seed, setting_params)
# ---


def load_params(path: str | Path = "params.yaml", overrides: tuple[str | Path, ...] | list = (),
                setting: str = "", single_scale: bool = False) -> Params:
    """Load, merge and validate params; errors name the file or key. `setting`: a key of `settings`, whose
    overlay is merged over the result (the stages of Table 2's higher resolution); `single_scale`: the tokenizer
    keeps only its final scale (the AR baseline's tokenizer and tokens, issue 6)."""
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
           "load_params", "load_raw", "build_params", "params_to_dict", "select", "deep_merge", "ConfigError"]
