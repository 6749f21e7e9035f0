"""Sampling sections: the sampler settings every generation uses (`SamplerConfig`, one schema embedded as `sampler:`
in `sample`, `rows.<r>`, `zeroshot` and `scaling.fig7_sampler`), how the `sample` stage draws images (`sample`) and
the zero-shot editing figures (`zeroshot`). Torch-free (see var/config/loader.py)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .loader import Config, check_sha256, param

CFG_SCHEDULES = ("linear", "constant")
# Classifiers a rejection-sampled row can load from a torchvision state dict (eval/classifiers.py).
TORCHVISION_CLASSIFIERS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


@dataclass(frozen=True)
class RejectionConfig(Config):
    """`sampler.rejection`: rejection sampling (the "-re" rows of the paper's Table 1). Each image of a block draws
    candidates until a classifier gives its target class a probability >= `threshold`, at most `max_candidates`;
    an image with no accepted candidate is dropped from the samples and counted (var/rejection.py)."""
    threshold: float = param(0.0, ge=0, le=1)   # 0 = off (every first candidate would be accepted: plain sampling)
    max_candidates: int = param(4, ge=1)        # candidates per image at most, the first included
    # '' = the setting's evaluation network (eval/evalnet.py, an input of the job); else a local torchvision
    # classifier state dict (e.g. ImageNet ResNet-50 weights), loaded with weights_only. Never downloaded.
    classifier_weights: str = ""
    classifier_arch: str = param("resnet50", choices=TORCHVISION_CLASSIFIERS)   # architecture of classifier_weights
    classifier_weights_sha256: str = ""        # optional full sha256 pin of classifier_weights (recorded either way)

    def __post_init__(self):
        super().__post_init__()
        check_sha256(self.classifier_weights_sha256, "classifier_weights_sha256")

    @property
    def enabled(self) -> bool:
        return self.threshold > 0


@dataclass(frozen=True)
class SamplerConfig(Config):
    """How tokens are drawn (paper Sec. 4; var/sampling.py). The class defaults are plain sampling (no guidance, no
    filtering); each section that embeds it sets its own defaults (`sample`: the reference's ImageNet settings)."""
    cfg: float = param(0.0, ge=0)   # classifier-free guidance scale: 0 = off (the unconditional half is ignored)
    # linear: the reference's ramp, t = cfg * k / (K - 1) at scale k (none at the first, cfg at the last);
    # constant: t = cfg at every scale (AR: at every token)
    cfg_schedule: str = param("linear", choices=CFG_SCHEDULES)
    top_k: int = param(0, ge=0)     # 0 = off; at most the vocabulary (checked against the tokenizer)
    top_p: float = param(0.0, ge=0, lt=1)   # 0 = off
    more_smooth: bool = False       # Gumbel-softmax smoothing of the token embedding (visual quality, worse FID)
    rejection: RejectionConfig = field(default_factory=RejectionConfig)

    def kwargs(self) -> dict:
        """The keyword arguments of var.sampling.sample / var.ar.sample_ar / GenerationEngine.generate."""
        return dict(cfg=self.cfg, cfg_schedule=self.cfg_schedule, top_k=self.top_k, top_p=self.top_p,
                    more_smooth=self.more_smooth)


def without_rejection(sampler: SamplerConfig, where: str) -> None:
    """Rejection sampling is a row variant (rows.<r>.sampler.rejection), labelled in the row tables; the sections
    whose outputs carry no such label refuse it."""
    if sampler.rejection.enabled:
        raise ValueError(f"{where}.rejection: rejection sampling is only for table rows (rows.<name>.sampler."
                         f"rejection), whose tables label it; set threshold 0 here")


@dataclass(frozen=True)
class SampleConfig(Config):
    """params.yaml `sample`: how the `sample` stage draws images (paper Sec. 4 / reference defaults)."""
    per_class: int = param(50, ge=1)         # images per class (50 000 for ImageNet's 1000 classes, the paper's FID)
    batch_size: int = param(50, ge=1)        # images per sampler call (each block is seeded from (seed, block index))
    # reference ImageNet 256 settings: cfg 1.5, top-k 900, top-p 0.96
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(cfg=1.5, top_k=900, top_p=0.96))
    seed: int = param(0, ge=0, lt=2 ** 63)
    # How the images are computed (var/engine.py), not what is sampled: `fast` uses the GenerationEngine (static KV
    # cache, CUDA graphs, fused GELU epilogue, matmul upsampling: the plain sampler's function, to float rounding);
    # `precision: bf16` stores the transformer and decoder in bf16 once (CUDA; quantiser and f_hat stay fp32;
    # logits within bf16 rounding of fp32, so a few tokens differ); `compile` adds torch.compile fusion.
    # Every VAR generation of the run uses it: the `sample` stage, table rows, Fig. 7 and the zero-shot figures.
    fast: bool = False
    precision: str = param("fp32", choices=("fp32", "bf16"))
    compile: bool = False

    def __post_init__(self):
        super().__post_init__()
        if (self.precision != "fp32" or self.compile) and not self.fast:
            raise ValueError("sample.precision bf16 and sample.compile need sample.fast: true (the engine)")
        without_rejection(self.sampler, "sample.sampler")


BOX = dict(ge=0, le=1)


@dataclass(frozen=True)
class ZeroShotConfig(Config):
    """params.yaml `zeroshot`: the zero-shot figures of the `zeroshot` stage (boxes are (top, left, bottom, right)
    fractions of the image side)."""
    model: str = ""                                          # a key of `models` (empty: the last table1 model)
    num_images: int = param(6, ge=1)                         # source val images per figure (distinct classes)
    inpaint_box: tuple[float, float, float, float] = param((0.25, 0.25, 0.75, 0.75), **BOX)    # generated
    outpaint_keep: tuple[float, float, float, float] = param((0.25, 0.25, 0.75, 0.75), **BOX)  # kept; rest generated
    edit_box: tuple[float, float, float, float] = param((0.25, 0.25, 0.75, 0.75), **BOX)       # generated, new class
    edit_class_offset: int = param(1, ge=0)                  # edited class = (source class + offset) mod classes
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(cfg=1.5))
    seed: int = param(0, ge=0, lt=2 ** 63)

    def __post_init__(self):
        super().__post_init__()
        for b in (self.inpaint_box, self.outpaint_keep, self.edit_box):
            if not (b[0] < b[2] and b[1] < b[3]):
                raise ValueError(f"zeroshot boxes are (top, left, bottom, right) fractions in [0, 1], got {b}")
        without_rejection(self.sampler, "zeroshot.sampler")
