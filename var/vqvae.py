"""VQGAN-style encoder/decoder around the multi-scale quantiser: the VAR tokenizer.

The same class builds a tiny CPU tokenizer and the released ch=160 one (`vae_ch160v4096z32.pth`): module
names follow the released checkpoint so it loads strictly. Images in [-1, 1], (B, 3, H, W).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import VQVAEConfig
from .quant import MultiScaleQuantizer


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm (same parameters, same checkpoint keys) with a second way to compute it, for fast paths.

    `channel_stats` (off by default; var/engine.py sets it on its low-precision copy): the statistics are reduced
    per channel over the spatial dims first (mean and variance in one float32 pass) and then combined per group,
    and the normalisation is one per-channel scale and shift. The same function to rounding. Why: under
    torch.compile the decoder runs channels-last, where a group's 5 channels (ch 160, 32 groups) are 10-byte pieces
    strided by the row, and Inductor's fused group-norm reduction reads them so; per-channel reductions read whole
    rows of channels.
    """

    channel_stats = False

    def forward(self, x):
        if not self.channel_stats:
            return super().forward(x)
        N, C, G = x.shape[0], x.shape[1], self.num_groups
        per_group, dims = C // G, tuple(range(2, x.ndim))
        shape = (N, C) + (1,) * (x.ndim - 2)
        xf = x.float()
        # one pass (Welford per channel), then the law of total variance over a group's equally sized channels:
        # var_g = mean_c(var_c) + mean_c((mean_c - mean_g)^2), exact, without the cancellation of E[x^2] - E[x]^2
        var_NC, mean_NC = torch.var_mean(xf, dim=dims, correction=0)
        mean_NGc, var_NGc = mean_NC.view(N, G, per_group), var_NC.view(N, G, per_group)
        mean_NG = mean_NGc.mean(dim=2)
        var_NG = var_NGc.mean(dim=2) + (mean_NGc - mean_NG.unsqueeze(2)).square().mean(dim=2)
        group_mean_NC = mean_NG.repeat_interleave(per_group, dim=1)
        scale_NC = torch.rsqrt(var_NG + self.eps).repeat_interleave(per_group, dim=1)
        if self.affine:
            scale_NC = scale_NC * self.weight
            shift_NC = self.bias - group_mean_NC * scale_NC
        else:
            shift_NC = -group_mean_NC * scale_NC
        return (xf * scale_NC.view(shape) + shift_NC.view(shape)).to(x.dtype)


def Normalize(channels: int) -> GroupNorm:
    return GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def set_channel_stats(module: nn.Module, on: bool = True) -> nn.Module:
    """Switch every GroupNorm of `module` to (or back from) the per-channel statistics (GroupNorm.channel_stats)."""
    for m in module.modules():
        if isinstance(m, GroupNorm):
            m.channel_stats = on
    return module


class Upsample2x(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, kernel_size=3, stride=1, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Downsample2x(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, kernel_size=3, stride=2, padding=0)

    def forward(self, x):
        # Asymmetric right/bottom padding, as VQGAN: keeps the 3x3/stride-2 grid aligned with the top-left pixel.
        return self.conv(F.pad(x, pad=(0, 1, 0, 1), mode="constant", value=0))


class ResnetBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, dropout: float):
        super().__init__()
        self.norm1 = Normalize(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=1, padding=1)
        self.norm2 = Normalize(out_ch)
        self.dropout = nn.Dropout(dropout) if dropout > 1e-6 else nn.Identity()
        self.conv2 = nn.Conv2d(out_ch, out_ch, kernel_size=3, stride=1, padding=1)
        self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a fused 1x1 qkv projection ([q | k | v] channels)."""

    def __init__(self, ch: int):
        super().__init__()
        self.C = ch
        self.norm = Normalize(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, kernel_size=1)
        self.proj_out = nn.Conv2d(ch, ch, kernel_size=1)

    def forward(self, x):
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).unbind(1)     # each (B, C, HW)
        w_BNN = torch.bmm(q.transpose(1, 2), k).mul_(C ** -0.5).softmax(dim=2)  # (B, HW_q, HW_k)
        h = torch.bmm(v, w_BNN.transpose(1, 2)).reshape(B, C, H, W)
        return x + self.proj_out(h)


class _Level(nn.Module):
    """One resolution level; attribute names (block/attn/downsample/upsample) match the released keys."""


class Encoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        ch, mult, nb = cfg.ch, cfg.ch_mult, cfg.num_res_blocks
        self.conv_in = nn.Conv2d(3, ch, kernel_size=3, stride=1, padding=1)
        in_mult = (1,) + tuple(mult)
        self.down = nn.ModuleList()
        for i, m in enumerate(mult):
            level = _Level()
            block_in, block_out = ch * in_mult[i], ch * m
            level.block = nn.ModuleList()
            level.attn = nn.ModuleList()
            for _ in range(nb):
                level.block.append(ResnetBlock(block_in, block_out, cfg.dropout))
                block_in = block_out
                if i == len(mult) - 1 and cfg.using_sa:
                    level.attn.append(AttnBlock(block_in))
            if i != len(mult) - 1:
                level.downsample = Downsample2x(block_in)
            self.down.append(level)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, cfg.dropout)
        self.mid.attn_1 = AttnBlock(block_in) if cfg.using_mid_sa else nn.Identity()
        self.mid.block_2 = ResnetBlock(block_in, block_in, cfg.dropout)
        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.z_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x_B3HW):
        h = self.conv_in(x_B3HW)
        for i, level in enumerate(self.down):
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        ch, mult, nb = cfg.ch, cfg.ch_mult, cfg.num_res_blocks
        block_in = ch * mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, kernel_size=3, stride=1, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, cfg.dropout)
        self.mid.attn_1 = AttnBlock(block_in) if cfg.using_mid_sa else nn.Identity()
        self.mid.block_2 = ResnetBlock(block_in, block_in, cfg.dropout)
        levels = [None] * len(mult)
        for i in reversed(range(len(mult))):   # built coarse to fine, stored by level index as VQGAN
            level = _Level()
            level.block = nn.ModuleList()
            level.attn = nn.ModuleList()
            block_out = ch * mult[i]
            for _ in range(nb + 1):
                level.block.append(ResnetBlock(block_in, block_out, cfg.dropout))
                block_in = block_out
                if i == len(mult) - 1 and cfg.using_sa:
                    level.attn.append(AttnBlock(block_in))
            if i != 0:
                level.upsample = Upsample2x(block_in)
            levels[i] = level
        self.up = nn.ModuleList(levels)
        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, 3, kernel_size=3, stride=1, padding=1)

    def forward(self, z_BChw):
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z_BChw))))
        for i in reversed(range(len(self.up))):
            level = self.up[i]
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VQVAE(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = MultiScaleQuantizer(cfg)
        ks = cfg.quant_conv_ks
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, ks, stride=1, padding=ks // 2)
        self.post_quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, ks, stride=1, padding=ks // 2)

    @property
    def patch_nums(self) -> tuple[int, ...]:
        return tuple(self.cfg.patch_nums)

    def encode_features(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> f (B, Cvae, pn_K, pn_K)."""
        return self.quant_conv(self.encoder(img_B3HW))

    def fhat_to_img(self, f_hat: torch.Tensor) -> torch.Tensor:
        """f_hat (B, Cvae, pn_K, pn_K) -> images clamped to [-1, 1]."""
        return self.decoder(self.post_quant_conv(f_hat)).clamp(-1, 1)

    @torch.no_grad()
    def img_to_idx(self, img_B3HW: torch.Tensor) -> list[torch.Tensor]:
        """Images in [-1, 1] -> token maps, coarsest first, each int64 (B, pn*pn) in raster order."""
        return self.quantize.f_to_idx(self.encode_features(img_B3HW))

    def idx_to_img(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        return self.fhat_to_img(self.quantize.idx_to_fhat(idx_list))

    def idx_to_img_per_scale(self, idx_list: list[torch.Tensor]) -> list[torch.Tensor]:
        """Cumulative reconstructions: from scale 1 only, scales 1-2, ..., all scales."""
        return [self.fhat_to_img(f) for f in self.quantize.idx_to_fhat(idx_list, cumulative=True)]

    def idx_to_var_input(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        return self.quantize.idx_to_var_input(idx_list)

    def split_idx(self, idx_BL: torch.Tensor) -> list[torch.Tensor]:
        """Concatenated tokens (B, L) -> list of per-scale maps."""
        return list(torch.split(idx_BL, [pn * pn for pn in self.patch_nums], dim=1))

    def forward(self, img_B3HW: torch.Tensor):
        """Training forward: (reconstruction (unclamped), vq_loss, codebook usage % per scale)."""
        f_hat, vq_loss, usage = self.quantize(self.encode_features(img_B3HW))
        return self.decoder(self.post_quant_conv(f_hat)), vq_loss, usage
