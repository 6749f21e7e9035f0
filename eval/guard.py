"""Checks a score must pass before any feature is computed: the mistakes behind most failed reproductions of
published FIDs (too few samples, an unbalanced class histogram, images of the wrong size or type, the wrong
reference batch, one seed reused for every block).

A failed check is an `EvaluationGuardError` naming the file and what is wrong. The one deviation a user may make
knowingly, fewer samples than the standard evaluation, is not an error but a label: a score is `FID-50k` only for
50,000 samples, 50 per class; otherwise it is labelled with its count (`FID-10000`) in scores.json and the tables.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

STANDARD_SAMPLES, STANDARD_PER_CLASS = 50_000, 50
# The ADM reference batch (guided-diffusion's evaluator): images, Inception pool3 statistics (2048) and spatial
# statistics of mixed_6/conv's first 7 channels (7 x 17 x 17 = 2023).
REFERENCE_BATCH_SHAPES = {"mu": (2048,), "sigma": (2048, 2048), "mu_s": (2023,), "sigma_s": (2023, 2023)}


class EvaluationGuardError(ValueError):
    """Samples or a reference batch that cannot give a meaningful score; the message names the file."""


def fid_label(labels_N: np.ndarray) -> str:
    """'FID-50k' for the standard evaluation (50,000 samples, 50 per class), else 'FID-<count>'."""
    counts = np.bincount(labels_N)
    n = int(labels_N.shape[0])
    if n == STANDARD_SAMPLES and counts.min() == counts.max() == STANDARD_PER_CLASS:
        return "FID-50k"
    return f"FID-{n}"


def check_images(images_NHW3: np.ndarray, image_size: int, path: str | Path) -> None:
    """uint8 RGB (N, S, S, 3) at the configured size."""
    if images_NHW3.dtype != np.uint8:
        raise EvaluationGuardError(f"{path}: images must be uint8, got {images_NHW3.dtype}")
    if images_NHW3.ndim != 4 or images_NHW3.shape[1:] != (image_size, image_size, 3):
        raise EvaluationGuardError(f"{path}: images must be (N, {image_size}, {image_size}, 3) RGB at the configured "
                                   f"image size, got {tuple(images_NHW3.shape)}")


def check_class_balance(labels_N: np.ndarray, num_classes: int, path: str | Path) -> None:
    """Every class drawn equally often, up to one sample (the last block of an odd count): an unbalanced set has a
    different class distribution than the reference, which FID penalises whatever the images' quality."""
    if labels_N.min() < 0 or labels_N.max() >= num_classes:
        raise EvaluationGuardError(f"{path}: labels must lie in [0, {num_classes}), got [{labels_N.min()}, "
                                   f"{labels_N.max()}]")
    counts = np.bincount(labels_N, minlength=num_classes)
    if counts.max() - counts.min() > 1:
        lo, hi = int(counts.argmin()), int(counts.argmax())
        raise EvaluationGuardError(f"{path}: the class histogram is unbalanced (class {lo}: {counts[lo]} samples, "
                                   f"class {hi}: {counts[hi]}); sample the same number per class")


def check_distinct_blocks(images_NHW3: np.ndarray, block_size: int, path: str | Path) -> None:
    """No two sampler blocks hold the same images: the mark of one seed reused for every block."""
    seen: dict[str, int] = {}
    for b, s in enumerate(range(0, images_NHW3.shape[0], block_size)):
        block = np.ascontiguousarray(images_NHW3[s:s + block_size])
        digest = hashlib.sha256(block.tobytes()).hexdigest()
        if digest in seen:
            raise EvaluationGuardError(f"{path}: blocks {seen[digest]} and {b} (of {block_size} images) are "
                                       f"identical: the sampler was seeded alike for both (each block needs its own "
                                       f"seed, var.sharded_sampling.block_seed)")
        seen[digest] = b


def check_reference_batch(arrays: dict, path: str | Path, inception: bool) -> None:
    """An ADM-style reference batch (`arr_0`) scored with Inception must carry the evaluator's statistics."""
    if "arr_0" not in arrays:
        return
    images = arrays["arr_0"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise EvaluationGuardError(f"{path}: arr_0 must be uint8 (N, H, W, 3) images, got {images.dtype} "
                                   f"{tuple(images.shape)}")
    if not inception:
        return
    missing = [k for k in REFERENCE_BATCH_SHAPES if k not in arrays]
    wrong = [f"{k} {tuple(arrays[k].shape)} (expected {shape})" for k, shape in REFERENCE_BATCH_SHAPES.items()
             if k in arrays and tuple(arrays[k].shape) != shape]
    if missing or wrong:
        raise EvaluationGuardError(f"{path}: not an ADM reference batch: "
                                   + "; ".join([*(f"no {k!r}" for k in missing), *wrong])
                                   + " (VIRTUAL_imagenet256_labeled.npz holds arr_0, mu, sigma, mu_s, sigma_s)")


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()
