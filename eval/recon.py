"""Reconstruction metrics: PSNR and SSIM (Wang et al. 2004) on image tensors, rFID from features, and the
tokenizer's validation metrics (`evaluate_tokenizer`; `tokenizer_evaluator` is what the trainer calls).

Images are float tensors (B, C, H, W) in [0, data_range] (the tokenizer's [-1, 1] output maps to [0, 1] by
(x + 1) / 2). Each function returns one value per image, so callers can average over any number of batches.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from eval.metrics import feature_stats, frechet_distance
from var.images import to_uint8
from var.tokenizer_train import to_model_range

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


@torch.no_grad()
def evaluate_tokenizer(vqvae, images_uint8_NHW3: np.ndarray, batch_size: int, device: torch.device,
                       features: Callable[[np.ndarray], np.ndarray] | None = None,
                       real_features_ND: np.ndarray | None = None, features_name: str = "evalnet") -> dict:
    """Validation reconstruction metrics: PSNR and SSIM of the clamped reconstructions in [0, 1] units (eval/recon.py),
    L2 and VQ loss, codebook usage % per scale, and -- given `features` (uint8 (N, H, W, 3) -> (N, D) features,
    e.g. the evaluation network) -- rFID of the uint8 reconstructions against the real images
    (`val_rfid_<features_name>`: evalnet-rFID is not comparable to Inception rFID)."""
    was_training = vqvae.training
    vqvae.eval()
    V, K = vqvae.cfg.vocab_size, len(vqvae.cfg.patch_nums)
    hits_KV = torch.zeros(K, V, dtype=torch.long, device=device)
    psnr_sum, ssim_sum, l2_sum, vq_sum, n, recs = 0.0, 0.0, 0.0, 0.0, 0, []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for s in range(0, len(images_uint8_NHW3), batch_size):
            img_B3HW = to_model_range(images_uint8_NHW3[s:s + batch_size], device)
            rec_B3HW, vq_loss, _ = vqvae(img_B3HW)
            B = img_B3HW.shape[0]
            rec01, img01 = (rec_B3HW.float().clamp(-1, 1) + 1) / 2, (img_B3HW + 1) / 2
            psnr_sum += psnr(rec01, img01).sum().item()
            ssim_sum += ssim(rec01, img01).sum().item()
            l2_sum += F.mse_loss(rec_B3HW, img_B3HW).item() * B
            vq_sum += vq_loss.item() * B
            for k, idx_Bl in enumerate(vqvae.img_to_idx(img_B3HW)):
                hits_KV[k] += torch.bincount(idx_Bl.flatten(), minlength=V)
            if features is not None:
                recs.append(to_uint8(rec01))
            n += B
    vqvae.train(was_training)
    usage_K = ((hits_KV > 0).double().mean(1) * 100).tolist()
    out = {"val_psnr": psnr_sum / max(n, 1), "val_ssim": ssim_sum / max(n, 1), "val_l2": l2_sum / max(n, 1),
           "val_vq_loss": vq_sum / max(n, 1), "val_usage_per_scale": usage_K, "val_usage_mean": float(np.mean(usage_K))}
    if features is not None and n >= 2:
        real = real_features_ND if real_features_ND is not None else features(images_uint8_NHW3)
        out[f"val_rfid_{features_name}"] = rfid(real, features(np.concatenate(recs)))
    return out


def tokenizer_evaluator(images_uint8_NHW3: np.ndarray, batch_size: int, device: torch.device,
                        features: Callable[[np.ndarray], np.ndarray] | None = None,
                        features_name: str = "evalnet") -> Callable[[torch.nn.Module], dict]:
    """The `evaluate` callable of var.tokenizer_train.train_tokenizer: `evaluate_tokenizer` on these validation
    images; the real images' features are computed once, at the first call (only the evaluating rank calls it)."""
    real: list[np.ndarray] = []

    def evaluate(vqvae) -> dict:
        if features is not None and not real:
            real.append(features(images_uint8_NHW3))
        return evaluate_tokenizer(vqvae, images_uint8_NHW3, batch_size, device, features,
                                  real[0] if real else None, features_name)
    return evaluate
