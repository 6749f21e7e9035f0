"""Sampling sections: how the `sample` stage draws images (`sample`) and the zero-shot editing figures
(`zeroshot`). Torch-free (see var/config/loader.py)."""
from __future__ import annotations

from dataclasses import dataclass

from .loader import Config, param


@dataclass(frozen=True)
class SampleConfig(Config):
    """params.yaml `sample`: how the `sample` stage draws images (paper Sec. 4 / reference defaults)."""
    per_class: int = param(50, ge=1)         # images per class (50 000 for ImageNet's 1000 classes, the paper's FID)
    batch_size: int = param(50, ge=1)        # images per sampler call (each block is seeded from (seed, block index))
    cfg: float = param(1.5, ge=0)    # classifier-free guidance scale (reference demo: 1.5 at 256 px)
    top_k: int = param(900, ge=0)            # 0 = off; at most the vocabulary (checked against the tokenizer)
    top_p: float = param(0.96, ge=0, lt=1)   # 0 = off
    more_smooth: bool = False    # Gumbel-softmax smoothing of the token embedding (visual quality, worse FID)
    seed: int = param(0, ge=0, lt=2 ** 63)
    # How the images are computed (var/engine.py), not what is sampled: `fast` uses the GenerationEngine (static KV
    # cache, CUDA graphs, fused GELU epilogue, matmul upsampling: the plain sampler's function, to float rounding);
    # `precision: bf16` stores the transformer and decoder in bf16 once (CUDA; quantiser and f_hat stay fp32;
    # logits within bf16 rounding of fp32, so a few tokens differ); `compile` adds torch.compile fusion.
    fast: bool = False
    precision: str = param("fp32", choices=("fp32", "bf16"))
    compile: bool = False

    def __post_init__(self):
        super().__post_init__()
        if (self.precision != "fp32" or self.compile) and not self.fast:
            raise ValueError("sample.precision bf16 and sample.compile need sample.fast: true (the engine)")


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
    cfg: float = param(1.5, ge=0)
    top_k: int = param(0, ge=0)
    top_p: float = param(0.0, ge=0, lt=1)
    seed: int = param(0, ge=0, lt=2 ** 63)

    def __post_init__(self):
        super().__post_init__()
        for b in (self.inpaint_box, self.outpaint_keep, self.edit_box):
            if not (b[0] < b[2] and b[1] < b[3]):
                raise ValueError(f"zeroshot boxes are (top, left, bottom, right) fractions in [0, 1], got {b}")
