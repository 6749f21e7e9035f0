"""VAR (and AR-baseline) training on precomputed token files, resumable and bit-exact on CPU.

Data: a token file (`tokens` stage) holds `idx_NL` (all scales concatenated, coarsest first), `labels_N` and
`patch_nums`. Each batch's teacher-forcing input `x_BLCv = vqvae.idx_to_var_input(idx_Bl)` is computed on the fly
from the token maps (paper Sec. 3.3: the model sees the tokenizer's cumulative f_hat, resized to the next scale).

Determinism: epoch e visits the data in the permutation drawn from (seed, e), so the data order needs no saved
state. Label dropout for CFG draws from a dedicated generator passed to the model (when its forward takes
`generator`), drop-path and dropout from the global torch RNG; both states (and numpy's, python's and CUDA's) are
saved in `state.pt` with the model and optimizer.
Validation runs under `torch.random.fork_rng`, so how often one evaluates never changes the training stream.
A rerun of the same call resumes from `state.pt`; on CPU the result is bitwise identical to an uninterrupted run.

Data parallel (under `torchrun`, see var/distributed.py): the global batch is cut into chunks of
`micro_batch_size`, spread over the ranks and accumulated; each chunk's randomness is seeded from (seed, step,
chunk), so the run does not depend on the GPU count (up to float summation order), and rank 0 saves a state that
resumes under any world size. One process with one chunk per batch runs the single-process path above unchanged.
"""
from __future__ import annotations

import contextlib
import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from var.checkpoint import save_checkpoint
from var.config import NAN_POLICIES, TrainConfig, config_to_dict  # noqa: F401 (re-exported)
from var.distributed import all_reduce_sum, barrier, chunk_bounds, chunk_seed, current_world, my_chunks
from var.loop import LoopPlan, StepOutcome, run_loop
from var.schedule import lr_wd_at
from var.token_data import as_token_data, evaluate_sharded, model_inputs, split_scales
from var.token_loss import forward_loss, make_loss_fn, token_ce_BL

# Parameters whose name contains one of these are never weight-decayed (the reference's `nowd_keys`): learned
# positional / level embeddings, the unconditional class row, and the attention temperature `scale_mul`.
NO_DECAY_KEYS = ("cls_token", "start_token", "task_token", "cfg_uncond", "pos_embed", "pos_1LC", "pos_start",
                 "start_pos", "lvl_embed", "gamma", "beta", "ana_gamma", "ana_beta", "ada_gss", "scale_mul")


SPEED_ONLY_KEYS = ("compile", "compile_scope", "activation_memory_budget", "recompute_blocks", "recompute_ffn")


def param_groups(model: torch.nn.Module) -> list[dict]:
    """Two AdamW groups. No decay for: every parameter with ndim <= 1 (biases, norm gains, 1-D embeddings),
    names ending in 'bias', and names containing a NO_DECAY_KEYS entry (positional/level embeddings, scale_mul);
    every other (weight-matrix) parameter is decayed. `wd_scale` multiplies the scheduled weight decay."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or name.endswith("bias") or any(k in name for k in NO_DECAY_KEYS)
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "wd_scale": 1.0}, {"params": no_decay, "wd_scale": 0.0}]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device, shard: bool = False):
    # foreach/fused kernels change the summation order on some devices; the plain loop is the bit-exact path on CPU.
    fast = device.type == "cuda"
    if shard:   # ZeRO-1: each rank keeps the AdamW states of its share of the parameters (same update)
        from torch.distributed.optim import ZeroRedundancyOptimizer
        return ZeroRedundancyOptimizer(param_groups(model), optimizer_class=torch.optim.AdamW, lr=cfg.peak_lr,
                                       betas=cfg.betas, eps=cfg.eps, weight_decay=0.0, foreach=False, fused=fast)
    return torch.optim.AdamW(param_groups(model), lr=cfg.peak_lr, betas=cfg.betas, eps=cfg.eps,
                             weight_decay=0.0, foreach=False, fused=fast)


def schedule_lengths(cfg: TrainConfig, num_train: int) -> tuple[int, int, float]:
    """(iterations per epoch, total iterations, warm-up iterations) of a run over `num_train` samples at the global
    batch: the reference's iters = ceil(N / B), max_it = epochs * iters, warm-up = epochs / 50 epochs."""
    iters_per_ep = math.ceil(num_train / cfg.batch_size)
    max_it = cfg.max_steps or cfg.epochs * iters_per_ep
    warmup_it = (cfg.warmup_epochs * iters_per_ep) if cfg.warmup_epochs >= 0 else max_it / 50
    return iters_per_ep, max_it, warmup_it


def _grad_norm(model, grad_clip: float) -> torch.Tensor:
    return (torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip) if grad_clip > 0
            else torch.sqrt(sum(p.grad.double().square().sum() for p in model.parameters() if p.grad is not None)))


def _chunked_backward(net, model, vqvae, idx_BL, label_B, cfg: TrainConfig, step: int, world, pns, label_gen,
                      takes_gen: bool, use_bf16: bool, device, loss_fn=forward_loss) -> torch.Tensor:
    """Backward of one global batch cut into chunks (var/distributed.py): this rank's chunks accumulate, the last
    one all-reduces (DDP). Each chunk seeds label dropout and drop-path from (seed, step, chunk) and weighs its mean
    loss by its share of the global batch, so the update equals the single-process one at any world size.
    Returns the global batch's mean loss (float64, the same on every rank)."""
    B = idx_BL.shape[0]
    bounds = chunk_bounds(B, cfg.micro_batch_size, world.size)
    mine = my_chunks(bounds, world)
    loss_sum = 0.0
    for j, c in enumerate(mine):
        s, e = bounds[c]
        seed = chunk_seed(cfg.seed, step, c)
        torch.manual_seed(seed)              # drop-path / dropout of this chunk
        label_gen.manual_seed(seed + 1)      # label dropout (CFG) of this chunk
        x_BLCv = model_inputs(model, vqvae, idx_BL[s:e], pns)
        last = j == len(mine) - 1
        with contextlib.nullcontext() if (last or net is model) else net.no_sync():
            loss_c = loss_fn(net, label_B[s:e], x_BLCv, idx_BL[s:e], label_gen if takes_gen else None,
                             cfg.label_smoothing, use_bf16)
            (loss_c * ((e - s) * world.size / B)).backward()
        loss_sum += loss_c.item() * (e - s)
    return torch.tensor(all_reduce_sum([loss_sum], device)[0] / B, dtype=torch.float64)


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step did (train_step). Tensors are 0-d or (K,) on the batch's device."""
    loss: torch.Tensor                  # the batch's mean token loss, the value that was backpropagated
    lr: float                           # scheduled lr of this step (every group; lr_wd_at)
    wd: float                           # scheduled weight decay (a group gets wd * its wd_scale)
    finite: bool                        # False: non-finite loss or gradient norm, no update was made
    grad_norm: torch.Tensor | None      # total gradient 2-norm before clipping (None: no backward was run)
    clip_coef: torch.Tensor | None      # the factor the gradients were multiplied by: min(1, clip / (norm + 1e-6))
    ce_per_scale: torch.Tensor | None = None    # (K,) unsmoothed mean CE of each scale's tokens (metrics=True)
    acc_per_scale: torch.Tensor | None = None   # (K,) argmax accuracy of each scale's tokens (metrics=True)

    @property
    def clipped(self) -> bool:
        return self.clip_coef is not None and bool(self.clip_coef < 1)


@torch.no_grad()
def _per_scale_stats(logits_BLV: torch.Tensor, idx_BL: torch.Tensor, patch_nums: tuple[int, ...]):
    """(ce_K, acc_K): unsmoothed mean cross entropy and argmax accuracy over each scale's tokens (the reference
    trainer's per-resolution log), in float32."""
    logits_BLV = logits_BLV.detach().float()
    ce_BL = token_ce_BL(logits_BLV, idx_BL)
    hit_BL = (logits_BLV.argmax(dim=-1) == idx_BL).float()
    ce, acc = [], []
    for ce_Bl, hit_Bl in zip(split_scales(ce_BL, patch_nums), split_scales(hit_BL, patch_nums)):
        ce.append(ce_Bl.mean())
        acc.append(hit_Bl.mean())
    return torch.stack(ce), torch.stack(acc)


def train_step(model, opt, vqvae, idx_BL: torch.Tensor, label_B: torch.Tensor, cfg: TrainConfig, *, step: int,
               max_it: int, warmup_it: float, loss_fn, label_gen: torch.Generator, net=None, world=None,
               metrics: bool = False, injected=None) -> StepResult:
    """One optimizer step on one global batch: the body of train_var's loop (tokens idx_BL (B, L) int64, all scales
    coarsest first; labels label_B (B,) int64).

    1. Schedule: lr and weight decay of iteration `step` (lr_wd_at over `max_it` iterations, `warmup_it` of them
       warm-up; schedule_lengths) set on every group of `opt` (make_optimizer), weight decay times the group's
       `wd_scale` (param_groups: 0 for the no-decay group).
    2. Loss: teacher-forcing input from the tokens, forward and mean token loss through `loss_fn`
       (make_loss_fn(cfg)), gradients zeroed, backward. One process with one chunk per batch: the batch at once;
       otherwise chunk by chunk over the ranks with `net` (DDP) and reseeded randomness (_chunked_backward).
    3. Clipping: total gradient norm, gradients scaled to at most cfg.grad_clip (clip_grad_norm_).
    4. Update: AdamW step when the loss and the norm are finite; otherwise the gradients are dropped and nothing
       changes (the caller applies cfg.nan_policy).
    Randomness, in this order: label dropout from `label_gen` (models whose forward takes `generator`), drop path
    from the global torch RNG. `injected` (test-only; var.blocks.InjectedRandomness): recorded decisions of
    another run used instead, nothing is drawn. `metrics`: also per-scale CE and accuracy of this forward (the
    logits are kept until then). Both need the one-process, one-chunk path.
    """
    world = world or current_world()
    lr, wd = lr_wd_at(step, peak_lr=cfg.peak_lr, max_it=max_it, warmup_it=warmup_it, wd=cfg.weight_decay,
                      wd_end=cfg.wd_end, warmup_start_ratio=cfg.warmup_start_ratio,
                      final_lr_ratio=cfg.final_lr_ratio, schedule=cfg.schedule)
    for g in opt.param_groups:
        g["lr"], g["weight_decay"] = lr, wd * g["wd_scale"]

    pns = tuple(getattr(getattr(model, "cfg", None), "patch_nums", None) or vqvae.cfg.patch_nums)
    takes_gen = "generator" in inspect.signature(model.forward).parameters
    use_bf16 = cfg.precision == "bf16" and idx_BL.device.type == "cuda"
    single = not world.distributed and len(chunk_bounds(cfg.batch_size, cfg.micro_batch_size, 1)) == 1
    gnorm = ce_K = acc_K = None
    if single:
        x_BLCv = model_inputs(model, vqvae, idx_BL, pns)
        kw = {"injected": injected} if injected is not None else {}
        if metrics:
            kw["return_logits"] = True
        out = loss_fn(model, label_B, x_BLCv, idx_BL, label_gen if takes_gen else None, cfg.label_smoothing,
                      use_bf16, **kw)
        if metrics:
            loss, logits_BLV = out
            ce_K, acc_K = _per_scale_stats(logits_BLV, idx_BL, pns)
            del logits_BLV
        else:
            loss = out
        opt.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(loss))
        if finite:
            loss.backward()
            gnorm = _grad_norm(model, cfg.grad_clip)
            finite = bool(torch.isfinite(gnorm))
    else:   # DDP and/or gradient accumulation: every rank backpropagates its chunks, even a non-finite loss
        if injected is not None or metrics:
            raise ValueError("train_step: injected randomness and metrics need one process with one chunk per batch")
        opt.zero_grad(set_to_none=True)
        loss = _chunked_backward(net if net is not None else model, model, vqvae, idx_BL, label_B, cfg, step, world,
                                 pns, label_gen, takes_gen, use_bf16, idx_BL.device, loss_fn)
        gnorm = _grad_norm(model, cfg.grad_clip)     # of the all-reduced gradients: equal on every rank
        finite = bool(torch.isfinite(loss)) and bool(torch.isfinite(gnorm))
    if finite:
        opt.step()
    else:
        opt.zero_grad(set_to_none=True)
    clip_coef = None
    if gnorm is not None:   # clip_grad_norm_'s own factor, recomputed (it does not return it)
        clip_coef = (cfg.grad_clip / (gnorm + 1e-6)).clamp(max=1.0) if cfg.grad_clip > 0 else torch.ones_like(gnorm)
    return StepResult(loss=loss.detach(), lr=lr, wd=wd, finite=finite, grad_norm=gnorm, clip_coef=clip_coef,
                      ce_per_scale=ce_K, acc_per_scale=acc_K)


class _VarTask:
    """train_var's part of the loop (var/loop.py): one train_step per global batch, the sharded validation, and
    the model, optimizer and label-dropout generator in the state."""

    def __init__(self, model, opt, vqvae, train, val, cfg: TrainConfig, loss_fn, label_gen, net, world, device,
                 max_it: int, warmup_it: float):
        self.model, self.opt, self.vqvae, self.train, self.val, self.cfg = model, opt, vqvae, train, val, cfg
        self.loss_fn, self.label_gen, self.net, self.world, self.device = loss_fn, label_gen, net, world, device
        self.max_it, self.warmup_it = max_it, warmup_it

    def start(self) -> None:
        pass

    def step(self, step: int, epoch: int, sel: np.ndarray) -> StepOutcome:
        idx_BL = torch.from_numpy(self.train.idx_NL[sel].astype(np.int64)).to(self.device)
        label_B = torch.from_numpy(self.train.labels_N[sel]).to(self.device)
        res = train_step(self.model, self.opt, self.vqvae, idx_BL, label_B, self.cfg, step=step, max_it=self.max_it,
                         warmup_it=self.warmup_it, loss_fn=self.loss_fn, label_gen=self.label_gen, net=self.net,
                         world=self.world)
        return StepOutcome(res.finite, {"loss": res.loss.item(), "lr": res.lr, "wd": res.wd, "epoch": epoch})

    def evaluate(self, epoch: int, step: int, info: dict) -> dict | None:
        if self.val is None:
            return None
        m = evaluate_sharded(self.model, self.vqvae, self.val, self.cfg.eval_batch_size or self.cfg.batch_size,
                             self.device, self.world)
        m.update(epoch=epoch, step=step, train_loss=info["loss"])
        return m

    def state(self) -> dict:
        if hasattr(self.opt, "consolidate_state_dict"):   # ZeRO: rank 0 gathers the full optimizer state
            self.opt.consolidate_state_dict(to=0)
        if not self.world.is_main:
            return {}
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "label_generator": self.label_gen.get_state()}

    def load_state(self, st: dict) -> None:
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        self.label_gen.set_state(st["label_generator"].cpu())


def train_var(model, vqvae, train_tokens, val_tokens, cfg: TrainConfig, *, out_dir, device="cpu",
              log: Callable[[str], None] = print, progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train `model` (logits_BLV = model(label_B, x_BLCv)) on token files; write out_dir/state.pt and model.pt.

    Returns the final metrics. Raises FloatingPointError naming the step on a non-finite loss (nan_policy
    'raise'); state.pt then still holds the last good checkpoint.
    """
    device = torch.device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / "state.pt"
    pns = tuple(getattr(getattr(model, "cfg", None), "patch_nums", None) or vqvae.cfg.patch_nums)
    train = as_token_data(train_tokens, pns, "train")
    val = as_token_data(val_tokens, pns, "val") if val_tokens is not None else None

    B = cfg.batch_size
    iters_per_ep, max_it, warmup_it = schedule_lengths(cfg, train.num)
    n_epochs = math.ceil(max_it / iters_per_ep)

    model.to(device).train()
    vqvae.to(device).eval()
    # Under torchrun the model is wrapped in DDP (and AdamW optionally sharded, ZeRO-1); one process whose global
    # batch is one chunk runs the single-process code path of train_step.
    world = current_world()
    net = model
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      broadcast_buffers=False)
    opt = make_optimizer(model, cfg, device, shard=cfg.shard_optimizer and world.distributed)
    # Label dropout (CFG) draws from its own generator when the model accepts one (VAR does); drop-path and
    # dropout use the global RNG. Both states are checkpointed.
    per_block = {"recompute_blocks": cfg.recompute_blocks, "recompute_ffn": cfg.recompute_ffn,
                 "compile_scope": cfg.compile and cfg.compile_scope == "block"}
    if any(per_block.values()) and "block_fn" not in inspect.signature(model.forward).parameters:
        keys = ", ".join(f"train.{k}" for k, v in per_block.items() if v)
        raise ValueError(f"{keys}: VAR-only switches, not supported by {type(model).__name__}")
    label_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    task = _VarTask(model, opt, vqvae, train, val, cfg, make_loss_fn(cfg), label_gen, net, world, device,
                    max_it, warmup_it)
    plan = LoopPlan(name="train_var", state_format="var-train-state-v1", cfg=config_to_dict(cfg), seed=cfg.seed,
                    num_train=train.num, batch_size=B, iters_per_ep=iters_per_ep, max_it=max_it,
                    log_every_steps=cfg.log_every_steps, ckpt_every_steps=cfg.ckpt_every_steps,
                    eval_every_epochs=cfg.eval_every_epochs, nan_policy=cfg.nan_policy,
                    speed_only_keys=SPEED_ONLY_KEYS)
    res = run_loop(task, plan, state_path, device=device, world=world, log=log, progress=progress)
    step, history, train_time = res.step, res.history, res.train_time_s

    metrics = dict(history[-1]) if history else {}
    metrics.update(step=step, epochs=n_epochs, max_steps=max_it, nan_skips=res.nan_skips,
                   train_time_s=train_time, train_img_per_s=step * B / max(train_time, 1e-9),
                   train_tokens_per_s=step * B * train.idx_NL.shape[1] / max(train_time, 1e-9),
                   history=history)
    if world.is_main:
        save_checkpoint(out_dir / "model.pt", model, kind=getattr(model, "checkpoint_kind", "var"), step=step,
                        extra={"metrics": {k: v for k, v in metrics.items() if k != "history"}})
    barrier()
    return metrics
