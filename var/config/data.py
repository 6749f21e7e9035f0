"""The dataset section (`data`): the embedded procedural `shapes` set or an ImageNet-layout image folder
(var/data.py). Torch-free (see var/config/loader.py)."""
from __future__ import annotations

from dataclasses import dataclass

from .loader import Config, param

# The shape families var/data.py draws (class k is the k-th); their masks live there, their names here so that the
# class count can be validated without the renderer.
SHAPE_FAMILY_NAMES = ("circle", "square", "triangle", "ring", "plus", "star", "diamond", "hbars", "vbars", "dots",
                      "crescent", "xcross")


@dataclass(frozen=True)
class DataConfig(Config):
    """params.yaml section `data`."""
    kind: str = param("shapes", choices=("shapes", "imagefolder"))   # imagefolder: root/{train,val}/<class>/*
    root: str = ""                  # image-folder root; must be '' for shapes
    image_size: int = param(32, ge=16)              # side of the square images served to the models (multiple of 8)
    num_classes: int = param(10, ge=0)              # shapes: 2..12 families; imagefolder: the folder count, 0 = infer
    train_per_class: int = param(600, ge=1)         # shapes only
    val_per_class: int = param(100, ge=1)           # shapes only
    seed: int = param(0, ge=0, lt=2 ** 63)          # shapes only: generation seed
    skip_corrupt: bool = False      # imagefolder: drop undecodable files (counted, logged) instead of failing
    noise_res: int = param(8, ge=2)                 # shapes: side of the texture noise fields (coarser = smoother)
    smooth_noise: bool = False      # shapes: bilinear (True) or blocky nearest (False) upsampling of the noise
    shape_scale: tuple[float, float] = param((0.4, 0.72), gt=0, le=1.2)   # shapes: size range (1 = half the image)
    colour_levels: int = param(0, ge=0)             # shapes: 0 = continuous colours; k >= 2 = k levels per channel

    def __post_init__(self):
        super().__post_init__()
        if self.image_size % 8:
            raise ValueError(f"data.image_size must be a multiple of 8 and >= 16, got {self.image_size}")
        if self.kind == "shapes":
            if self.root:
                raise ValueError(f"data.root must be '' for kind 'shapes', got {self.root!r}")
            if not 2 <= self.num_classes <= len(SHAPE_FAMILY_NAMES):
                raise ValueError(f"data.num_classes for shapes must be in 2..{len(SHAPE_FAMILY_NAMES)} (the shape "
                                 f"families implemented), got {self.num_classes}")
            if not 2 <= self.noise_res <= self.image_size:
                raise ValueError(f"data.noise_res must be in 2..image_size, got {self.noise_res}")
            lo, hi = self.shape_scale
            if not lo <= hi:
                raise ValueError(f"data.shape_scale must be [min, max] with 0 < min <= max <= 1.2, got "
                                 f"{list(self.shape_scale)}")
            if self.colour_levels == 1:
                raise ValueError(f"data.colour_levels must be 0 (continuous) or >= 2, got {self.colour_levels}")
        elif not self.root:
            raise ValueError("data.root must name the image-folder root for kind 'imagefolder'")
