"""Configuration dataclasses for the model core, the named presets, and the one strict loader.

Every component's hyperparameters live in one frozen dataclass built from its `params.yaml` section by
`build_config`, which rejects unknown keys and names them (a misspelled key must never be silently ignored).
Derived sizes are properties, so they cannot be set inconsistently.
"""
from __future__ import annotations

import dataclasses
import math
import typing

import numpy as np
from dataclasses import dataclass, field
from typing import Any, Mapping


class ConfigError(ValueError):
    """A params section has an unknown, missing or ill-typed key."""


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if origin is tuple:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return build_config(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def build_config(cls: type, mapping: Mapping[str, Any] | None, section: str):
    """Build the frozen dataclass `cls` from `mapping` (one params.yaml section).

    Unknown keys raise ConfigError naming the key, the section and the valid keys; values are type-checked
    against the dataclass annotations. Missing keys take the dataclass default.
    """
    if mapping is None:
        mapping = {}
    if dataclasses.is_dataclass(mapping):
        return mapping
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"params section '{section}' must be a mapping, got {type(mapping).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(repr(f'{section}.{k}') for k in unknown)}; "
            f"valid keys of '{section}': {', '.join(sorted(fields))}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{section}.{k}") for k, v in mapping.items()}
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"missing key(s) {', '.join(repr(f'{section}.{k}') for k in missing)}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"params section '{section}': {e}") from e


def config_to_dict(cfg) -> dict:
    """A plain, YAML/JSON/torch.save-safe dict (tuples become lists)."""
    def plain(v):
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}


# --------------------------------------------------------------------------------------------- model configs
@dataclass(frozen=True)
class VQVAEConfig:
    """Multi-scale residual VQ tokenizer (paper Sec. 3.2, Alg. 1-2) on a VQGAN-style encoder/decoder."""
    vocab_size: int = 4096                      # V: one codebook shared by all scales
    z_channels: int = 32                        # Cvae: latent/codebook width
    ch: int = 160                               # base width of the encoder/decoder
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # per level; downsampling factor = 2**(len-1)
    num_res_blocks: int = 2                     # encoder blocks per level (the decoder uses one more, as VQGAN)
    using_sa: bool = True                       # self-attention at the lowest-resolution level
    using_mid_sa: bool = True                   # self-attention in the middle block
    dropout: float = 0.0
    patch_nums: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)  # token-map sides pn_1..pn_K
    quant_resi: float = 0.5                     # phi(h) = (1-r) h + r conv(h) (reference: 0.5)
    share_quant_resi: int = 4                   # number of shared phi convs (0 = one per scale)
    quant_conv_ks: int = 3                      # kernel of quant_conv / post_quant_conv
    beta: float = 0.25                          # commitment weight in the VQ loss (paper eq. 5)

    def __post_init__(self):
        if list(self.patch_nums) != sorted(set(self.patch_nums)) or self.patch_nums[0] < 1:
            raise ValueError(f"patch_nums must be strictly increasing positive ints, got {self.patch_nums}")
        if self.ch % 32:
            raise ValueError(f"ch must be a multiple of 32 (GroupNorm with 32 groups), got {self.ch}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def image_size(self) -> int:
        return self.patch_nums[-1] * self.downsample

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    @property
    def seq_len(self) -> int:
        return sum(pn * pn for pn in self.patch_nums)

    @property
    def phi_index_per_scale(self) -> tuple[int, ...]:
        """Which shared phi conv each scale uses: argmin_j |tick_j - s/(K-1)| (float64; first index wins)."""
        K = self.num_scales
        if self.share_quant_resi == 0:
            return tuple(range(K))
        n = self.share_quant_resi
        # float64 linspace(1/(3n), 1 - 1/(3n), n), as the reference; exact ties resolve to the first index.
        ticks = np.linspace(1 / 3 / n, 1 - 1 / 3 / n, n) if n > 1 else np.array([0.5])
        out = []
        for s in range(K):
            r = s / (K - 1) if K > 1 else 0.0
            out.append(int(np.argmin(np.abs(ticks - r))))
        return tuple(out)

    @property
    def num_phi(self) -> int:
        return self.share_quant_resi if self.share_quant_resi > 0 else self.num_scales


@dataclass(frozen=True)
class VARConfig:
    """The VAR transformer (paper Sec. 3.3 / eq. 7): width 64*depth, depth heads, drop-path 0.1*depth/24."""
    depth: int = 16
    num_classes: int = 1000
    vocab_size: int = 4096
    z_channels: int = 32                        # Cvae: input width of word_embed (= tokenizer's)
    patch_nums: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    width_per_depth: int = 64                   # eq. (7): w = 64 d
    head_dim_override: int = 0                  # 0: heads = depth (eq. 7); >0: heads = width // this
    embed_dim_override: int = 0                 # 0: 64*depth; >0: explicit width (fixtures, tiny models)
    num_heads_override: int = 0
    mlp_ratio: float = 4.0
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate_override: float = -1.0       # <0: eq. (7) 0.1*depth/24
    norm_eps: float = 1e-6
    adaln: bool = True                          # ablation (Table 3): off = plain LayerNorm, class only as start token
    shared_aln: bool = False                    # one AdaLN projection for all blocks (the 512 px d36-s model)
    attn_l2_norm: bool = True                   # q/k L2-normalised with a learnable clamped per-head scale
    plain_attn_scale: float = 1.0               # without L2 norm: softmax scale = this / sqrt(head_dim)
                                                # (1.0 = ordinary attention; the reference code uses 0.25)
    cond_drop_rate: float = 0.1                 # label dropout for classifier-free guidance (training only)

    def __post_init__(self):
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

    @property
    def embed_dim(self) -> int:
        return self.embed_dim_override or self.width_per_depth * self.depth

    @property
    def num_heads(self) -> int:
        if self.num_heads_override:
            return self.num_heads_override
        if self.head_dim_override:
            return self.embed_dim // self.head_dim_override
        return self.depth

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def drop_path_rate(self) -> float:
        return self.drop_path_rate_override if self.drop_path_rate_override >= 0 else 0.1 * self.depth / 24

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    @property
    def seq_len(self) -> int:
        return sum(pn * pn for pn in self.patch_nums)

    @property
    def begin_ends(self) -> tuple[tuple[int, int], ...]:
        out, cur = [], 0
        for pn in self.patch_nums:
            out.append((cur, cur + pn * pn))
            cur += pn * pn
        return tuple(out)


PATCH_NUMS_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
PATCH_NUMS_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)

# Named presets of the released models (README of the reference release; manifests in shared/fixtures).
VQVAE_PRESETS: dict[str, VQVAEConfig] = {
    "vqvae-ch160v4096z32": VQVAEConfig(),
    "vqvae-ch160v4096z32-512": VQVAEConfig(patch_nums=PATCH_NUMS_512),
}
VAR_PRESETS: dict[str, VARConfig] = {
    "var-d16": VARConfig(depth=16),
    "var-d20": VARConfig(depth=20),
    "var-d24": VARConfig(depth=24),
    "var-d30": VARConfig(depth=30),
    "var-d36-s": VARConfig(depth=36, shared_aln=True, patch_nums=PATCH_NUMS_512),
}
