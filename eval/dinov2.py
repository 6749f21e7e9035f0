"""DINOv2 ViT-L/14 features, the feature space of the dgm-eval benchmark (Stein et al. 2023, arXiv:2306.04675),
in plain torch, loaded from a LOCAL copy of the official weights. Nothing is ever downloaded.

Weights. `dinov2_vitl14_pretrain.pth` of the official release (facebookresearch/dinov2, `dinov2/hub/backbones.py`:
`<base>/dinov2_vitl14/dinov2_vitl14_pretrain.pth`), a plain state dict of 343 tensors, 304,368,640 float32 values:
    cls_token (1, 1, 1024)   pos_embed (1, 1370, 1024) = cls + a 37 x 37 grid (518 px / 14)   mask_token (1, 1024)
    patch_embed.proj.weight (1024, 3, 14, 14), .bias (1024)
    blocks.{0..23}.norm1.weight/.bias (1024)  .attn.qkv.weight (3072, 1024)/.bias (3072)
                   .attn.proj.weight (1024, 1024)/.bias  .ls1.gamma (1024)  .norm2.weight/.bias
                   .mlp.fc1.weight (4096, 1024)/.bias (4096)  .mlp.fc2.weight (1024, 4096)/.bias (1024)  .ls2.gamma
    norm.weight/.bias (1024)
(`DinoVisionTransformer` with `vit_large`: embed 1024, depth 24, 16 heads, MLP ratio 4, qkv bias, LayerScale with
init 1.0, LayerNorm eps 1e-6, exact GELU, block_chunks=0 so blocks are `blocks.{i}`, no register tokens, head =
Identity.) The file is read with `torch.load(weights_only=True)`; its sha256 is recorded, and checked when a full
64-hex `expected_sha256` is given. A state dict with missing, unexpected or mis-shaped keys is refused, naming them.

Forward (as `DinoVisionTransformer.forward` in eval mode): 14 px patches by a stride-14 convolution, cls token
prepended, the position embedding added after bicubic interpolation of the 37 x 37 grid to the input's grid with
the release's `interpolate_offset=0.1` (scale factor (16 + 0.1) / 37 for 224 px, no antialias), 24 pre-norm blocks
x += ls1(attn(norm1(x))); x += ls2(mlp(norm2(x))), the final norm; features = the CLS token after it (B, 1024).

Preprocessing as dgm-eval's DINOv2 encoder (`dgm_eval/models/dinov2.py`, default `clean_resize=False`): the uint8
RGB image as a PIL image -> torchvision `Resize((224, 224), BICUBIC)`, which on a PIL image is PIL's own bicubic
resize (always antialiased, a = -0.5, rounded back to uint8) -> `ToTensor` (/255) -> `Normalize` with the ImageNet
mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) -> a 16 x 16 grid of 14 px patches.
Distances in this space are `fd_dinov2`, never FID.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from eval.inception import MissingWeightsError, WeightsHashError, sha256_file
from var.io import load_torch

WEIGHTS_FILE_NAME = "dinov2_vitl14_pretrain.pth"
EXTRACTOR_NAME = "dinov2-vit-l-14"
SHORT_NAME = "dinov2"  # metric keys: fd_dinov2, kid_dinov2, ...
INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ViTConfig:
    patch_size: int = 14
    dim: int = 1024
    depth: int = 24
    heads: int = 16
    mlp_hidden: int = 4096          # mlp_ratio 4
    pos_grid: int = 37              # the position embedding's grid: 518 px training resolution / 14
    interpolate_offset: float = 0.1  # the release's scale-factor offset when resizing that grid
    eps: float = 1e-6


VITL14 = ViTConfig()


class _LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x_BLC):
        B, L, C = x_BLC.shape
        q, k, v = self.qkv(x_BLC).reshape(B, L, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, L, C))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.attn = _Attention(cfg.dim, cfg.heads)
        self.ls1 = _LayerScale(cfg.dim)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.mlp = _Mlp(cfg.dim, cfg.mlp_hidden)
        self.ls2 = _LayerScale(cfg.dim)

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class _PatchEmbed(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.dim, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x_B3HW):
        return self.proj(x_B3HW).flatten(2).transpose(1, 2)  # (B, h*w, C), patches in raster order


class DinoV2ViT(nn.Module):
    """The backbone; parameter names are the release's state-dict keys. Input: normalised (B, 3, H, W), H and W
    multiples of the patch size. Output: the CLS token after the final norm, (B, dim)."""

    def __init__(self, cfg: ViTConfig = VITL14):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = _PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.pos_grid ** 2, cfg.dim))
        self.mask_token = nn.Parameter(torch.zeros(1, cfg.dim))  # training-only (iBOT masking); kept for the keys
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.eps)

    def position_embedding(self, h: int, w: int) -> torch.Tensor:
        """(1, 1 + h*w, dim) for an h x w patch grid, resized like `interpolate_pos_encoding` of the release."""
        g, pos = self.cfg.pos_grid, self.pos_embed.float()
        if h == w == g:
            return self.pos_embed
        grid_1CGG = pos[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
        # A scale factor, not a size: the kernel then samples at (i + 0.5) * g / (h + 0.1) - 0.5, as the release.
        scale = ((h + self.cfg.interpolate_offset) / g, (w + self.cfg.interpolate_offset) / g)
        grid_1Chw = F.interpolate(grid_1CGG, scale_factor=scale, mode="bicubic", antialias=False)
        if grid_1Chw.shape[-2:] != (h, w):
            raise ValueError(f"position grid {g} resized to {tuple(grid_1Chw.shape[-2:])}, expected {(h, w)}")
        grid_1LC = grid_1Chw.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([pos[:, :1], grid_1LC], dim=1).to(self.pos_embed.dtype)

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        p = self.cfg.patch_size
        if x_B3HW.shape[-1] % p or x_B3HW.shape[-2] % p:
            raise ValueError(f"input {tuple(x_B3HW.shape)} is not a multiple of the {p} px patch")
        x_BLC = self.patch_embed(x_B3HW)
        x_BLC = torch.cat([self.cls_token.expand(x_BLC.shape[0], -1, -1), x_BLC], dim=1)
        x_BLC = x_BLC + self.position_embedding(x_B3HW.shape[-2] // p, x_B3HW.shape[-1] // p)
        for block in self.blocks:
            x_BLC = block(x_BLC)
        return self.norm(x_BLC)[:, 0]


def preprocess(img_B3HW: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """uint8 RGB (B, 3, H, W) -> float32 (B, 3, size, size) on the input's device, as dgm-eval (module docstring)."""
    if img_B3HW.dtype != torch.uint8 or img_B3HW.ndim != 4 or img_B3HW.shape[1] != 3:
        raise TypeError(f"expected uint8 (B, 3, H, W) RGB images, got {img_B3HW.dtype} {tuple(img_B3HW.shape)}")
    hwc = img_B3HW.permute(0, 2, 3, 1).cpu().numpy()
    resized_BHW3 = np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.BICUBIC)) for a in hwc])
    x_B3HW = torch.from_numpy(resized_BHW3).to(img_B3HW.device).permute(0, 3, 1, 2).float().div(255)
    mean = torch.tensor(IMAGENET_MEAN, device=x_B3HW.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, device=x_B3HW.device)[:, None, None]
    return (x_B3HW - mean) / std  # torchvision's Normalize: subtract, then divide, in float32


def expected_shapes(cfg: ViTConfig = VITL14) -> dict[str, tuple[int, ...]]:
    """State-dict key -> shape of the architecture (meta tensors: no memory, no time)."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in DinoV2ViT(cfg).state_dict().items()}


def check_state_dict(state: dict, cfg: ViTConfig = VITL14, source: str = "state dict") -> None:
    """Refuse anything but exactly the architecture's keys and shapes, naming every offending key."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source}: expected a plain state dict of tensors (the official release format)")
    want = expected_shapes(cfg)
    missing = sorted(set(want) - set(state), key=_natural)
    unexpected = sorted(set(state) - set(want), key=_natural)
    misshaped = [f"{k}: {tuple(state[k].shape)} (expected {want[k]})" for k in sorted(set(want) & set(state),
                 key=_natural) if tuple(state[k].shape) != want[k]]
    if missing or unexpected or misshaped:
        raise ValueError(f"{source} does not match DINOv2 ViT(patch {cfg.patch_size}, dim {cfg.dim}, depth "
                         f"{cfg.depth}): missing keys {missing}; unexpected keys {unexpected}; mis-shaped keys "
                         f"{misshaped}")


def _natural(key: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def load_dinov2(weights_path: str | Path, expected_sha256: str | None = None,
                cfg: ViTConfig = VITL14) -> tuple[DinoV2ViT, str]:
    """(model in eval mode, weights file sha256) from a local file; never downloads."""
    path = Path(weights_path)
    if not path.is_file():
        raise MissingWeightsError(f"DINOv2 weights not found at {path}. Put the official {WEIGHTS_FILE_NAME} "
                                  f"there (facebookresearch/dinov2 release); nothing is downloaded at run time.")
    if expected_sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", expected_sha256):
        raise ValueError(f"expected_sha256 must be the full 64-hex-digit sha256, got {expected_sha256!r}")
    digest = sha256_file(path)
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise WeightsHashError(f"{path}: sha256 {digest} does not match the expected {expected_sha256.lower()}")
    state = load_torch(path)  # weights_only=True
    check_state_dict(state, cfg, str(path))
    model = DinoV2ViT(cfg)
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False), digest


class DINOv2Features(nn.Module):
    """uint8 (B, 3, H, W) -> {'pool': CLS features (B, dim) float32}: 'pool' is the key every extractor of
    eval/features.py gives the features FD and precision/recall use."""

    def __init__(self, weights_path: str | Path, expected_sha256: str | None = None, cfg: ViTConfig = VITL14):
        super().__init__()
        self.net, self.weights_sha256 = load_dinov2(weights_path, expected_sha256, cfg)

    @torch.no_grad()
    def forward(self, img_B3HW: torch.Tensor) -> dict[str, torch.Tensor]:
        x = preprocess(img_B3HW).to(next(self.net.parameters()).dtype)
        return {"pool": self.net(x).float()}
