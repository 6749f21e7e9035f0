"""Where generation time goes: kernel table for one VAR-d16 generate (engine, bf16, CUDA graphs) and decode
variants (memory format / GroupNorm implementation). Exploratory; prints only."""
from __future__ import annotations

import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from common import sync, time_median
from var.config import VAR_PRESETS, VQVAE_PRESETS
from var.engine import GenerationEngine
from var.transformer import VAR
from var.vqvae import VQVAE


class GroupNormNHWC(nn.Module):
    def __init__(self, gn: nn.GroupNorm):
        super().__init__()
        self.gn = gn

    def forward(self, x):
        B, C, H, W = x.shape
        G = self.gn.num_groups
        xg = x.permute(0, 2, 3, 1).reshape(B, H * W, G, C // G)
        var, mean = torch.var_mean(xg, dim=(1, 3), keepdim=True, correction=0)
        y = (xg - mean) * torch.rsqrt(var.float() + self.gn.eps).to(x.dtype)
        y = y.reshape(B, H, W, C) * self.gn.weight + self.gn.bias
        return y.permute(0, 3, 1, 2)


def swap_gn(m: nn.Module):
    for name, child in m.named_children():
        if isinstance(child, nn.GroupNorm):
            setattr(m, name, GroupNormNHWC(child))
        else:
            swap_gn(child)
    return m


if __name__ == "__main__":
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    with torch.device("cuda"):
        vq = VQVAE(VQVAE_PRESETS["vqvae-ch160v4096z32"]).eval()
        var = VAR(VAR_PRESETS["var-d16"]).eval()
    f = torch.randn(64, 32, 16, 16, device="cuda")
    with torch.no_grad():
        for name, fmt, gn in (("bf16 channels_last", torch.channels_last, False),
                              ("bf16 contiguous", torch.contiguous_format, False),
                              ("bf16 channels_last + nhwc GN", torch.channels_last, True)):
            m = VQVAE(VQVAE_PRESETS["vqvae-ch160v4096z32"]).cuda().eval().to(torch.bfloat16, memory_format=fmt)
            if gn:
                swap_gn(m)
            z = f.to(torch.bfloat16).contiguous(memory_format=fmt)
            ref = m.fhat_to_img(z)
            t, _ = time_median(lambda: m.fhat_to_img(z), runs=3, warmup=2)
            print(f"decode {name}: {64 / t:.1f} img/s")
            del m
    eng = GenerationEngine(var, vq, dtype=torch.bfloat16)
    for B in (64, 256):
        labels = torch.arange(B, device="cuda")
        g = torch.Generator(device="cuda")
        eng.generate(B, labels, generator=g.manual_seed(0), cfg=1.5, top_k=900, top_p=0.96)
        sync()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            eng.generate(B, labels, generator=g.manual_seed(0), cfg=1.5, top_k=900, top_p=0.96)
            sync()
        print(f"=== generate d16 B={B}")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=22, max_name_column_width=70))
    sys.stdout.flush()
