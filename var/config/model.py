"""Model configs: the multi-scale VQVAE tokenizer, the VAR transformer, the raster-scan AR baseline, and the named
presets of the released models. Torch-free (see var/config/loader.py)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .loader import Config, param


@dataclass(frozen=True)
class VQVAEConfig(Config):
    """Multi-scale residual VQ tokenizer (paper Sec. 3.2, Alg. 1-2) on a VQGAN-style encoder/decoder."""
    vocab_size: int = param(4096, ge=2)         # V: one codebook shared by all scales
    z_channels: int = param(32, ge=1)           # Cvae: latent/codebook width
    ch: int = param(160, ge=32)                 # base width of the encoder/decoder
    ch_mult: tuple[int, ...] = param((1, 1, 2, 2, 4), ge=1)  # per level; downsampling factor = 2**(len-1)
    num_res_blocks: int = param(2, ge=1)        # encoder blocks per level (the decoder uses one more, as VQGAN)
    using_sa: bool = True                       # self-attention at the lowest-resolution level
    using_mid_sa: bool = True                   # self-attention in the middle block
    dropout: float = param(0.0, ge=0, lt=1)
    patch_nums: tuple[int, ...] = param((1, 2, 3, 4, 5, 6, 8, 10, 13, 16), ge=1)  # token-map sides pn_1..pn_K
    quant_resi: float = param(0.5, ge=0, le=1)  # phi(h) = (1-r) h + r conv(h) (reference: 0.5)
    share_quant_resi: int = param(4, ge=0)      # number of shared phi convs (0 = one per scale)
    quant_conv_ks: int = param(3, ge=1)         # kernel of quant_conv / post_quant_conv (odd)
    beta: float = param(0.25, ge=0)             # commitment weight in the VQ loss (paper eq. 5)

    def __post_init__(self):
        super().__post_init__()
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
class VARConfig(Config):
    """The VAR transformer (paper Sec. 3.3 / eq. 7): width 64*depth, depth heads, drop-path 0.1*depth/24."""
    depth: int = param(16, ge=1)
    num_classes: int = param(1000, ge=1)
    vocab_size: int = param(4096, ge=2)
    z_channels: int = param(32, ge=1)           # Cvae: input width of word_embed (= tokenizer's)
    patch_nums: tuple[int, ...] = param((1, 2, 3, 4, 5, 6, 8, 10, 13, 16), ge=1)
    width_per_depth: int = param(64, ge=1)      # eq. (7): w = 64 d
    head_dim_override: int = param(0, ge=0)     # 0: heads = depth (eq. 7); >0: heads = width // this
    embed_dim_override: int = param(0, ge=0)    # 0: 64*depth; >0: explicit width (fixtures, tiny models)
    num_heads_override: int = param(0, ge=0)
    mlp_ratio: float = param(4.0, gt=0)
    drop_rate: float = param(0.0, ge=0, lt=1)
    attn_drop_rate: float = param(0.0, ge=0, lt=1)
    drop_path_rate_override: float = param(-1.0, ge=0, lt=1, special=(-1.0,))   # -1: eq. (7) 0.1*depth/24
    norm_eps: float = param(1e-6, gt=0)
    adaln: bool = True                          # ablation (Table 3): off = plain LayerNorm, class only as start token
    shared_aln: bool = False                    # one AdaLN projection for all blocks (the 512 px d36-s model)
    attn_l2_norm: bool = True                   # q/k L2-normalised with a learnable clamped per-head scale
    plain_attn_scale: float = param(1.0, gt=0)  # without L2 norm: softmax scale = this / sqrt(head_dim)
                                                # (1.0 = ordinary attention; the reference code uses 0.25)
    cond_drop_rate: float = param(0.1, ge=0, le=1)   # label dropout for classifier-free guidance (training only)

    def __post_init__(self):
        super().__post_init__()
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


@dataclass(frozen=True)
class ARConfig(Config):
    """GPT-2-style AR transformer over single-scale raster-scan tokens (the paper's Table 3 row 1). Field names match
    VARConfig where they mean the same thing (the blocks read them), and the defaults are the paper's row 1 (GPT-2:
    no AdaLN, ordinary attention)."""
    depth: int = param(16, ge=1)
    num_classes: int = param(1000, ge=1)
    vocab_size: int = param(4096, ge=2)
    patch_nums: tuple[int, ...] = param((16,), ge=1)  # exactly one scale: the tokenizer's final pn_K x pn_K map
    width_per_depth: int = param(64, ge=1)      # width 64 * depth, as VAR (eq. 7), unless embed_dim_override
    embed_dim_override: int = param(0, ge=0)
    num_heads_override: int = param(0, ge=0)    # 0: heads = depth
    mlp_ratio: float = param(4.0, gt=0)
    drop_rate: float = param(0.0, ge=0, lt=1)
    attn_drop_rate: float = param(0.0, ge=0, lt=1)
    drop_path_rate_override: float = param(-1.0, ge=0, lt=1, special=(-1.0,))   # -1: 0.1 * depth / 24, as VAR
    norm_eps: float = param(1e-6, gt=0)
    adaln: bool = False                         # GPT-2 row: plain LayerNorm; True: class AdaLN as VAR
    shared_aln: bool = False                    # one AdaLN projection for all blocks (with adaln)
    attn_l2_norm: bool = False                  # GPT-2 row: ordinary attention
    plain_attn_scale: float = param(1.0, gt=0)  # softmax scale = this / sqrt(head_dim) without L2 norm
    cond_drop_rate: float = param(0.1, ge=0, le=1)   # label dropout, so CFG is available at sampling time

    def __post_init__(self):
        super().__post_init__()
        if len(self.patch_nums) != 1:
            raise ValueError(f"ARConfig.patch_nums must hold one scale (the raster-scan token map), got "
                             f"{self.patch_nums}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

    @property
    def embed_dim(self) -> int:
        return self.embed_dim_override or self.width_per_depth * self.depth

    @property
    def num_heads(self) -> int:
        return self.num_heads_override or self.depth

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def drop_path_rate(self) -> float:
        return self.drop_path_rate_override if self.drop_path_rate_override >= 0 else 0.1 * self.depth / 24

    @property
    def seq_len(self) -> int:
        return self.patch_nums[0] ** 2


def single_scale(vq_cfg: VQVAEConfig) -> VQVAEConfig:
    """The VQGAN-style tokenizer config of the AR baseline: the same VQVAE quantising only the final scale."""
    return dataclasses.replace(vq_cfg, patch_nums=(vq_cfg.patch_nums[-1],))


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
