"""Pure reconstruction metrics on image tensors: PSNR and SSIM (Wang et al. 2004), and rFID from features.

Images are float tensors (B, C, H, W) in [0, data_range] (the tokenizer's [-1, 1] output maps to [0, 1] by
(x + 1) / 2). Each function returns one value per image, so callers can average over any number of batches.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from eval.metrics import feature_stats, frechet_distance

SSIM_WINDOW = 11        # Wang et al. 2004: 11x11 circular-symmetric Gaussian window, sigma 1.5
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def psnr(x_BCHW: torch.Tensor, y_BCHW: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """10 log10(range^2 / MSE) per image, (B,) float64; identical images give +inf clamped to MSE 1e-10."""
    mse_B = (x_BCHW.double() - y_BCHW.double()).square().flatten(1).mean(1)
    return 10 * torch.log10(data_range ** 2 / mse_B.clamp_min(1e-10))


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Normalised 1-D Gaussian (size,) float64; the 2-D window is its outer product (separable)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * sigma ** 2))
    return g / g.sum()


def ssim(x_BCHW: torch.Tensor, y_BCHW: torch.Tensor, data_range: float = 1.0, window: int = SSIM_WINDOW,
         sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Mean SSIM per image, (B,) float64: local statistics under the Gaussian window over 'valid' positions
    (no padding, as the reference MATLAB `ssim_index` and skimage's `gaussian_weights=True` after its crop),
    population (biased) variances, C1 = (K1 L)^2, C2 = (K2 L)^2, averaged over positions and channels.

    Images smaller than the window use the largest odd window that fits (same sigma), so tiny test images work;
    at 32 px and above the standard 11x11 window is used unchanged."""
    if x_BCHW.shape != y_BCHW.shape or x_BCHW.ndim != 4:
        raise ValueError(f"ssim needs two (B, C, H, W) tensors of equal shape, got {tuple(x_BCHW.shape)}, "
                         f"{tuple(y_BCHW.shape)}")
    B, C, H, W = x_BCHW.shape
    window = min(window, H - (1 - H % 2), W - (1 - W % 2))
    g = gaussian_window(window, sigma).to(x_BCHW.device)
    gh, gw = g.view(1, 1, -1, 1).repeat(C, 1, 1, 1), g.view(1, 1, 1, -1).repeat(C, 1, 1, 1)

    def blur(t):   # separable depthwise 'valid' Gaussian filter
        return F.conv2d(F.conv2d(t, gh, groups=C), gw, groups=C)
    x, y = x_BCHW.double(), y_BCHW.double()
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x.square()
    var_y = blur(y * y) - mu_y.square()
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1)


def rfid(real_feats_ND: np.ndarray | torch.Tensor, rec_feats_ND: np.ndarray | torch.Tensor) -> float:
    """Reconstruction FID: the Frechet distance of RECONSTRUCTION features (generated, first) to the features of
    the REAL images they reconstruct (reference), in eval.metrics' argument convention."""
    mu_r, s_r = feature_stats(real_feats_ND)
    mu_g, s_g = feature_stats(rec_feats_ND)
    d = frechet_distance(mu_g, s_g, mu_r, s_r)
    return d if math.isfinite(d) else float("nan")
