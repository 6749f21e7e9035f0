"""Rejection sampling: the "-re" rows of the paper's Table 1 (VQGAN-re, ViT-VQGAN-re, RQTransformer-re), where
each image is redrawn until a classifier is confident that it shows its target class.

For one block of images (the unit of var/sharded_sampling.py): round 0 draws every image of the block with the
block's own seed -- exactly the plain sampler's images -- and a classifier gives each the probability of its target
class. Images with probability >= `threshold` are accepted; the others are redrawn together in round 1, 2, ... (one
sampler call per round, seeded by `candidate_seed(block seed, round)`) until accepted or `max_candidates`
candidates have been drawn. An image with no accepted candidate is DROPPED: every kept image was accepted, and the
number dropped is reported beside the acceptance rate (the tables print both), never hidden by keeping a rejected
candidate. The result depends only on the block's seed and labels, so it is the same whatever the world size.

The classifier is passed in (`var` never imports `eval`): uint8 (n, H, W, 3) images and int64 (n,) labels ->
float (n,) probabilities of those labels.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

Draw = Callable[[np.ndarray, int], np.ndarray]                   # (labels (n,), seed) -> uint8 (n, H, W, 3)
Classify = Callable[[np.ndarray, np.ndarray], np.ndarray]        # (uint8 (n, H, W, 3), labels (n,)) -> prob (n,)

_M64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def candidate_seed(block_seed: int, round_: int) -> int:
    """The sampler seed of round `round_` of a block: the block's own seed at round 0 (the plain images), else a
    64-bit mix of (block seed, round), far from the small seeds of the plain blocks."""
    if round_ == 0:
        return block_seed
    return _splitmix64(_splitmix64(block_seed & _M64) ^ round_)


@dataclass
class RejectionStats:
    """Counts of one or more blocks (summed over blocks and ranks)."""
    requested: int = 0     # images asked for
    drawn: int = 0         # candidates drawn (sampler images), the first ones included
    accepted: int = 0      # images kept: each has one accepted candidate

    @property
    def dropped(self) -> int:
        return self.requested - self.accepted

    @property
    def acceptance_rate(self) -> float:
        """accepted / candidates drawn."""
        return self.accepted / self.drawn if self.drawn else float("nan")

    @property
    def candidates_per_image(self) -> float:
        """Candidates drawn per kept image: the sampling cost relative to plain sampling."""
        return self.drawn / self.accepted if self.accepted else float("nan")

    def __add__(self, other: "RejectionStats") -> "RejectionStats":
        return RejectionStats(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))

    def to_dict(self) -> dict:
        return {**asdict(self), "dropped": self.dropped, "acceptance_rate": self.acceptance_rate,
                "candidates_per_image": self.candidates_per_image}


def reject_block(draw: Draw, classify: Classify, labels_B: np.ndarray, seed: int, *, threshold: float,
                 max_candidates: int) -> tuple[np.ndarray, np.ndarray, RejectionStats]:
    """Rejection-sample one block. Returns (uint8 (n_kept, H, W, 3) accepted images in block order, keep (B,) bool:
    which of the block's images were kept, stats)."""
    if max_candidates < 1:
        raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")
    labels_B = np.asarray(labels_B, np.int64)
    B = len(labels_B)
    pending = np.arange(B)
    keep = np.zeros(B, bool)
    out = None
    stats = RejectionStats(requested=B)
    for r in range(max_candidates):
        if not len(pending):
            break
        imgs = draw(labels_B[pending], candidate_seed(seed, r))
        if out is None:
            out = np.empty((B, *imgs.shape[1:]), np.uint8)
        prob = np.asarray(classify(imgs, labels_B[pending]), np.float64).reshape(-1)
        if prob.shape != (len(pending),):
            raise ValueError(f"the classifier returned {prob.shape[0]} probabilities for {len(pending)} images")
        ok = prob >= threshold
        out[pending[ok]] = imgs[ok]
        keep[pending[ok]] = True
        stats.drawn += len(pending)
        pending = pending[~ok]
    stats.accepted = int(keep.sum())
    return (out[keep] if out is not None else np.zeros((0, 0, 0, 3), np.uint8)), keep, stats


__all__ = ["RejectionStats", "candidate_seed", "reject_block"]
