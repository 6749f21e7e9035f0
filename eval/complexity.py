"""Analytic generation cost of VAR and of the raster-scan AR baseline (paper Appendix B), in FLOPs.

Counted per image for the transformer only (the tokenizer decode is the same for both and excluded), 2 FLOPs per
multiply-add, with the KV cache the samplers use. A block processing one new token that attends to c visible
tokens (itself included) costs

    linear: 2 * (3C^2 [qkv] + C^2 [proj] + 2 r C^2 [fc1, fc2]) = (8 + 4r) C^2     (24 C^2 at mlp_ratio r = 4)
    attention: 2 c C [q k^T] + 2 c C [attn v]                  = 4 c C

plus the head 2 C V per token, VAR's word embedding 2 Cvae C per token, and the AdaLN modulation 12 C^2 per block
(6 C outputs from C inputs; 4 C^2 for the head's), once per image. VAR's token at scale k sees c = sum_{j<=k} pn_j^2 (block-causal
mask); AR's token t (0-based) sees c = t + 1. `cfg_batch` = 2 as both samplers run the conditional and the
unconditional halves. Softmax, norms and element-wise ops (O(c) or O(C) per token) are left out.

`paper_attention_cost` is Appendix B's counting instead: every step recomputes full self-attention over all its
tokens so far (no KV cache): AR sum_{i=1}^{n^2} i^2 = O(n^6), VAR sum_k (sum_{j<=k} pn_j^2)^2 = O(n^4).
"""
from __future__ import annotations

import math


def _visible_counts(cfg) -> list[int]:
    """c for every generated token, in order."""
    if hasattr(cfg, "z_channels"):                       # VARConfig: block-causal over scales
        out, total = [], 0
        for pn in cfg.patch_nums:
            total += pn * pn
            out += [total] * (pn * pn)
        return out
    return list(range(1, cfg.seq_len + 1))              # ARConfig: causal over raster positions


def generation_flops(cfg, cfg_batch: int = 2) -> float:
    """Transformer FLOPs to generate one image with the KV-cached sampler (see the module docstring)."""
    C, D, V, r = cfg.embed_dim, cfg.depth, cfg.vocab_size, cfg.mlp_ratio
    cs = _visible_counts(cfg)
    per_token_linear = D * (8 + 4 * r) * C * C + 2 * C * V
    if hasattr(cfg, "z_channels"):
        per_token_linear += 2 * cfg.z_channels * C
    attention = D * 4 * C * sum(cs)
    adaln = (D * 12 + 4) * C * C if cfg.adaln else 0      # blocks' (6C) and the head's (2C) modulation
    return float(cfg_batch * (len(cs) * per_token_linear + attention + adaln))


def attention_flops(cfg, cfg_batch: int = 2) -> float:
    """The attention part of `generation_flops` (q k^T and attn v)."""
    return float(cfg_batch * cfg.depth * 4 * cfg.embed_dim * sum(_visible_counts(cfg)))


def paper_attention_cost(kind: str, patch_nums: tuple[int, ...]) -> float:
    """Appendix B's unit count for a token map of side n = patch_nums[-1] (AR: n^2 raster steps)."""
    if kind == "ar":
        N = patch_nums[-1] ** 2
        return N * (N + 1) * (2 * N + 1) / 6              # sum_{i=1}^{N} i^2
    total, cost = 0, 0.0
    for pn in patch_nums:
        total += pn * pn
        cost += total ** 2
    return cost


def var_patch_nums(n: int) -> tuple[int, ...]:
    """A VAR scale schedule ending at side n, growing about 1.35x per scale after 1..4 (as (1,2,3,4,5,6,8,10,13,16)
    and (1,2,3,4,6,9,13,18,24,32) of the paper): used to scale n in the complexity benchmark."""
    pns = [p for p in (1, 2, 3, 4) if p < n]
    while pns and math.ceil(pns[-1] * 1.35) < n:
        pns.append(math.ceil(pns[-1] * 1.35))
    return tuple(pns) + (n,)


def fit_exponent(ns, ys) -> float:
    """Least-squares slope of log y against log n (the exponent of y ~ n^e)."""
    lx = [math.log(x) for x in ns]
    ly = [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)
