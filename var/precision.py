"""Float32 precision control for computations whose outputs must not depend on the GPU's TF32 default.

cuDNN convolutions run in TF32 by default on Ampere and later (10-bit mantissa inputs). For features that feed a
metric, and for the token maps a VAR is trained on, that is a different function: on a ch160 tokenizer trained 756
steps, TF32 convolutions changed 6.0% of the tokens against strict fp32 (benchmarks/explore/
perf7_trained_encode_agreement.py; docs/decisions.md, docs/performance.md). CPUs compute float32 as IEEE float32
either way.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def fp32_precision(allow_tf32: bool = False) -> Iterator[None]:
    """Within the block, float32 convolutions and matmuls run as IEEE float32 ("ieee"), or in TF32 if allowed;
    the previous settings are restored on exit."""
    conv, mm = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    saved = conv.fp32_precision, mm.fp32_precision
    conv.fp32_precision = mm.fp32_precision = "tf32" if allow_tf32 else "ieee"
    try:
        yield
    finally:
        conv.fp32_precision, mm.fp32_precision = saved


__all__ = ["fp32_precision"]
