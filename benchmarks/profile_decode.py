"""Kernel-time breakdown of the bf16 channels-last VQVAE decode (where the time goes), printed as a table."""
from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

from common import sync
from var.config import VQVAE_PRESETS
from var.vqvae import VQVAE

if __name__ == "__main__":
    torch.backends.cudnn.benchmark = True
    with torch.device("cuda"):
        vq = VQVAE(VQVAE_PRESETS["vqvae-ch160v4096z32"]).eval().to(torch.bfloat16, memory_format=torch.channels_last)
    f = torch.randn(64, 32, 16, 16, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        for _ in range(3):
            vq.fhat_to_img(f)
        sync()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            vq.fhat_to_img(f)
            sync()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18))
