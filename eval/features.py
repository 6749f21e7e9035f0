"""Feature extraction from uint8 images with a named extractor, in large in-memory batches, on a chosen device.

Extractors (keys of the returned feature dict in brackets):
    'inception-v3-compat'  the standard evaluator's Inception via torch-fidelity, see eval/inception.py
                           ['pool', 'logits', 'spatial']
    'evalnet'              the pipeline's own evaluation network (eval/evalnet.py: `load_evalnet(path)` returns a
                           module with `features(img_B3HW in [-1, 1]) -> (feat_BD, logits_BK)`) ['pool', 'logits']
The evaluation network is registered in torch-fidelity's feature-extractor registry under 'evalnet', so
`torch_fidelity.calculate_metrics(feature_extractor='evalnet', ...)` can use it too. Image folders are decoded by
var/images.py, with the data stage's rule for every pixel mode (torch-fidelity's own folder reader applies
`convert("RGB")`, which turns 16-bit greys white); arrays are sliced directly (no PNG round trip, no per-item
DataLoader).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor
from torch_fidelity.utils import create_feature_extractor, glob_samples_paths

from eval.inception import EXTRACTOR_NAME as INCEPTION
from eval.inception import InceptionFeatures, sha256_file
from var.images import decode_image
from var.io import load_npz
from var.precision import fp32_precision

EVALNET = "evalnet"
DINOV2 = "dinov2"            # a second feature space (eval/dinov2.py): its distances are fd_dinov2, never FID
SHORT_NAMES = {INCEPTION: "inception", EVALNET: "evalnet", DINOV2: "dinov2"}  # suffix of metric keys: fid_inception, fid_evalnet


class FeatureExtractorEvalNet(FeatureExtractorBase):
    """torch-fidelity adapter: uint8 (B, 3, H, W) -> [-1, 1] -> `net.features` -> ('pool', 'logits')."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, evalnet_module=None, **kwargs):
        super().__init__(name, features_list)
        if evalnet_module is None:
            if feature_extractor_weights_path is None:
                raise FileNotFoundError("the 'evalnet' extractor needs weights_path (runs/evalnet/model.pt)")
            from eval.evalnet import load_evalnet  # imported late: the teammate's module is optional here
            evalnet_module = load_evalnet(feature_extractor_weights_path)
        self.net = evalnet_module.eval().requires_grad_(False)

    def forward(self, img_B3HW):
        if img_B3HW.dtype != torch.uint8:
            raise TypeError(f"expected uint8 images, got {img_B3HW.dtype}")
        feat_BD, logits_BK = self.net.features(img_B3HW.float() / 127.5 - 1.0)
        out = {"pool": feat_BD.float(), "logits": logits_BK.float()}
        return tuple(out[k] for k in self.features_list)

    @staticmethod
    def get_provided_features_list():
        return "pool", "logits"


if EVALNET not in FEATURE_EXTRACTORS_REGISTRY:  # idempotent under module reloads
    register_feature_extractor(EVALNET, FeatureExtractorEvalNet)


@dataclass(frozen=True)
class Extractor:
    name: str  # registry name: 'inception-v3-compat' or 'evalnet'
    module: nn.Module  # uint8 (B, 3, H, W) -> dict of float32 (B, ...) features
    weights_sha256: str | None  # None only for an in-memory stand-in evaluation network
    device: torch.device

    @property
    def short_name(self) -> str:
        return SHORT_NAMES[self.name]


def load_extractor(name: str, *, device: str | torch.device = "cpu", weights_path: str | Path | None = None,
                   expected_sha256: str | None = None, evalnet_module: nn.Module | None = None) -> Extractor:
    """Build a named extractor on `device`. Inception weights are verified by sha256 (see eval/inception.py)."""
    if name == INCEPTION:
        module = InceptionFeatures(weights_path, expected_sha256)
        digest = module.weights_sha256
    elif name == EVALNET:
        net = create_feature_extractor(EVALNET, ["pool", "logits"], cuda=False, verbose=False,
                                       feature_extractor_weights_path=weights_path, evalnet_module=evalnet_module)
        module = _AsDict(net)
        digest = sha256_file(weights_path) if evalnet_module is None else None
    elif name == DINOV2:
        from eval.dinov2 import DINOv2Features
        module = DINOv2Features(weights_path, expected_sha256 or None)
        digest = module.weights_sha256
    else:
        raise ValueError(f"unknown extractor {name!r}; choose one of {sorted(SHORT_NAMES)}")
    device = torch.device(device)
    return Extractor(name, module.to(device).eval(), digest, device)


class _AsDict(nn.Module):
    def __init__(self, net: FeatureExtractorBase):
        super().__init__()
        self.net = net

    def forward(self, img_B3HW):
        return self.net.convert_features_tuple_to_dict(self.net(img_B3HW))


def check_uint8_images(images_NHW3: np.ndarray) -> np.ndarray:
    """Accept only uint8 (N, H, W, 3): float images or other integer ranges are a caller bug, not something to guess."""
    a = np.asarray(images_NHW3)
    if a.dtype != np.uint8:
        kind = "float" if np.issubdtype(a.dtype, np.floating) else str(a.dtype)
        rng = f" with values in [{a.min()}, {a.max()}]" if a.size else ""
        raise TypeError(f"images must be uint8 (N, H, W, 3) in [0, 255]; got {kind} ({a.dtype}){rng}. Convert "
                        f"explicitly with var.images.unit_to_uint8 (images in [0, 1]: floor(clip(x, 0, 1) * 255 + 0.5), "
                        f"the rounding of every stored sample); values outside [0, 255] are out of range for this "
                        f"path")
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3) RGB, got shape {a.shape}")
    return a


class ImageFiles(Dataset):
    """Image files as uint8 (3, H, W) tensors, decoded by var.images (EXIF orientation applied, each mode by rule)."""

    def __init__(self, files: list[str]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(decode_image(self.files[i])).permute(2, 0, 1)


def open_images(source) -> np.ndarray | Dataset:
    """uint8 array, .npz with 'images' (ours) or 'arr_0' (ADM), or an image folder (torch-fidelity's reader)."""
    if isinstance(source, np.ndarray):
        return check_uint8_images(source)
    path = Path(source)
    if path.is_dir():
        return ImageFiles(glob_samples_paths(str(path), True, "png,jpg,jpeg,webp,bmp", verbose=False))
    arrays = load_npz(path)
    key = "images" if "images" in arrays else "arr_0"
    if key not in arrays:
        raise KeyError(f"{path}: no 'images' or 'arr_0' array (has {sorted(arrays)})")
    return check_uint8_images(arrays[key])


def content_sha256(images_NHW3: np.ndarray) -> str:
    """Hash of shape + bytes: the cache key of statistics computed from an image array."""
    h = hashlib.sha256(str(images_NHW3.shape).encode())
    h.update(np.ascontiguousarray(images_NHW3).data)
    return h.hexdigest()


def _batches(src: np.ndarray | Dataset, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """uint8 (B, 3, H, W) batches on `device`. Array slices travel as contiguous (B, H, W, 3) and are permuted on the
    device: moving a permuted view would first copy it element by element on the host (seconds per 50k images)."""
    if isinstance(src, np.ndarray):
        for i in range(0, len(src), batch_size):
            yield torch.from_numpy(src[i:i + batch_size]).to(device, non_blocking=True).permute(0, 3, 1, 2).contiguous()
    else:
        for img_B3HW in DataLoader(src, batch_size=batch_size, num_workers=0):
            yield img_B3HW.to(device, non_blocking=True)


@torch.no_grad()
def extract_features(images, extractor: Extractor, *, batch_size: int = 250,
                     allow_tf32: bool = False) -> dict[str, torch.Tensor]:
    """Features of all images as float32 tensors (N, ...) left on `extractor.device` (for GPU precision/recall).

    images: uint8 (N, H, W, 3) array, .npz path or image folder (see `open_images`)."""
    src = open_images(images)
    parts: dict[str, list[torch.Tensor]] = {}
    with fp32_precision(allow_tf32):   # the evaluator's features are fp32 (cuDNN's default is TF32)
        for img_B3HW in _batches(src, batch_size, extractor.device):
            if img_B3HW.dtype != torch.uint8:
                raise TypeError(f"image batches must be uint8, got {img_B3HW.dtype}")
            for k, v in extractor.module(img_B3HW).items():
                parts.setdefault(k, []).append(v.float())
    if not parts:
        raise ValueError("no images to extract features from")
    return {k: torch.cat(v) for k, v in parts.items()}


def reconstruction_features(extractor: str, *, inception_weights: str = "", evalnet_path: str | None = None,
                            device="cpu", batch_size: int = 200, inception_sha256: str = ""):
    """(short name, uint8 (N, H, W, 3) -> (N, D) numpy features) for a tokenizer's rFID, with the extractor
    scoring uses ('inception': the weights file; 'evalnet': the evaluation network, if given); or (None, None)."""
    if extractor == "inception":
        ext = load_extractor(INCEPTION, device=device, weights_path=inception_weights,
                             expected_sha256=inception_sha256 or None)
    elif evalnet_path:
        ext = load_extractor(EVALNET, device=device, weights_path=evalnet_path)
    else:
        return None, None

    def features(images_NHW3):
        return extract_features(images_NHW3, ext, batch_size=batch_size)["pool"].cpu().numpy()
    return SHORT_NAMES[ext.name], features
