"""Rows of Tables 2 and 3 as data: params.yaml `rows.<name>` is one full recipe (model kind and switches, sampler,
resolution setting, training), and `table2.rows` / `table3.rows` list which rows each table shows, in order.
A row's `sampler` is the one sampler schema (var.config.SamplerConfig): any variant -- constant CFG, no CFG, top-k /
top-p off, rejection sampling -- is a row that reuses a trained model (`model_from`) with other sampler keys.

Adding a row is a params change: the DAG (pipeline/plan.py) gets `train_row` / `sample_row` / `score_row` jobs for
every row of a table, writing `runs/<run>/rows/<name>/{model.pt,metrics.json,samples.npz,sample_metrics.json,
scores.json}`. The row's tokenizer is decided by its kind and setting (`row_source`): VAR rows read the
multi-scale tokens of their setting, AR rows the single-scale (VQGAN-style) tokens of `tokenizer_ar`.

`settings.<name>` is an overlay merged over the params (only the sections in SETTING_SECTIONS), with its own data,
tokenizer, tokens and evalnet stages: `hires` is Table 2's doubled resolution.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

from eval.paper import TABLE3_BY_KEY
from pipeline.yamlio import deep_merge, section, seeded
from var.config import (
    ARConfig,
    Config,
    ConfigError,
    SamplerConfig,
    TrainConfig,
    VARConfig,
    VQVAEConfig,
    build_config,
    param,
    single_scale,
)

ROW_KINDS = ("var", "ar")
SETTING_SECTIONS = ("data", "tokenizer", "evalnet", "sample", "score")
NAME_RE = r"[A-Za-z0-9_-]+"

# The rows of the paper's Table 3 a row can be put beside (eval/paper.py holds their reported values).
PAPER_ROWS = tuple(TABLE3_BY_KEY)


@dataclass(frozen=True)
class RowConfig(Config):
    """params.yaml `rows.<name>`: one row of Table 2 or 3 (paper Sec. 4.4 / Table 3), a full recipe."""
    kind: str = "var"            # var: next-scale prediction | ar: raster-scan next-token (GPT-2 style, row 1)
    description: str = ""        # the table's description column ("+AdaLN", ...)
    paper: str = ""              # which reported row of the paper's Table 3 this mirrors (PAPER_ROWS); '' = none
    depth: int = param(4, ge=1)
    width: int = param(0, ge=0)  # 0: 64 * depth (eq. 7)
    heads: int = param(0, ge=0)  # 0: = depth (eq. 7); width must be a multiple of the heads
    adaln: bool = True           # per-block class AdaLN; off: plain LayerNorm, class only as the start token
    shared_aln: bool = False     # one shared AdaLN projection for all blocks (the 512 px var-d36-s model)
    attn_l2_norm: bool = True    # q/k L2 normalisation with a learnable scale; off: ordinary attention
    # how the row samples (var/config/sampling.py): cfg (0 = off), cfg_schedule, top_k / top_p (0 = off),
    # more_smooth (VAR only) and rejection (a "-re" row, labelled as such in every table)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    cond_drop_rate: float = param(0.1, ge=0, le=1)   # label dropout in training (what makes CFG possible)
    setting: str = ""            # '' = the base params; else a key of `settings` (e.g. 'hires' for Table 2)
    model_from: str = ""         # reuse the trained model of this row or table1 model (its recipe must be equal;
                                 # rows that differ only in the sampler, as the paper's rows 3-5, train once)
    train: TrainConfig = field(default_factory=TrainConfig)   # `row_train` with the row's own `train` keys over it

    def __post_init__(self):
        super().__post_init__()
        if self.kind not in ROW_KINDS:
            raise ValueError(f"kind must be one of {ROW_KINDS}, got {self.kind!r}")
        if self.paper and self.paper not in PAPER_ROWS:
            raise ValueError(f"paper must be '' or one of {PAPER_ROWS}, got {self.paper!r}")
        heads = self.heads or self.depth
        if self.width and self.width % heads:
            raise ValueError(f"depth must be >= 1, heads >= 0 and width 0 or a multiple of the heads (heads 0 = "
                             f"depth), got depth {self.depth}, heads {self.heads}, width {self.width}")
        if self.shared_aln and not self.adaln:
            raise ValueError("shared_aln needs adaln")
        if self.kind == "ar" and self.sampler.more_smooth:
            raise ValueError("sampler.more_smooth is a VAR sampler option (soft token maps); AR rows draw hard tokens")
        if self.kind == "ar" and self.setting:
            raise ValueError("AR rows exist only at the base setting (there is one single-scale tokenizer stage, "
                             "tokenizer_ar)")


@dataclass(frozen=True)
class RowTableConfig(Config):
    """params.yaml `table2` / `table3`: the rows shown, in order; Table 3's Δ and cost are relative to its first."""
    rows: tuple[str, ...] = ()


def row_tokenizer_config(row: RowConfig, vq_cfg: VQVAEConfig) -> VQVAEConfig:
    """The tokenizer a row reads: its setting's multi-scale VQVAE, or its single-scale version for AR rows (a
    VQGAN-style tokenizer trained by the same trainer; the paper's row 1 uses a VQGAN tokenizer)."""
    return single_scale(vq_cfg) if row.kind == "ar" else vq_cfg


def row_model_config(row: RowConfig, vq_cfg: VQVAEConfig, num_classes: int) -> VARConfig | ARConfig:
    """The transformer config of a row; vocabulary and token maps come from the row's tokenizer config."""
    tok = row_tokenizer_config(row, vq_cfg)
    common = dict(depth=row.depth, num_classes=num_classes, vocab_size=tok.vocab_size, patch_nums=tok.patch_nums,
                  embed_dim_override=row.width, num_heads_override=row.heads, adaln=row.adaln,
                  shared_aln=row.shared_aln, attn_l2_norm=row.attn_l2_norm, cond_drop_rate=row.cond_drop_rate)
    if row.kind == "ar":
        return ARConfig(**common)
    return VARConfig(z_channels=tok.z_channels, **common)


def row_source(row: RowConfig) -> dict[str, str]:
    """Stage-name suffixes of a row's inputs: `res` picks the setting's data / evalnet, `tok` its tokenizer."""
    res = f"_{row.setting}" if row.setting else ""
    return {"res": res, "tok": res + ("_ar" if row.kind == "ar" else "")}


def build_rows(raw: Mapping, seed: int, setting_params) -> dict:
    """Validate `settings`, `row_train`, `rows`, `table2`, `table3`; `setting_params(name)` -> that setting's
    Params (for the tokenizer and class count each row is checked against)."""
    settings = dict(section(raw, "settings", "settings", ()) or {})
    for name, overlay in settings.items():
        if not isinstance(name, str) or not re.fullmatch(NAME_RE, name):
            raise ConfigError(f"setting name {name!r}: use letters, digits, '-' and '_' only")
        section(settings, name, f"settings.{name}", SETTING_SECTIONS)
        setting_params(name)                    # every setting must give valid params, used or not
    row_train_raw = dict(raw.get("row_train") or {})
    row_train = build_config(TrainConfig, seeded(TrainConfig, row_train_raw, seed), "row_train")
    rows = {}
    for name, spec in (section(raw, "rows", "rows", ()) or {}).items():
        where = f"rows.{name}"
        if not isinstance(name, str) or not re.fullmatch(NAME_RE, name):
            raise ConfigError(f"row name {name!r}: use letters, digits, '-' and '_' only (it becomes a path)")
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{where} must be a mapping (kind, depth, adaln, top_k, cfg, ...), got {spec!r}")
        spec = dict(spec)
        spec["train"] = seeded(TrainConfig, deep_merge(row_train_raw, dict(spec.get("train") or {})), seed)
        row = build_config(RowConfig, spec, where)
        if row.setting and row.setting not in settings:
            raise ConfigError(f"{where}.setting {row.setting!r} is not a key of 'settings' "
                              f"({', '.join(settings) or 'none defined'})")
        sp = setting_params(row.setting)
        try:
            row_model_config(row, sp.tokenizer.model, sp.data.num_classes)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
        rows[name] = row
    for name, row in rows.items():
        if row.model_from:
            check_model_from(name, row, rows, setting_params(""))
    tables = {}
    for t in ("table2", "table3"):
        tables[t] = build_config(RowTableConfig, raw.get(t), t)
        missing = [r for r in tables[t].rows if r not in rows]
        if missing:
            raise ConfigError(f"{t}.rows names {missing} not in 'rows' ({', '.join(rows) or 'none'})")
    return {"settings": settings, "row_train": row_train, "rows": rows, **tables}


MODEL_KEYS = ("kind", "depth", "width", "heads", "adaln", "shared_aln", "attn_l2_norm", "cond_drop_rate", "setting",
              "train")


def check_model_from(name: str, row: RowConfig, rows: Mapping[str, RowConfig], base) -> None:
    """`rows.<name>.model_from` names a row that trains (or a table1 model) with exactly this row's recipe."""
    src = row.model_from
    if src in rows and src in base.models:
        raise ConfigError(f"rows.{name}.model_from {src!r} names both a row and a model; rename one")
    if src in rows:
        other = rows[src]
        if other.model_from:
            raise ConfigError(f"rows.{name}.model_from {src!r}: that row reuses a model itself; name "
                              f"{other.model_from!r}")
        diff = [k for k in MODEL_KEYS if getattr(row, k) != getattr(other, k)]
    elif src in base.table1_models:
        if row.kind != "var" or row.setting:
            raise ConfigError(f"rows.{name}.model_from {src!r}: a table1 model is a base-setting VAR")
        spec = base.models[src]
        mine = row_model_config(row, base.tokenizer.model, base.data.num_classes)
        diff = [f"model.{f}" for f in mine.__dataclass_fields__ if getattr(mine, f) != getattr(spec.model, f)]
        diff += ["train"] if row.train != spec.train else []
    else:
        raise ConfigError(f"rows.{name}.model_from {src!r} is neither a row nor a table1 model")
    if diff:
        raise ConfigError(f"rows.{name}.model_from {src!r}: recipes differ in {', '.join(diff)} (a row that "
                          f"reuses a model must have the same model and train keys)")


def model_owner(p, name: str) -> tuple[str, str]:
    """('row', row) or ('model', table1 model): whose trained checkpoint row `name` samples from."""
    src = p.rows[name].model_from
    if not src:
        return "row", name
    return ("row", src) if src in p.rows else ("model", src)


def setting_overlay(raw: Mapping, name: str) -> dict:
    """The params mapping of setting `name`: `settings.<name>` merged over the rest."""
    if not name:
        return dict(raw)
    settings = raw.get("settings") or {}
    if name not in settings:
        raise ConfigError(f"unknown setting {name!r}; settings in params: {', '.join(settings) or 'none'}")
    return deep_merge(dict(raw), settings[name])


def table_rows(p) -> tuple[str, ...]:
    """Every row some table shows (Table 3's first, then Table 2's), each once: the rows the DAG builds."""
    return tuple(dict.fromkeys((*p.table3.rows, *p.table2.rows)))


__all__ = ["RowConfig", "RowTableConfig", "ROW_KINDS", "PAPER_ROWS", "SETTING_SECTIONS", "build_rows",
           "row_model_config", "row_tokenizer_config", "row_source", "setting_overlay", "table_rows", "model_owner"]
