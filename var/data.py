"""Datasets: the embedded procedural `shapes` set, ImageNet-layout image folders, and the split files.

Split files (`data` stage, see docs/architecture.md) are `.npz` with either `images` uint8 (N, H, W, 3) RGB or
`paths` (a numpy unicode array, never pickled) plus `labels` int64 (N,). `ImageSplit` serves either kind as
`(img_3HW float32 in [-1, 1], label)`. Image files are decoded by var/images.py (one stated rule per pixel mode,
EXIF orientation applied; a mode without a rule is an error naming the file).

Shapes are generated deterministically from (seed, split, index): every image draws its parameters from its own
numpy Generator seeded with `[seed, split_code, index]`, so an image never depends on how many others were made.
The rendering touches arrays only with exactly-rounded operations (+ - * / sqrt abs floor comparisons; the
trigonometry is on per-image scalars), so the bytes do not depend on the CPU's SIMD paths.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import torch

from var.config.data import SHAPE_FAMILY_NAMES, DataConfig
from var.images import CorruptImageError, UnsupportedImageModeError, decode_image, load_image, unit_to_uint8  # noqa: F401
from var.io import atomic_savez, load_npz

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SPLITS = ("train", "val")
_SPLIT_CODE = {"train": 0, "val": 1}


class DatasetError(ValueError):
    """A dataset folder or split file is unusable; the message names the folder or file."""


# ------------------------------------------------------------------------------------------------ shapes
# Each family: (name, mask function of local coordinates (u, v) in about [-1, 1], max |rotation| in degrees).
# Rotation is limited where a full turn would make two families coincide (square/diamond, plus/x, the bars).
def _circle(u, v):
    return u * u + v * v <= 1.0


def _square(u, v):
    return np.maximum(np.abs(u), np.abs(v)) <= 0.8


def _triangle(u, v):
    return (v >= -0.5) & (v <= 1.0 - 1.7320508 * np.abs(u))


def _ring(u, v):
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.36)


def _plus(u, v):
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.28) & (av <= 1.0)) | ((av <= 0.28) & (au <= 1.0))


def _star(u, v):
    # cos(5 phi) = Re((u + iv)^5) / rho^5, so a five-lobed star needs no array trigonometry
    r2 = u * u + v * v
    u2, v2 = u * u, v * v
    re5 = u * (u2 * u2 - 10 * u2 * v2 + 5 * v2 * v2)
    rho = np.sqrt(r2)
    cos5 = re5 / np.maximum(r2 * r2 * rho, 1e-12)
    return rho <= 0.6 + 0.4 * cos5


def _diamond(u, v):
    return np.abs(u) / 0.6 + np.abs(v) <= 1.0        # elongated rhombus, so it is never a rotated square


def _even_band(t):
    """floor(t) is even; written without `%` (slow on float arrays), all steps exact."""
    return t - 2 * np.floor(t * 0.5) < 1.0


def _hbars(u, v):
    return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0) & _even_band((v + 1.0) * 2.5)


def _vbars(u, v):
    return _hbars(v, u)


def _dots(u, v):
    cu = u - (np.floor((u + 1.0) * 1.5) + 0.5) / 1.5 + 1.0    # offset to the nearest of a 3x3 grid of centres
    cv = v - (np.floor((v + 1.0) * 1.5) + 0.5) / 1.5 + 1.0
    return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0) & (cu * cu + cv * cv <= 0.09)


def _crescent(u, v):
    return (u * u + v * v <= 1.0) & ((u - 0.45) * (u - 0.45) + v * v >= 0.6)


def _xcross(u, v):
    return _plus((u + v) * 0.7071068, (v - u) * 0.7071068)


SHAPE_FAMILIES = (
    ("circle", _circle, 0.0), ("square", _square, 15.0), ("triangle", _triangle, 180.0), ("ring", _ring, 0.0),
    ("plus", _plus, 15.0), ("star", _star, 180.0), ("diamond", _diamond, 15.0), ("hbars", _hbars, 10.0),
    ("vbars", _vbars, 10.0), ("dots", _dots, 10.0), ("crescent", _crescent, 180.0), ("xcross", _xcross, 15.0),
)
assert tuple(name for name, _, _ in SHAPE_FAMILIES) == SHAPE_FAMILY_NAMES


def _snap(rgb: np.ndarray, levels: int) -> np.ndarray:
    """Each channel to the nearest of `levels` evenly spaced values in [0.1, 0.9] (0 = unchanged)."""
    if not levels:
        return rgb
    return 0.1 + np.round(rgb * (levels - 1)) * (0.8 / (levels - 1))


def _shape_params(seed: int, split: str, index: int, num_classes: int, noise_res: int = 8,
                  shape_scale: tuple[float, float] = (0.4, 0.72), colour_levels: int = 0) -> dict:
    """Per-image parameters from the image's own Generator (label = index mod num_classes: balanced)."""
    rng = np.random.default_rng([seed, _SPLIT_CODE[split], index])
    label = index % num_classes
    bg0, fg = _snap(rng.random(3), colour_levels), _snap(rng.random(3), colour_levels)
    while np.abs(fg - bg0).sum() < 0.9:          # enough colour contrast that the shape is always visible
        fg = _snap(rng.random(3), colour_levels)
    bg1 = np.clip(bg0 + rng.uniform(-0.3, 0.3, 3), 0, 1)
    theta = math.radians(rng.uniform(-1, 1) * SHAPE_FAMILIES[label][2])
    grad_angle = rng.uniform(0, 2 * math.pi)
    stripe_angle = rng.uniform(0, 2 * math.pi)
    return dict(
        label=label, bg0=bg0, bg1=bg1, fg=fg, scale=rng.uniform(*shape_scale),
        cx=rng.uniform(-0.2, 0.2), cy=rng.uniform(-0.2, 0.2), cos=math.cos(theta), sin=math.sin(theta),
        grad=(math.cos(grad_angle), math.sin(grad_angle)), bg_kind=int(rng.integers(2)),  # gradient | noisy
        fg_kind=int(rng.integers(3)),                                                     # solid|striped|noise
        stripe=(math.cos(stripe_angle), math.sin(stripe_angle)), stripe_freq=rng.uniform(3, 6),
        noise=rng.random((2, noise_res, noise_res)),  # drawn last: its size changes no other draw
    )


def _area_down(x_NSS: np.ndarray, k: int) -> np.ndarray:
    """Mean over k x k blocks; strided slice sums are several times faster than a reshape-mean here."""
    rows = sum(x_NSS[:, i::k] for i in range(1, k)) + x_NSS[:, 0::k]
    return (sum(rows[:, :, j::k] for j in range(1, k)) + rows[:, :, 0::k]) * np.float32(1.0 / (k * k))


def _upsample_noise(noise_NRR: np.ndarray, size: int, smooth: bool) -> np.ndarray:
    """(N, C, R, R) noise fields -> (N, C, size, size): nearest (blocks of size/R pixels) or bilinear at pixel
    centres with clamped edges. Bilinear uses only exactly-rounded float32 + and *, so the bytes are portable."""
    R = noise_NRR.shape[-1]
    if not smooth:
        up = (np.arange(size) * R) // size
        return noise_NRR[..., up, :][..., up]
    pos = ((np.arange(size, dtype=np.float64) + 0.5) * R / size - 0.5).clip(0, R - 1)   # source coordinates
    i0 = np.floor(pos).astype(np.int64).clip(0, R - 2)
    w1 = (pos - i0).astype(np.float32)
    w0 = np.float32(1) - w1
    rows = noise_NRR[..., i0, :] * w0[:, None] + noise_NRR[..., i0 + 1, :] * w1[:, None]   # (N, C, size, R)
    return rows[..., i0] * w0 + rows[..., i0 + 1] * w1


def _render(params: list[dict], size: int, supersample: int, smooth_noise: bool = False) -> np.ndarray:
    """Render one class's images, vectorised over the batch; returns uint8 (N, size, size, 3).

    Only the mask and the stripe shading need supersampling: background colour and noise are constant within
    an output pixel (noise blocks are whole output pixels, size % 8 == 0), so compositing happens at output
    resolution as img = bg * (1 - coverage) + fg * shaded_coverage, which equals the supersampled average.
    """
    f32 = np.float32
    P = lambda key: np.array([p[key] for p in params], dtype=f32)          # noqa: E731
    col = lambda a: a[:, None, None]                                       # noqa: E731

    def grid(n):                                                           # pixel centres in [-1, 1]
        c = ((np.arange(n, dtype=f32) + 0.5) / n * 2 - 1).astype(f32)
        return c[None, None, :], c[None, :, None]                         # x (1,1,n), y (1,n,1)

    x, y = grid(size * supersample)
    dx, dy = x - col(P("cx")), y - col(P("cy"))
    c, s, r = col(P("cos")), col(P("sin")), col(P("scale"))
    u, v = (dx * c + dy * s) / r, (dy * c - dx * s) / r                    # (N, S, S) local shape coordinates
    mask_NSS = SHAPE_FAMILIES[params[0]["label"]][1](u, v).astype(f32)
    cover_NHW = _area_down(mask_NSS, supersample)
    kind = P("fg_kind")                                                    # solid | striped | noise
    striped_NHW = cover_NHW.copy()
    sel = np.flatnonzero(kind == 1)                                        # stripes only where drawn
    st = np.stack([p["stripe"] for p in params]).astype(f32)[sel] * P("stripe_freq")[sel, None]
    dark = ~_even_band(u[sel] * col(st[:, 0]) + v[sel] * col(st[:, 1]))
    striped_NHW[sel] = _area_down(mask_NSS[sel] * np.where(dark, f32(0.55), f32(1.0)), supersample)

    noise = _upsample_noise(np.stack([p["noise"] for p in params]).astype(f32), size, smooth_noise)  # (N, 2, H, W)
    x, y = grid(size)
    g = np.stack([p["grad"] for p in params]).astype(f32)
    t = (x * col(g[:, 0]) + y * col(g[:, 1])) * f32(0.5) + f32(0.5)        # gradient position in [0, 1]
    t = np.where(col(P("bg_kind")) == 0, t, noise[:, 0])[..., None]
    bg = np.stack([p["bg0"] for p in params]).astype(f32)[:, None, None]
    bg_NHW3 = bg + (np.stack([p["bg1"] for p in params]).astype(f32)[:, None, None] - bg) * t
    kind = col(kind)
    shaded_NHW = np.where(kind == 0, cover_NHW, np.where(kind == 1, striped_NHW,
                                                         cover_NHW * (f32(0.55) + f32(0.45) * noise[:, 1])))
    fg_NHW3 = np.stack([p["fg"] for p in params]).astype(f32)[:, None, None] * shaded_NHW[..., None]
    img = bg_NHW3 * (1 - cover_NHW[..., None]) + fg_NHW3
    return unit_to_uint8(img)


def make_shapes(num_classes: int, per_class: int, image_size: int, seed: int, split: str,
                chunk: int = 64, *, noise_res: int = 8, smooth_noise: bool = False,
                shape_scale: tuple[float, float] = (0.4, 0.72),
                colour_levels: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The `shapes` split: images uint8 (N, H, W, 3) RGB and labels int64 (N,), N = num_classes * per_class.

    Labels cycle 0..K-1 (index mod K). Supersampled 4x at 32 px (2x at >= 64 px, to bound the cost) and
    area-downsampled for anti-aliasing.
    """
    if split not in _SPLIT_CODE:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 1 <= num_classes <= len(SHAPE_FAMILIES):
        raise ValueError(f"num_classes must be in 1..{len(SHAPE_FAMILIES)}, got {num_classes}")
    n = num_classes * per_class
    params = [_shape_params(seed, split, i, num_classes, noise_res, tuple(shape_scale), colour_levels)
              for i in range(n)]
    labels_N = np.arange(n, dtype=np.int64) % num_classes
    images = np.empty((n, image_size, image_size, 3), np.uint8)
    supersample = 4 if image_size < 64 else 2
    for k in range(num_classes):
        idx = np.flatnonzero(labels_N == k)
        for lo in range(0, len(idx), chunk):
            sel = idx[lo:lo + chunk]
            images[sel] = _render([params[i] for i in sel], image_size, supersample, smooth_noise)
    return images, labels_N


# ------------------------------------------------------------------------------------------ image folders
def index_imagefolder(split_dir: str | Path) -> tuple[list[str], np.ndarray, list[str]]:
    """ImageNet layout: `split_dir/<class>/<image>`; sorted class names give label ids 0..K-1.

    Returns (paths, labels int64 (N,), class_names). Hidden entries (leading '.') are ignored; files are matched
    by extension only (case-insensitive), so undecodable files surface later as CorruptImageError.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise DatasetError(f"image folder not found: {split_dir}")
    entries = [e for e in sorted(split_dir.iterdir()) if not e.name.startswith(".")]
    if not entries:
        raise DatasetError(f"image folder is empty: {split_dir}")
    class_dirs = [e for e in entries if e.is_dir()]
    if not class_dirs:
        raise DatasetError(f"image folder has no class sub-folders (expected {split_dir}/<class>/<images>): "
                           f"{split_dir}")
    paths, labels = [], []
    for label, d in enumerate(class_dirs):
        files = [str(f) for f in sorted(d.iterdir())
                 if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS]
        if not files:
            raise DatasetError(f"class folder has no images ({', '.join(IMAGE_EXTENSIONS)}): {d}")
        paths += files
        labels += [label] * len(files)
    return paths, np.asarray(labels, np.int64), [d.name for d in class_dirs]


def check_decodable(paths: list[str], labels: np.ndarray, image_size: int, skip_corrupt: bool = False,
                    workers: int | None = None) -> tuple[list[str], np.ndarray, list[str]]:
    """Decode every file once (the `data` stage), so no later stage meets a corrupt image after hours of work.

    Returns (kept paths, their labels, skipped paths). Without skip_corrupt the first undecodable file (in path
    order) raises CorruptImageError naming it; with it, undecodable files are dropped, but a class left without
    any image is still a DatasetError. Threads: PIL releases the GIL while decoding.
    """
    from concurrent.futures import ThreadPoolExecutor

    def ok(p: str) -> str | None:
        try:
            load_image(p, image_size)
            return None
        except CorruptImageError as e:
            return str(e)

    with ThreadPoolExecutor(max_workers=workers or min(16, (os.cpu_count() or 1) + 2)) as pool:
        errors = list(pool.map(ok, paths))
    bad = [i for i, e in enumerate(errors) if e is not None]
    if bad and not skip_corrupt:
        raise CorruptImageError(f"{errors[bad[0]]} ({len(bad)} undecodable file(s) in total; fix or remove "
                                f"them, or set data.skip_corrupt: true to skip them)")
    for i in bad:
        log.warning("skipping %s", errors[i])
    keep = np.setdiff1d(np.arange(len(paths)), bad)
    labels = np.asarray(labels, np.int64)
    emptied = sorted(set(labels[bad].tolist()) - set(labels[keep].tolist()))
    if emptied:
        raise DatasetError(f"every image of class id(s) {emptied} is undecodable: "
                           f"{[paths[i] for i in bad if labels[i] in emptied][:5]}")
    return [paths[i] for i in keep], labels[keep], [paths[i] for i in bad]


# ------------------------------------------------------------------------------------------- split files
def write_split(path: str | Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Atomically write an array split: images uint8 (N, H, W, 3), labels int64 (N,)."""
    images, labels = np.asarray(images), np.asarray(labels, np.int64)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(labels):
        raise ValueError(f"expected uint8 (N, H, W, 3) images and N labels, got {images.dtype} {images.shape} "
                         f"and {labels.shape}")
    atomic_savez(path, images=images, labels=labels)


def write_index(path: str | Path, paths: list[str], labels: np.ndarray) -> None:
    """Atomically write an image-folder split: `paths` as a numpy unicode array (no pickle), labels int64."""
    labels = np.asarray(labels, np.int64)
    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
    atomic_savez(path, paths=np.asarray([str(p) for p in paths], dtype=np.str_), labels=labels)


def load_split_arrays(path: str | Path) -> tuple[np.ndarray | None, list[str] | None, np.ndarray]:
    """(images uint8 (N, H, W, 3) or None, paths or None, labels int64 (N,)) from a split file."""
    z = load_npz(path, required=("labels",))
    if ("images" in z) == ("paths" in z):
        raise DatasetError(f"{path}: a split file holds exactly one of 'images' or 'paths'; has {sorted(z)}")
    labels = z["labels"].astype(np.int64)
    if "images" in z:
        return z["images"], None, labels
    return None, [str(p) for p in z["paths"]], labels


load_split = load_split_arrays


def load_split_images(path: str | Path, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, H, W, 3) images and int64 labels of a split file (image-folder splits are decoded here, which
    holds the whole split in memory: fine for the embedded data, not for ImageNet-scale folders)."""
    images, paths, labels = load_split_arrays(path)
    if images is None:
        images = np.stack([load_image(p, image_size) for p in paths])
    return images, labels


def class_names(cfg: DataConfig) -> list[str]:
    """Label id -> class name (for data/classes.json): shape family names, or the sorted train sub-folders."""
    if cfg.kind == "shapes":
        return [name for name, _, _ in SHAPE_FAMILIES[:cfg.num_classes]]
    return index_imagefolder(Path(cfg.root) / "train")[2]


def materialise(cfg: DataConfig) -> dict[str, tuple[np.ndarray | list[str], np.ndarray]]:
    """split -> (images uint8 (N, H, W, 3) or paths, labels int64) for the `data` stage."""
    if cfg.kind == "shapes":
        per = {"train": cfg.train_per_class, "val": cfg.val_per_class}
        return {s: make_shapes(cfg.num_classes, per[s], cfg.image_size, cfg.seed, s, noise_res=cfg.noise_res,
                               smooth_noise=cfg.smooth_noise, shape_scale=cfg.shape_scale,
                               colour_levels=cfg.colour_levels) for s in SPLITS}
    out, names = {}, {}
    for s in SPLITS:
        paths, labels, names[s] = index_imagefolder(Path(cfg.root) / s)
        out[s] = (paths, labels)
    if names["train"] != names["val"]:
        raise DatasetError(f"class folders of {Path(cfg.root) / 'train'} and {Path(cfg.root) / 'val'} differ: "
                           f"{sorted(set(names['train']) ^ set(names['val']))}")
    if cfg.num_classes and cfg.num_classes != len(names["train"]):
        raise DatasetError(f"data.num_classes is {cfg.num_classes} but {Path(cfg.root) / 'train'} has "
                           f"{len(names['train'])} class folders (set 0 to infer)")
    return out


# ---------------------------------------------------------------------------------------------- dataset
class ImageSplit(torch.utils.data.Dataset):
    """A split file served as (img_3HW float32 in [-1, 1], label int).

    Array splits must already be image_size. Path splits decode lazily and raise CorruptImageError naming a
    bad file; with skip_corrupt=True every file is decoded once at construction instead and the undecodable
    ones are dropped (`num_skipped`, logged) -- simplest robust behaviour, at the cost of one decoding pass.
    """

    def __init__(self, path: str | Path, image_size: int, skip_corrupt: bool = False):
        self.images, self.paths, self.labels = load_split_arrays(path)
        self.image_size, self.num_skipped = image_size, 0
        if self.images is not None and self.images.shape[1:3] != (image_size, image_size):
            raise DatasetError(f"{path}: images are {self.images.shape[1:3]}, expected {image_size} px")
        if self.paths is not None and skip_corrupt:
            keep = []
            for i, p in enumerate(self.paths):
                try:
                    load_image(p, image_size)
                    keep.append(i)
                except CorruptImageError as e:
                    log.warning("skipping %s", e)
            self.num_skipped = len(self.paths) - len(keep)
            self.paths, self.labels = [self.paths[i] for i in keep], self.labels[keep]
            if self.num_skipped:
                log.warning("%s: skipped %d undecodable image(s) of %d", path, self.num_skipped,
                            self.num_skipped + len(keep))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        hw3 = self.images[i] if self.images is not None else load_image(self.paths[i], self.image_size)
        img_3HW = torch.from_numpy(np.ascontiguousarray(hw3)).permute(2, 0, 1).float() / 127.5 - 1.0
        return img_3HW, int(self.labels[i])
