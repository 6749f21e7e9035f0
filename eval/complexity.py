"""The one analytic FLOP counter of the project: matrix multiplies of the VAR transformer and of the raster-scan AR
baseline (a multiply-add is 2 FLOPs; LayerNorm, softmax, GELU, biases, the optimizer and the frozen tokenizer are
not counted). It serves the scaling laws' training compute (paper Sec. 5, eval/scaling.py) and Table 3's
generation cost (paper Appendix B).

    F_fwd (one sequence of L tokens) = 2 * N_tok * L                  (per-token weight matmuls)
                                     + 2 * Cvae * C * (L - pn_1^2)    (VAR's word_embed; not the start token; AR's
                                                                       token embedding is a lookup: 0)
                                     + 2 * N_seq                      (per-sequence AdaLN projections)
                                     + 4 * depth * C * P              (attention scores QK^T and A.V)
    N_tok = depth * (4 C^2 + 2 C H) + C V      (qkv 3C^2, proj C^2, fc1+fc2 2CH; head C V), H = mlp hidden
    N_seq = (depth or 1 if shared) * 6 C^2 + 2 C^2   (AdaLN: per block 6C x C, before the head 2C x C; 0 if off)
    P     = query-key pairs the mask admits: VAR sum_k pn_k^2 * (sum_{j<=k} pn_j^2) (block-causal), AR L(L+1)/2

Training compute: C = 3 * F_fwd * sequences (the backward pass costs 2x the forward). Generation of one image with
the KV cache the samplers use does the same matmuls as one teacher-forced pass (each token's linear layers once,
its attention over the tokens it may see), times `cfg_batch` = 2 as both samplers run the conditional and the
unconditional halves. On VAR-d16 at 256 px the training compute per image, 3 * F_fwd, is 895 GFLOP, the 896 G of
ANCHORS.md (tests/test_scaling.py).

`paper_attention_cost` is Appendix B's counting instead: every step recomputes full self-attention over all its
tokens so far (no KV cache): AR sum_{i=1}^{n^2} i^2 = O(n^6), VAR sum_k (sum_{j<=k} pn_j^2)^2 = O(n^4).
"""
from __future__ import annotations

import math


def attention_pairs(patch_nums) -> int:
    """P of a VAR: (query, key) pairs admitted by the block-causal mask (a token sees its own and every coarser
    scale)."""
    P, seen = 0, 0
    for pn in patch_nums:
        seen += pn * pn
        P += pn * pn * seen
    return P


def _is_var(cfg) -> bool:
    return hasattr(cfg, "z_channels")             # VARConfig; ARConfig has no next-scale word embedding


def _pairs(cfg) -> int:
    if _is_var(cfg):
        return attention_pairs(cfg.patch_nums)
    return cfg.seq_len * (cfg.seq_len + 1) // 2   # causal over raster positions


def forward_flops(cfg) -> int:
    """F_fwd: matmul FLOPs of one teacher-forced forward pass over one full sequence (module docstring)."""
    C, d, V = cfg.embed_dim, cfg.depth, cfg.vocab_size
    H = round(C * cfg.mlp_ratio)
    L = cfg.seq_len
    n_tok = d * (4 * C * C + 2 * C * H) + C * V
    n_seq = ((6 * C * C if cfg.shared_aln else d * 6 * C * C) + 2 * C * C) if cfg.adaln else 0
    word = 2 * cfg.z_channels * C * (L - cfg.patch_nums[0] ** 2) if _is_var(cfg) else 0
    return 2 * n_tok * L + word + 2 * n_seq + 4 * d * C * _pairs(cfg)


def train_flops(cfg, sequences: int) -> int:
    """C after `sequences` training sequences (images): forward + backward (2x forward)."""
    return 3 * forward_flops(cfg) * int(sequences)


def generation_flops(cfg, cfg_batch: int = 2) -> float:
    """Transformer FLOPs to generate one image with the KV-cached sampler: one forward pass per guidance half."""
    return float(cfg_batch * forward_flops(cfg))


def attention_flops(cfg, cfg_batch: int = 2) -> float:
    """The attention part of `generation_flops` (q k^T and attn v)."""
    return float(cfg_batch * 4 * cfg.depth * cfg.embed_dim * _pairs(cfg))


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
