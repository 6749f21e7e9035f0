"""The transformer blocks of VAR and the AR baseline: attention (SDPA with an additive mask, or FlexAttention with
a block mask), the FFN, drop path, the AdaLN block (paper Sec. 3.3: class-conditioned scale and shift of every
block) and the AdaLN before the head. Module and parameter names follow the released checkpoints.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .config import VARConfig

_FLEX = None


def flex_attention(q, k, v, block_mask, scale):
    """FlexAttention (torch >= 2.5) compiled once per process: the fused kernel skips the fully masked blocks of
    the block-causal mask instead of adding -inf to them. Eager flex_attention is a slow reference, so on CPU it
    is compiled too (Inductor's CPU template)."""
    global _FLEX
    if _FLEX is None:
        from torch.nn.attention.flex_attention import flex_attention as fa
        _FLEX = torch.compile(fa, dynamic=False)
    return _FLEX(q, k, v, block_mask=block_mask, scale=scale)


def _with_compile_limit(fn, limit: int = 64):
    """fn with dynamo's per-function recompile limit raised to `limit` during its calls only (not process-wide)."""
    import torch._dynamo.config as dynamo_config
    key = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"

    def call(*args, **kwargs):
        with dynamo_config.patch(**{key: max(limit, getattr(dynamo_config, key))}):
            return fn(*args, **kwargs)
    return call


@torch.compiler.disable
def drop_path_masks(B: int, probs: list[float], device,
                    keep_KB: torch.Tensor | None = None) -> list[torch.Tensor | None]:
    """Per-sample stochastic-depth multipliers (B, 1, 1) (0 or 1/keep, float32), one per entry of `probs`, drawn
    from the global RNG in order. Drawn eagerly, outside any torch.compile graph: a random op inside a graph may
    be recomputed in the backward under an activation-memory budget, and a second draw would give other masks
    (measured: wrong gradients).
    keep_KB (len(probs), B) bool: given keep decisions instead of draws (InjectedRandomness); the same 1/keep
    scaling, so a kept sample gets the multiplier a draw would have given it, bit for bit."""
    out = []
    for i, p in enumerate(probs):
        if p == 0.0:
            out.append(None)
            continue
        keep = 1 - p
        if keep_KB is None:
            m = torch.empty((B, 1, 1), device=device).bernoulli_(keep)
        else:
            m = keep_KB[i].to(device=device, dtype=torch.float32, copy=True).view(B, 1, 1)
        out.append(m.div_(keep))
    return out


@dataclass(frozen=True)
class InjectedRandomness:
    """Test-only: one training forward's random decisions, given instead of drawn (VAR.forward `injected`).

    For replaying a recorded run of another implementation (tests/test_train_parity.py), whose random streams
    cannot be reproduced. Production code never passes it; without it nothing changes.
    label_B: (B,) int64, the labels after classifier-free-guidance dropout (num_classes = the null class); used as
    they are, no dropout is drawn. drop_path_keep: (depth, 2, B) bool, keep decision per block, branch (0 attention,
    1 FFN) and sample; rows of blocks whose drop-path rate is 0 are not read. Kept branches are scaled by 1/keep_prob
    as drawn masks are (drop_path_masks)."""
    label_B: torch.Tensor
    drop_path_keep: torch.Tensor


class DropPath(nn.Module):
    """Stochastic depth per sample (training only). `mask`: this call's multiplier from drop_path_masks (VAR
    draws all of a forward's masks up front, block by block, in the order the calls would draw them)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x, mask: torch.Tensor | None = None):
        # `training` first: in eval mode the rate is never read, so torch.compile does not specialise on it (with
        # float specialisation, as in torch 2.11, every block's own rate was a recompile, and after 8 the engine's
        # shared compiled block fell back to eager: measured on an H200)
        if not self.training:
            return x
        if mask is None:    # with a mask given the rate is not read either (one compiled graph for every block)
            if self.p == 0.0:
                return x
            mask = drop_path_masks(x.shape[0], [self.p], x.device)[0]
        return x * mask.to(x.dtype).view((x.shape[0],) + (1,) * (x.ndim - 1))


class FFN(nn.Module):
    def __init__(self, C: int, hidden: int, drop: float):
        super().__init__()
        self.fc1 = nn.Linear(C, hidden)
        self.fc2 = nn.Linear(hidden, C)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()
        # Fast paths (var/engine.py) set this on their inference copy: on CUDA, fc1's bias and tanh-GELU run in the
        # cuBLASLt GEMM epilogue (torch._addmm_activation), on the fp32 accumulator, instead of a separate pass over
        # the 4C-wide activation. The same function to rounding; off by default. (On CPU _addmm_activation uses
        # the erf GELU, so the fused call is taken on CUDA only.)
        self.fused_gelu = False

    def forward(self, x):
        if self.fused_gelu and x.is_cuda:
            h = torch._addmm_activation(self.fc1.bias, x.reshape(-1, x.shape[-1]), self.fc1.weight.t(),
                                        use_gelu=True).view(*x.shape[:-1], -1)
        else:
            h = F.gelu(self.fc1(x), approximate="tanh")
        return self.drop(self.fc2(h))


class SelfAttention(nn.Module):
    """Multi-head attention with q/k L2 normalisation and a learnable per-head scale clamped at ln(100).

    With attn_l2_norm off (ablation), the softmax scale is plain_attn_scale/sqrt(head_dim): 1.0 by default
    (ordinary attention); checkpoints imported from the reference get its 0.25.
    A key/value cache over earlier scales serves KV-cached sampling.
    """

    def __init__(self, cfg: VARConfig, drop_rate: float):
        super().__init__()
        C, H = cfg.embed_dim, cfg.num_heads
        self.num_heads, self.head_dim = H, C // H
        self.attn_l2_norm = cfg.attn_l2_norm
        if self.attn_l2_norm:
            self.scale = 1.0
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, H, 1, 1), 4.0).log())
            self.max_scale_mul = math.log(100)
        else:
            self.scale = cfg.plain_attn_scale / math.sqrt(self.head_dim)
        self.mat_qkv = nn.Linear(C, 3 * C, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(C))
        self.v_bias = nn.Parameter(torch.zeros(C))
        self.register_buffer("zero_k_bias", torch.zeros(C))
        self.proj = nn.Linear(C, C)
        self.proj_drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.attn_drop = cfg.attn_drop_rate

    def forward(self, x_BLC: torch.Tensor, attn_bias: torch.Tensor | None,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None, pos: int = 0) -> torch.Tensor:
        """kv: this layer's preallocated (k, v) cache buffers (B, H, L_max, hd). The new keys/values are written
        at [pos, pos + L) and the queries attend to all of [0, pos + L) (earlier scales and the current one)."""
        B, L, C = x_BLC.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(x_BLC, self.mat_qkv.weight, bias).view(B, L, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)                       # each (B, H, L, hd)
        if self.attn_l2_norm:
            scale_mul_1H11 = self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp()
            q = F.normalize(q, dim=-1).mul(scale_mul_1H11)
            k = F.normalize(k, dim=-1)
        if kv is not None:
            k_buf, v_buf = kv
            k_buf[:, :, pos:pos + L] = k
            v_buf[:, :, pos:pos + L] = v
            k, v = k_buf[:, :, :pos + L], v_buf[:, :, :pos + L]
        if attn_bias is not None and not isinstance(attn_bias, torch.Tensor):   # a flex BlockMask
            if self.training and self.attn_drop > 0:
                raise ValueError("attention 'flex' has no attention dropout; use attention 'sdpa'")
            out = flex_attention(q, k, v, attn_bias, self.scale)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=None if attn_bias is None else attn_bias.to(q.dtype),
                dropout_p=self.attn_drop if self.training else 0.0, scale=self.scale)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, L, C)))


class AdaLNSelfAttn(nn.Module):
    """x += g1 * Attn(LN(x)(1+s1)+b1); x += g2 * FFN(LN(x)(1+s2)+b2), with (g, s, b) from the class (AdaLN).

    Three modes: per-block AdaLN (`ada_lin`), shared AdaLN (`ada_gss` added to one shared projection), and AdaLN
    off (ablation): LayerNorm with learnable affine and no class modulation.
    """

    def __init__(self, cfg: VARConfig, block_idx: int, drop_path: float):
        super().__init__()
        C = cfg.embed_dim
        self.C, self.adaln, self.shared_aln = C, cfg.adaln, cfg.shared_aln
        self.attn = SelfAttention(cfg, cfg.drop_rate)
        self.ffn = FFN(C, round(C * cfg.mlp_ratio), cfg.drop_rate)
        self.drop_path = DropPath(drop_path)
        if not cfg.adaln:
            self.ln1 = nn.LayerNorm(C, eps=cfg.norm_eps)
            self.ln2 = nn.LayerNorm(C, eps=cfg.norm_eps)
        else:
            self.ln_wo_grad = nn.LayerNorm(C, eps=cfg.norm_eps, elementwise_affine=False)
            if cfg.shared_aln:
                self.ada_gss = nn.Parameter(torch.randn(1, 1, 6, C) / C ** 0.5)
            else:
                self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C))

    def modulation(self, cond_BD_or_gss: torch.Tensor):
        """Six (B, 1, C) tensors gamma1, gamma2, scale1, scale2, shift1, shift2."""
        if self.shared_aln:
            return (self.ada_gss + cond_BD_or_gss).unbind(2)
        return self.ada_lin(cond_BD_or_gss).view(-1, 1, 6, self.C).unbind(2)

    def forward(self, x_BLC, cond_BD_or_gss, attn_bias, kv=None, pos: int = 0, mods=None, dp_masks=(None, None),
                recompute_ffn: bool = False):
        """mods: this block's modulation precomputed by `modulation` (it depends only on the class, so the
        sampler computes it once per image instead of once per scale). dp_masks: the two drop-path masks.
        recompute_ffn (training memory): the FFN's 4C-wide activations are not kept but recomputed in the backward."""
        m1, m2 = dp_masks
        ffn = partial(checkpoint, self.ffn, use_reentrant=False) if recompute_ffn else self.ffn
        if not self.adaln:
            x_BLC = x_BLC + self.drop_path(self.attn(self.ln1(x_BLC), attn_bias, kv, pos), m1)
            return x_BLC + self.drop_path(ffn(self.ln2(x_BLC)), m2)
        g1, g2, s1, s2, b1, b2 = mods if mods is not None else self.modulation(cond_BD_or_gss)
        x_BLC = x_BLC + self.drop_path(self.attn(self.ln_wo_grad(x_BLC).mul(s1.add(1)).add_(b1), attn_bias,
                                                 kv, pos).mul_(g1), m1)
        return x_BLC + self.drop_path(ffn(self.ln_wo_grad(x_BLC).mul(s2.add(1)).add_(b2)).mul(g2), m2)


def _call_block(block: AdaLNSelfAttn, x_BLC, cond, attn_bias, dp_masks, recompute_ffn: bool):
    return block(x_BLC, cond, attn_bias, dp_masks=dp_masks, recompute_ffn=recompute_ffn)


def compiled_block_fn():
    """A block_fn for VAR.forward: AdaLNSelfAttn.forward through torch.compile, one graph for every block (the
    weights are graph inputs). Dynamo's per-function recompile limit is raised while it runs: blocks with and
    without a drop-path mask, and the train/eval modes, are separate graphs."""
    fwd = _with_compile_limit(torch.compile(AdaLNSelfAttn.forward))

    def call(block, x_BLC, cond, attn_bias, dp_masks, recompute_ffn: bool):
        return fwd(block, x_BLC, cond, attn_bias, None, 0, None, dp_masks, recompute_ffn)
    return call


class AdaLNBeforeHead(nn.Module):
    def __init__(self, C: int, D: int, eps: float, adaln: bool):
        super().__init__()
        self.C, self.adaln = C, adaln
        if adaln:
            self.ln_wo_grad = nn.LayerNorm(C, eps=eps, elementwise_affine=False)
            self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(D, 2 * C))
        else:
            self.ln = nn.LayerNorm(C, eps=eps)

    def forward(self, x_BLC, cond_BD):
        if not self.adaln:
            return self.ln(x_BLC)
        scale, shift = self.ada_lin(cond_BD).view(-1, 1, 2, self.C).unbind(2)
        return self.ln_wo_grad(x_BLC).mul(scale.add(1)).add_(shift)
