"""Evaluation sections: the offline evaluation network (`evalnet`), scoring (`score`) and the depth sweep of the
scaling laws (`scaling`). Torch-free, like var/config (validating params must not import torch)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from var.config import Config, SamplerConfig, TrainConfig, check_sha256, param
from var.config.sampling import without_rejection

SEED = dict(ge=0, lt=2 ** 63)
BOOTSTRAPPED = ("fd", "kid", "precision", "recall", "density", "coverage", "is")   # metrics with intervals


@dataclass(frozen=True)
class EvalNetConfig(Config):
    """params.yaml section `evalnet` (device and threads are runtime choices, not config)."""
    width: int = param(16, ge=1)          # channels of the first stage; stages use width, 2*width, 4*width
    feature_dim: int = param(128, ge=1)   # D: the penultimate (feature) width used for FID / precision-recall
    epochs: int = param(5, ge=1)
    batch_size: int = param(128, ge=1)
    lr: float = param(6e-3, gt=0, le=10)  # AdamW peak lr; linear warmup over 10% of steps, cosine decay to 0
    weight_decay: float = param(5e-4, ge=0, le=10)
    seed: int = param(0, **SEED)
    augment: bool = True                  # random horizontal flips and 2-px-padded random crops


@dataclass(frozen=True)
class ScoreConfig(Config):
    """params.yaml `score`: which feature extractor FID/IS/precision/recall are computed with."""
    extractor: str = param("evalnet", choices=("evalnet", "inception"))   # inception needs inception_weights
    inception_weights: str = ""  # path of the torch-fidelity Inception-v3 weights (only for 'inception')
    inception_weights_sha256: str = ""  # optional: its full sha256 (else the file name's 6726825d prefix is checked)
    device: str = "auto"         # 'auto' | 'cpu' | 'cuda' | 'cuda:N'
    batch_size: int = param(200, ge=1)   # feature-extraction batch; bounds memory only
    nearest_k: int = param(3, ge=1)      # k of the k-NN manifolds of precision/recall (Kynkaanniemi et al. 2019)
    reference_batch: str = ""    # ADM reference batch .npz (e.g. VIRTUAL_imagenet256_labeled.npz): the real side of
                                 # the generated-sample scores instead of data.val (its stored mu/sigma give FID)
    # Optional cross-check of the Inception FID by clean-fid, legacy_tensorflow mode (eval/cleanfid_check.py),
    # reported as fid_cleanfid_legacy_tf next to fid_inception, never in its place.
    cleanfid_crosscheck: bool = False
    cleanfid_weights: str = ""   # local inception-2015-12-05.pt (clean-fid's TorchScript Inception; never downloaded)
    cleanfid_weights_sha256: str = ""  # its full sha256, needed to load it (a TorchScript archive runs code)
    # Uncertainty (eval/metric_suite.py): every score as mean +- sd over `seeds` sampling seeds (the block seeds
    # change with the seed), bootstrap intervals over the generated set of the first seed, KID, density/coverage
    # and the FD sample-size curve with its extrapolation FD_inf.
    seeds: int = param(1, ge=1)
    bootstrap_resamples: int = param(100, ge=0)        # 0: no intervals
    bootstrap_level: float = param(0.95, gt=0, lt=1)
    bootstrap_metrics: tuple[str, ...] = BOOTSTRAPPED
    fd_curve_points: int = param(15, ge=0)             # FD at this many generated-set sizes (0: no curve, no FD_inf)
    # A second feature space, reported as fd_dinov2 / kid_dinov2 (never "FID"): DINOv2 ViT-L/14 from a local
    # weights file in the official release format (eval/dinov2.py; never downloaded).
    extra_extractors: tuple[str, ...] = ()
    dinov2_weights: str = ""
    dinov2_weights_sha256: str = ""

    def __post_init__(self):
        super().__post_init__()
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"score.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.extractor == "inception" and not self.inception_weights:
            raise ValueError("score.extractor 'inception' needs score.inception_weights (a local file)")
        if self.cleanfid_crosscheck and self.extractor != "inception":
            raise ValueError("score.cleanfid_crosscheck cross-checks the Inception FID: it needs score.extractor "
                             "'inception'")
        if self.cleanfid_crosscheck and not self.cleanfid_weights:
            raise ValueError("score.cleanfid_crosscheck needs score.cleanfid_weights (a local inception-2015-12-05.pt)")
        check_sha256(self.inception_weights_sha256, "score.inception_weights_sha256")
        check_sha256(self.dinov2_weights_sha256, "score.dinov2_weights_sha256")
        bad = sorted(set(self.extra_extractors) - {"dinov2"})
        if bad:
            raise ValueError(f"score.extra_extractors: {bad} unknown (available: dinov2)")
        if "dinov2" in self.extra_extractors and not self.dinov2_weights:
            raise ValueError("score.extra_extractors has dinov2: set score.dinov2_weights to a local "
                             "dinov2_vitl14_pretrain.pth")
        bad = sorted(set(self.bootstrap_metrics) - set(BOOTSTRAPPED))
        if bad:
            raise ValueError(f"score.bootstrap_metrics: {bad} unknown (choose from {', '.join(BOOTSTRAPPED)})")
        check_sha256(self.cleanfid_weights_sha256, "score.cleanfid_weights_sha256")


FRACTION = dict(gt=0, le=1)


@dataclass(frozen=True)
class ScalingConfig(Config):
    """params.yaml `scaling`: the depth sweep of Fig. 5/6 and the sample grid of Fig. 7."""
    depths: tuple[int, ...] = param((2, 3, 4, 5, 6, 8), ge=1)   # one model per depth; width = width_per_depth * depth
    width_per_depth: int = param(16, ge=1)                      # the paper's 64, shrunk for a CPU; heads = depth
    train: TrainConfig = field(default_factory=TrainConfig)    # the same recipe for every depth (as the paper)
    eval_fractions: tuple[float, ...] = param((0.1, 0.2, 0.4, 0.6, 0.8, 1.0), **FRACTION)  # evaluate L, Err at
    #                                                these fractions of the run: the checkpoints of the C_min frontier
    eval_max_images: int = param(0, ge=0)                       # >0: evaluate on the first this many val sequences
    fig7_depths: tuple[int, ...] = param((), ge=1)              # rows of Fig. 7 (empty: smallest, middle, largest)
    fig7_fractions: tuple[float, ...] = param((0.2, 0.6, 1.0), **FRACTION)   # columns: fractions of the tokens
    fig7_classes: tuple[int, ...] = param((0, 1, 2, 3), ge=0)   # one sample per class in each cell
    fig7_sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(cfg=1.5))   # every cell's sampler
    fig7_teacher_force_scales: int = param(1, ge=0)   # first scales copied from a val image of the class (shared
    #                                                   coarse layout across cells, as the paper's Fig. 7); 0 = none
    seed: int = param(0, **SEED)

    def __post_init__(self):
        super().__post_init__()
        if not self.depths or len(set(self.depths)) != len(self.depths):
            raise ValueError("scaling.depths must be distinct depths >= 1")
        if any(f not in self.eval_fractions for f in self.fig7_fractions):
            raise ValueError("scaling.fig7_fractions must be a subset of scaling.eval_fractions (snapshots are "
                             "saved there)")
        if any(d not in self.depths for d in self.fig7_depths):
            raise ValueError("scaling.fig7_depths must be a subset of scaling.depths")
        without_rejection(self.fig7_sampler, "scaling.fig7_sampler")

    @property
    def rows_fig7(self) -> tuple[int, ...]:
        d = sorted(self.depths)
        return self.fig7_depths or tuple(dict.fromkeys((d[0], d[len(d) // 2], d[-1])))
