"""Training of the multi-scale VQVAE tokenizer (paper Sec. 3.2 / Appendix: VQGAN losses on a residual quantizer).

loss = lambda_rec * ||rec - img||^2 + lambda_vq * vq_loss (eq. 5, returned by `vqvae(img)`)
       + lambda_p * perceptual(rec, img)                       (LPIPS in the paper; any callable plugs in)
       + lambda_g * w_adapt * hinge_G(D(rec))                  (from `disc_start_step` on; VQGAN adaptive weight)

Before `disc_start_step` the discriminator is neither run nor stepped, and it is built from its own seed under
`fork_rng`, so a run with lambda_g > 0 is bitwise the same as one with lambda_g = 0 up to that step. Resumable
like `train_var`: `out_dir/state.pt` holds tokenizer, discriminator, both optimizers, the step and all RNG states.

Under `torchrun` every rank takes its chunks of the global batch (`micro_batch_size`, var/distributed.py) and the
gradients are summed over the ranks, so a run does not depend on the GPU count (tests/test_distributed.py checks
2 processes against 1); rank 0 evaluates and writes the state and the checkpoint, the others wait for it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from var.checkpoint import save_checkpoint
from var.config import TokenizerTrainConfig, config_to_dict  # noqa: F401 (re-exported)
from var.distributed import (
    all_reduce_sum,
    barrier,
    chunk_bounds,
    current_world,
    my_chunks,
)
from var.loop import LoopPlan, StepOutcome, run_loop
from var.schedule import warmup_cosine_factor
from var.weights import load_weights


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator of pix2pix / VQGAN (`NLayerDiscriminator`): images in [-1, 1] -> patch logits."""

    def __init__(self, ch: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, ch, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1     # the last hidden layer keeps the resolution, as pix2pix
            layers += [nn.Conv2d(ch * prev, ch * mult, 4, stride, 1, bias=False), nn.BatchNorm2d(ch * mult),
                       nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ch * mult, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        for m in self.modules():                  # VQGAN's weights_init
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        return self.net(img_B3HW)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_weight(nll: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, max_w: float) -> torch.Tensor:
    """VQGAN eq. (7): balance the GAN gradient against the reconstruction gradient at the decoder's last layer."""
    nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (nll_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, max_w).detach()


def to_model_range(images_uint8_NHW3: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images_uint8_NHW3)).to(device)
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


@torch.no_grad()
def restart_dead_codes(embedding_VC: torch.Tensor, hits_V: torch.Tensor, f_NC: torch.Tensor) -> int:
    """Replace codebook rows never hit since the last restart by random encoder feature vectors (global RNG)."""
    dead = (hits_V == 0).nonzero().flatten()
    if dead.numel() and f_NC.shape[0]:
        pick = torch.randint(0, f_NC.shape[0], (dead.numel(),), device=f_NC.device)
        embedding_VC[dead] = f_NC[pick].to(embedding_VC.dtype)
    return int(dead.numel())


def generator_loss(vqvae, img_B3HW: torch.Tensor, cfg: TokenizerTrainConfig, step: int, *,
                   perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                   disc: nn.Module | None = None, last_layer: torch.Tensor | None = None):
    """Loss (5) of the tokenizer for one batch: returns (loss, rec_B3HW, info dict of floats).

    lambda_rec * L2 + lambda_p * perceptual (together the 'nll' the adaptive weight balances against), plus
    lambda_vq * (codebook + beta * commitment) from the quantiser, plus -- from `disc_start_step` on and only if
    a discriminator is given -- lambda_g * w_adapt * (-D(rec)) (hinge generator loss, VQGAN eq. 7 weight)."""
    rec_B3HW, vq_loss, usage = vqvae(img_B3HW)
    rec_loss = F.mse_loss(rec_B3HW.float(), img_B3HW)
    nll = cfg.lambda_rec * rec_loss
    info = {"loss": 0.0, "rec": rec_loss.item(), "vq": vq_loss.item(), "usage_mean": float(np.mean(usage))}
    if cfg.lambda_p > 0:
        p_loss = perceptual(rec_B3HW, img_B3HW).float().mean()
        nll = nll + cfg.lambda_p * p_loss
        info["perceptual"] = p_loss.item()
    loss = nll + cfg.lambda_vq * vq_loss
    if disc is not None and cfg.lambda_g > 0 and step >= cfg.disc_start_step:
        disc.requires_grad_(False)
        g_loss = -disc(rec_B3HW).float().mean()
        w = adaptive_weight(nll, g_loss, last_layer if last_layer is not None else vqvae.decoder.conv_out.weight,
                            cfg.adaptive_weight_max)
        loss = loss + cfg.lambda_g * w * g_loss
        info.update(g_loss=g_loss.item(), adaptive_w=w.item())
    info["loss"] = loss.item()
    return loss, rec_B3HW, info


def keep_quantizer_fp32(vqvae) -> list:
    """Under autocast, run `vqvae.quantize` in float32: nearest-code distances in bf16 pick wrong codes. Returns
    the hook handles (call .remove() on them); outside autocast the hooks only cast the (already fp32) input."""
    ctxs = []

    def pre(_mod, args):
        ctx = torch.autocast(args[0].device.type, enabled=False)
        ctx.__enter__()
        ctxs.append(ctx)
        return (args[0].float(), *args[1:])

    def post(_mod, _args, _out):
        ctxs.pop().__exit__(None, None, None)
    return [vqvae.quantize.register_forward_pre_hook(pre), vqvae.quantize.register_forward_hook(post)]


def init_tokenizer_weights(vqvae, path: str | Path, log: Callable[[str], None] = print, *,
                           expected_sha256: str | None = "", key: str = "tokenizer.train.init_from") -> str:
    """Fine-tuning start: our `model.pt` (kind 'vqvae') or a released bare state dict (vae_ch160v4096z32.pth),
    checked against `expected_sha256` and loaded without running code (var/weights.py), then strictly (a config
    mismatch names every missing / unexpected / mis-shaped key). Returns the file's sha256."""
    from var.checkpoint import load_state_dict_strict
    ck, digest = load_weights(path, expected_sha256, key=key, what="tokenizer weights")
    if isinstance(ck, dict) and isinstance(ck.get("model"), dict):
        ck = ck["model"]                                   # ours ({'kind': 'vqvae', 'model', ...}) or {'model': ...}
    load_state_dict_strict(vqvae, ck, str(path))
    log(f"[train_tokenizer] initialised from {path} (sha256 {digest})")
    return digest


def _all_reduce_grads(module: nn.Module, world) -> None:
    """Sum the gradients over the ranks (a no-op on one process); one flat buffer per dtype, one collective.

    Not DDP (as train_var uses): the VQGAN adaptive weight takes `autograd.grad` of two losses w.r.t. the decoder's
    last layer inside the step, and the dead-code restart rewrites codebook rows between steps; an explicit
    all-reduce after the chunks keeps both simple."""
    if not world.distributed:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    for dtype in sorted({g.dtype for g in grads}, key=str):
        group = [g for g in grads if g.dtype == dtype]
        flat = torch.cat([g.reshape(-1) for g in group])
        dist.all_reduce(flat)
        for g, part in zip(group, flat.split([g.numel() for g in group])):
            g.copy_(part.view_as(g))


def tokenizer_lr_scale(cfg: TokenizerTrainConfig, step: int, max_it: int) -> float:
    """lr multiplier at `step` (0-based): var.schedule.warmup_cosine_factor with the config's settings."""
    return warmup_cosine_factor(step, max_it=max_it, warmup_steps=cfg.warmup_steps,
                                final_lr_ratio=cfg.final_lr_ratio)


class _TokenizerTask:
    """train_tokenizer's part of the loop (var/loop.py): one generator step (chunks of the global batch, gradients
    summed over the ranks), then the discriminator's, the dead-code restart; rank 0's evaluation; tokenizer,
    discriminator, both optimizers and the code-hit counts in the state."""

    def __init__(self, vqvae, opt, disc, opt_d, images_uint8_NHW3: np.ndarray, cfg: TokenizerTrainConfig,
                 max_it: int, device, world, perceptual, evaluate, log: Callable[[str], None]):
        self.vqvae, self.opt, self.disc, self.opt_d, self.images, self.cfg = vqvae, opt, disc, opt_d, \
            images_uint8_NHW3, cfg
        self.max_it, self.device, self.world, self.perceptual, self.evaluate_fn = max_it, device, world, \
            perceptual, evaluate
        self.hits_V = torch.zeros(vqvae.cfg.vocab_size, dtype=torch.long, device=device)
        self.restarted, self.init_sha256 = 0, ""
        self.last_layer = vqvae.decoder.conv_out.weight
        self.bf16 = cfg.autocast_bf16 and device.type == "cuda"
        self.log = log

    def start(self) -> None:
        if self.cfg.init_from:
            self.init_sha256 = init_tokenizer_weights(self.vqvae, self.cfg.init_from, self.log,
                                                      expected_sha256=self.cfg.init_from_sha256)

    def step(self, step: int, epoch: int, sel: np.ndarray) -> StepOutcome:
        cfg, vqvae, disc, device, world = self.cfg, self.vqvae, self.disc, self.device, self.world
        lr_scale = tokenizer_lr_scale(cfg, step, self.max_it)
        for o, base in ((self.opt, cfg.lr), (self.opt_d, cfg.disc_lr or cfg.lr)):
            for g in (o.param_groups if o is not None else []):
                g["lr"] = base * lr_scale
        gan_on = disc is not None and step >= cfg.disc_start_step
        # The global batch `sel` in fixed chunks (var/distributed.py): this rank's chunks accumulate gradients
        # weighted by their share of the batch, then the gradients are summed over the ranks -- the update of the
        # global-batch mean whatever the world size (exactly so for the L2/VQ/perceptual terms, which are batch
        # means; the adaptive GAN weight and the discriminator's BatchNorm are computed per chunk).
        bounds = chunk_bounds(len(sel), cfg.micro_batch_size, world.size)
        self.opt.zero_grad(set_to_none=True)
        info_sum: dict[str, float] = {}
        chunk_imgs = []                                   # (img, rec, share) per chunk, for the discriminator step
        step_hits_V = torch.zeros_like(self.hits_V)
        for c in my_chunks(bounds, world):
            s_, e_ = bounds[c]
            img_B3HW = to_model_range(self.images[sel[s_:e_]], device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
                loss, rec_B3HW, info = generator_loss(vqvae, img_B3HW, cfg, step, perceptual=self.perceptual,
                                                      disc=disc, last_layer=self.last_layer)
            if not math.isfinite(info["loss"]):       # nothing is updated; the loop stops the run
                self.opt.zero_grad(set_to_none=True)
                return StepOutcome(False, info)
            share = (e_ - s_) / len(sel)
            (loss * share).backward()
            if cfg.dead_code_restart:
                step_hits_V += vqvae.quantize.last_hits_V  # the hits of this step's training forward, all scales
            for k, v in info.items():
                info_sum[k] = info_sum.get(k, 0.0) + v * share
            if gan_on:
                chunk_imgs.append((img_B3HW, rec_B3HW.detach(), share))
        _all_reduce_grads(vqvae, world)
        if cfg.dead_code_restart:
            if world.distributed:                         # every rank keeps the global counts (the state too)
                dist.all_reduce(step_hits_V)
            self.hits_V += step_hits_V
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(vqvae.parameters(), cfg.grad_clip)
        self.opt.step()
        if gan_on:
            disc.requires_grad_(True)
            self.opt_d.zero_grad(set_to_none=True)
            d_sum = 0.0
            for img_B3HW, rec_B3HW, share in chunk_imgs:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    d_loss = hinge_d_loss(disc(img_B3HW).float(), disc(rec_B3HW).float())
                (d_loss * share).backward()
                d_sum += d_loss.item() * share
            _all_reduce_grads(disc, world)
            self.opt_d.step()
            info_sum["d_loss"] = d_sum
        if world.distributed:                             # the global batch's loss terms for the log
            keys = sorted(info_sum)
            info_sum = dict(zip(keys, all_reduce_sum([info_sum[k] for k in keys], device).tolist()))
        if cfg.dead_code_restart and (step + 1) % cfg.dead_code_every_steps == 0:
            with torch.no_grad():   # fresh features of the whole global batch (every rank alike: same restart)
                img_all = to_model_range(self.images[sel], device)
                f_BChw = vqvae.encode_features(img_all).float()
            f_NC = f_BChw.permute(0, 2, 3, 1).reshape(-1, f_BChw.shape[1])
            self.restarted += restart_dead_codes(vqvae.quantize.embedding.weight.data, self.hits_V, f_NC)
            self.hits_V.zero_()
        return StepOutcome(True, info_sum)

    def evaluate(self, epoch: int, step: int, info: dict) -> dict | None:
        if self.evaluate_fn is None or not self.world.is_main:   # rank 0 evaluates, the others wait at the save
            return None
        m = self.evaluate_fn(self.vqvae)
        m.update(epoch=epoch, step=step)
        return m

    def state(self) -> dict:
        gan = self.disc is not None
        return {"model": self.vqvae.state_dict(), "optimizer": self.opt.state_dict(),
                "disc": self.disc.state_dict() if gan else {}, "disc_optimizer": self.opt_d.state_dict() if gan else {},
                "hits_V": self.hits_V, "restarted_codes": self.restarted, "init_from_sha256": self.init_sha256}

    def load_state(self, st: dict) -> None:
        self.vqvae.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        if self.disc is not None:
            self.disc.load_state_dict(st["disc"])
            self.opt_d.load_state_dict(st["disc_optimizer"])
        self.hits_V.copy_(st["hits_V"])
        self.restarted = int(st["restarted_codes"])
        self.init_sha256 = st.get("init_from_sha256", "")


def train_tokenizer(vqvae, train_images_uint8_NHW3: np.ndarray, cfg: TokenizerTrainConfig, *, out_dir,
                    device="cpu", log: Callable[[str], None] = print,
                    progress: Callable[[int, int, dict], None] | None = None,
                    perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                    evaluate: Callable[[nn.Module], dict] | None = None) -> dict:
    """Train `vqvae` (rec_B3HW, vq_loss, usage = vqvae(img_B3HW)); write out_dir/state.pt and model.pt.

    perceptual: (rec_B3HW, img_B3HW) -> per-image loss (var/perceptual.py), needed when lambda_p > 0.
    evaluate: the model -> validation metrics (e.g. eval.recon.evaluate_tokenizer on the val split), run by rank 0
    at the end of every `eval_every_epochs`-th epoch and of the run, under the RNG of the training stream."""
    if cfg.lambda_p > 0 and perceptual is None:
        raise ValueError("lambda_p > 0 needs a perceptual loss callable (perceptual=...)")
    device = torch.device(device)
    world = current_world()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / "state.pt"
    N, B = len(train_images_uint8_NHW3), cfg.batch_size
    iters_per_ep = math.ceil(N / B)
    max_it = cfg.max_steps or cfg.epochs * iters_per_ep

    vqvae.to(device).train()
    opt = torch.optim.AdamW(vqvae.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                            foreach=False)
    use_gan = cfg.lambda_g > 0
    disc = opt_d = None
    if use_gan:
        with torch.random.fork_rng(devices=[]):   # leave the global stream as it would be without a discriminator
            torch.manual_seed(cfg.seed + 2)
            disc = PatchDiscriminator(cfg.disc_ch, cfg.disc_layers).to(device).train()
        opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.disc_lr or cfg.lr, betas=cfg.betas,
                                  weight_decay=0.0, foreach=False)
    task = _TokenizerTask(vqvae, opt, disc, opt_d, train_images_uint8_NHW3, cfg, max_it, device, world,
                          perceptual, evaluate, log)
    plan = LoopPlan(name="train_tokenizer", state_format="tokenizer-train-state-v1", cfg=config_to_dict(cfg),
                    seed=cfg.seed, num_train=N, batch_size=B, iters_per_ep=iters_per_ep, max_it=max_it,
                    log_every_steps=cfg.log_every_steps, ckpt_every_steps=cfg.ckpt_every_steps,
                    eval_every_epochs=cfg.eval_every_epochs)
    hooks = keep_quantizer_fp32(vqvae) if task.bf16 else []
    try:
        res = run_loop(task, plan, state_path, device=device, world=world, log=log, progress=progress)
    finally:
        for h in hooks:
            h.remove()
    step, history, train_time, restarted = res.step, res.history, res.train_time_s, task.restarted
    init_sha256 = task.init_sha256

    metrics = dict(history[-1]) if history else {}
    metrics.update(step=step, train_time_s=train_time, train_img_per_s=step * B / max(train_time, 1e-9),
                   restarted_codes=restarted, history=history)
    if cfg.init_from:
        metrics["init_from_sha256"] = init_sha256
    if world.is_main:
        save_checkpoint(out_dir / "model.pt", vqvae, kind="vqvae", step=step,
                        extra={"metrics": {k: v for k, v in metrics.items() if k != "history"}})
    barrier()
    return metrics
