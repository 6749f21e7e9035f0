"""Next-scale sampling with classifier-free guidance, top-k / top-p filtering and the optional Gumbel smoothing.

`sample` reproduces the reference `autoregressive_infer_cfg` token for token on a CPU generator: the same RNG
use (labels, then one multinomial draw per scale, then Gumbel noise when more_smooth), the same filtering order
(top-k, then top-p on the top-k-masked row), guidance t = cfg * k / (K - 1) at scale k (none at the first).
`cfg_schedule='constant'` instead guides every scale with t = cfg (`guidance_weight`, shared with var/ar.py).
"""
from __future__ import annotations

import torch

from .config.sampling import CFG_SCHEDULES
from .transformer import VAR
from .vqvae import VQVAE


def guidance_weight(cfg: float, schedule: str, step: int, num_steps: int) -> float:
    """The CFG weight t of step `step` of `num_steps` (guided logits (1 + t) l_cond - t l_uncond).

    linear (the reference): t = cfg * step / (num_steps - 1), from none at the first step to cfg at the last
    (t = 0 for a single step); constant: t = cfg at every step."""
    if schedule == "constant":
        return cfg
    if schedule != "linear":
        raise ValueError(f"cfg_schedule must be one of {CFG_SCHEDULES}, got {schedule!r}")
    return cfg * (step / (num_steps - 1)) if num_steps > 1 else 0.0


def filter_top_k_top_p_(logits_BlV: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """In place: -inf below the k-th largest logit of each row, then outside the top-p nucleus.

    Top-p sorts the (already top-k-masked) row ascending and removes entries whose cumulative probability is
    <= 1 - top_p; the largest entry is always kept.
    """
    V = logits_BlV.shape[-1]
    if 0 < top_k < V:
        kth_Bl1 = logits_BlV.topk(top_k, dim=-1, largest=True, sorted=False)[0].amin(dim=-1, keepdim=True)
        logits_BlV.masked_fill_(logits_BlV < kth_Bl1, -torch.inf)
    if top_p > 0:
        sorted_logits, sorted_idx = logits_BlV.sort(dim=-1, descending=False)
        remove_sorted = sorted_logits.softmax(dim=-1).cumsum_(dim=-1) <= (1 - top_p)
        remove_sorted[..., -1:] = False
        logits_BlV.masked_fill_(remove_sorted.scatter(-1, sorted_idx, remove_sorted), -torch.inf)
    return logits_BlV


def draw(logits_BlV: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One sample per row of softmax(logits): (B, l, V) -> (B, l)."""
    B, l, V = logits_BlV.shape
    probs = logits_BlV.softmax(dim=-1).view(-1, V)
    return torch.multinomial(probs, num_samples=1, replacement=True, generator=generator).view(B, l)


def gumbel_smooth(logits_BlV: torch.Tensor, ratio: float, generator: torch.Generator | None) -> torch.Tensor:
    """'more smooth' soft token: softmax(((1 + ratio) logits + Gumbel) / tau), tau annealed with the scale."""
    tau = max(0.27 * (1 - 0.95 * ratio), 0.005)
    gumbels = -torch.empty_like(logits_BlV).exponential_(1, generator=generator).log()
    return ((logits_BlV.mul(1 + ratio) + gumbels) / tau).softmax(dim=-1)


def resolve_labels(var: VAR, B: int, label_B, generator: torch.Generator | None, device) -> torch.Tensor:
    """None: uniform random classes (first use of the generator); int: all equal (<0: null class)."""
    if label_B is None:
        uniform = torch.full((1, var.num_classes), 1.0 / var.num_classes, device=device)
        return torch.multinomial(uniform, num_samples=B, replacement=True, generator=generator).reshape(B)
    if isinstance(label_B, int):
        return torch.full((B,), var.num_classes if label_B < 0 else label_B, device=device, dtype=torch.long)
    return torch.as_tensor(label_B, device=device, dtype=torch.long).reshape(B)


class EagerRunner:
    """Runs the transformer for one scale against a preallocated KV cache (the plain path).

    The engine in var/engine.py supplies a drop-in runner that replays one CUDA graph per scale instead.
    """

    def __init__(self, var: VAR):
        self.var = var

    def start(self, cond_BD: torch.Tensor):
        self.cond_BD = cond_BD
        self.mods = self.var.modulations(cond_BD)
        self.kv_cache = self.var.new_kv_cache(cond_BD.shape[0])

    def step(self, x_BlC: torch.Tensor, si: int, pos: int) -> torch.Tensor:
        return self.var.logits(self.var.forward_cached(x_BlC, self.mods, self.kv_cache, pos), self.cond_BD)


@torch.no_grad()
def sample(var: VAR, vqvae: VQVAE, B: int, label_B=None, *, seed: int | None = None, cfg: float = 1.5,
           top_k: int = 0, top_p: float = 0.0, more_smooth: bool = False, cfg_schedule: str = "linear",
           generator: torch.Generator | None = None, return_details: bool = False, runner=None, decode=None,
           teacher_force=None, quantizer=None):
    """Generate B images. Returns (idx_Bl list over scales, images (B, 3, H, W) in [0, 1]).

    With return_details, a third value holds the labels used, the CFG logits of every scale (before
    filtering), the number of entries left by filtering per position, and the final f_hat.
    `runner` (default EagerRunner) runs the transformer per scale; `decode` (default vqvae.fhat_to_img) turns
    f_hat into images in [-1, 1]; var/engine.py passes faster ones that compute the same functions.
    `teacher_force` (zero-shot editing, var/editing.py): a pair (ref_idx_Bl list, keep_Bl list of bool (B, pn*pn))
    over scales; where keep is True the drawn token is replaced by the reference token (the draw still happens,
    so the RNG stream is unchanged). None (default) leaves the sampler exactly as above.
    `quantizer` (default vqvae.quantize): the engine passes a copy that upsamples by matmul (same function).
    """
    device = var.pos_start.device
    if seed is not None:
        generator = generator or torch.Generator(device=device)
        generator.manual_seed(seed)
    runner = runner or EagerRunner(var)
    decode = decode or vqvae.fhat_to_img
    labels = resolve_labels(var, B, label_B, generator, device)
    cond_BD = var.class_emb(torch.cat((labels, torch.full_like(labels, var.num_classes))))   # (2B, C): [cond; uncond]
    runner.start(cond_BD)
    lvl_pos_1LC = var.lvl_embed(var.lvl_1L) + var.pos_1LC
    first_l = var.first_l
    x_BlC = (cond_BD.unsqueeze(1).expand(2 * B, first_l, -1) + var.pos_start.expand(2 * B, first_l, -1)
             + lvl_pos_1LC[:, :first_l])
    quant = quantizer or vqvae.quantize
    pn_K = var.patch_nums[-1]
    f_hat = quant.embedding.weight.new_zeros(B, quant.Cvae, pn_K, pn_K)
    K = len(var.patch_nums)
    details = {"labels": labels, "cfg_logits": [], "num_kept": []}
    idx_list, cur_L = [], 0
    for si, pn in enumerate(var.patch_nums):
        ratio = si / (K - 1) if K > 1 else 0.0
        logits_2BlV = runner.step(x_BlC, si, cur_L)
        cur_L += pn * pn
        t = guidance_weight(cfg, cfg_schedule, si, K)
        logits_BlV = (1 + t) * logits_2BlV[:B] - t * logits_2BlV[B:]
        if return_details:
            details["cfg_logits"].append(logits_BlV.clone())
        filter_top_k_top_p_(logits_BlV, top_k, top_p)
        if return_details:
            details["num_kept"].append(torch.isfinite(logits_BlV).sum(-1).int())
        idx_Bl = draw(logits_BlV, generator)
        if teacher_force is not None:
            keep_Bl = teacher_force[1][si].to(device)
            idx_Bl = torch.where(keep_Bl, teacher_force[0][si].to(device), idx_Bl)
        idx_list.append(idx_Bl)
        if more_smooth:
            h_BlCv = gumbel_smooth(logits_BlV, ratio, generator) @ quant.embedding.weight.unsqueeze(0)
            if teacher_force is not None:   # forced tokens enter as their hard code, never smoothed
                h_BlCv = torch.where(keep_Bl.unsqueeze(-1), quant.embedding(idx_Bl), h_BlCv)
        else:
            h_BlCv = quant.embedding(idx_Bl)
        h_BChw = h_BlCv.transpose(1, 2).reshape(B, quant.Cvae, pn, pn)
        f_hat, next_map = quant.next_input(si, f_hat, h_BChw)
        if si != K - 1:
            pn_next = var.patch_nums[si + 1]
            x_BlC = var.word_embed(next_map.view(B, quant.Cvae, -1).transpose(1, 2).to(var.pos_1LC.dtype)) \
                + lvl_pos_1LC[:, cur_L:cur_L + pn_next * pn_next]
            x_BlC = x_BlC.repeat(2, 1, 1)
    img_B3HW = decode(f_hat).float().add(1).mul(0.5)
    if return_details:
        details["f_hat"] = f_hat
        return idx_list, img_B3HW, details
    return idx_list, img_B3HW
