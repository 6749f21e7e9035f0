"""The next-token training loss of VAR and the AR baseline, and its compiled variants: per-token cross entropy in
float32, averaged with uniform weights 1/L over the tokens, then over the batch (the reference's loss). `make_loss_fn`
builds the function a TrainConfig asks for (eager, compiled per step or per block, activation recompute).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from var.blocks import compiled_block_fn
from var.config import TrainConfig


def token_ce_BL(logits_BLV: torch.Tensor, gt_BL: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-token cross entropy (B, L), computed in float32."""
    B, L, V = logits_BLV.shape
    return F.cross_entropy(logits_BLV.float().reshape(-1, V), gt_BL.reshape(-1), reduction="none",
                           label_smoothing=label_smoothing).view(B, L)


def mean_token_loss(loss_BL: torch.Tensor) -> torch.Tensor:
    """Uniform weights 1/L over all tokens then the batch mean (the reference's `loss.mul(lw).sum(-1).mean()`)."""
    L = loss_BL.shape[1]
    return loss_BL.mul(1.0 / L).sum(dim=-1).mean()


def _loss_from_logits(logits_BLV: torch.Tensor, idx_BL: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    return mean_token_loss(token_ce_BL(logits_BLV, idx_BL, label_smoothing))


def forward_loss(net, label_B: torch.Tensor, x_BLCv: torch.Tensor, idx_BL: torch.Tensor, label_gen,
                 label_smoothing: float, use_bf16: bool, recompute_blocks: int = 0,
                 recompute_ffn: bool = False, block_fn=None, loss_from_logits=_loss_from_logits,
                 injected=None, return_logits: bool = False):
    """Mean token loss of a (chunk of a) batch; label_gen None: a model without a label-dropout generator.
    recompute_* / block_fn: activation checkpointing and the block call inside VAR.forward (TrainConfig). This
    whole function is what TrainConfig.compile (compile_scope 'step') hands to torch.compile.
    injected: test-only recorded randomness for VAR.forward (var.blocks.InjectedRandomness).
    return_logits: (loss, logits_BLV) instead of the loss, for per-scale statistics (train_step `metrics`)."""
    kw = {} if label_gen is None else {"generator": label_gen}
    if recompute_blocks or recompute_ffn:
        kw.update(recompute_blocks=recompute_blocks, recompute_ffn=recompute_ffn)
    if block_fn is not None:
        kw["block_fn"] = block_fn
    if injected is not None:
        kw["injected"] = injected
    with torch.autocast(x_BLCv.device.type, dtype=torch.bfloat16, enabled=use_bf16):
        logits_BLV = net(label_B, x_BLCv, **kw)
    loss = loss_from_logits(logits_BLV, idx_BL, label_smoothing)
    return (loss, logits_BLV) if return_logits else loss


def compiled_forward_loss(activation_memory_budget: float = 1.0):
    """forward_loss through torch.compile; the settings apply while it compiles (the partition into saved and
    recomputed activations is decided at the first forward). fallback_random: drop-path and label dropout draw
    from the same RNG streams as eager (Inductor's own philox kernels would draw other masks), so a compiled run
    is the eager run to float rounding."""
    compiled = torch.compile(forward_loss)

    def loss_fn(*args, **kwargs):
        with torch._functorch.config.patch(activation_memory_budget=activation_memory_budget), \
                torch._inductor.config.patch(fallback_random=True):
            return compiled(*args, **kwargs)
    return loss_fn


def blockwise_compiled_forward_loss(activation_memory_budget: float = 1.0):
    """compile_scope 'block': forward_loss eagerly, with each transformer block and the cross entropy through
    torch.compile (var.blocks.compiled_block_fn). Activation recompute then stays eager autograd, which frees
    each recomputed block in the backward before recomputing the next; under one compiled step graph much less is
    freed (measured on CPU, benchmarks/explore/perf4_recompute_cpu_memory.py: recomputing 3 of 6 blocks lowered the
    backward's peak by 12% in one step graph and by 66% here; on an H200, recomputing 8 of 16 blocks lowered the
    step graph's peak by 3.8 GB, here by 13.3 GB). Same function as eager, to float rounding; fallback_random as
    in compiled_forward_loss."""
    block_fn = compiled_block_fn()
    ce = torch.compile(_loss_from_logits)

    def loss_fn(*args, **kwargs):
        with torch._functorch.config.patch(activation_memory_budget=activation_memory_budget), \
                torch._inductor.config.patch(fallback_random=True):
            return forward_loss(*args, **kwargs, block_fn=block_fn, loss_from_logits=ce)
    return loss_fn


def make_loss_fn(cfg: TrainConfig):
    """forward_loss as TrainConfig asks: eager or compiled (per step or per block), with its activation-recompute
    settings bound."""
    if not cfg.compile:
        base = forward_loss
    elif cfg.compile_scope == "block":
        base = blockwise_compiled_forward_loss(cfg.activation_memory_budget)
    else:
        base = compiled_forward_loss(cfg.activation_memory_budget)
    if not (cfg.recompute_blocks or cfg.recompute_ffn):
        return base

    def loss_fn(*args, **kwargs):
        return base(*args, recompute_blocks=cfg.recompute_blocks, recompute_ffn=cfg.recompute_ffn, **kwargs)
    return loss_fn
