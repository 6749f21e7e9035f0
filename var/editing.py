"""Zero-shot editing with a trained VAR (paper Sec. 4.4 / Fig. 8): in-painting, out-painting, class-conditional
editing -- with no fine-tuning, by teacher-forcing the source image's tokens outside a mask at every scale.

The mask is given on the image (bool (B, H, W), True = generate) and downsampled to every scale by this rule: a
token of the pn x pn map is *inside* (generated) iff its cell -- rows [i H/pn, (i+1) H/pn), columns likewise, in
pixels -- overlaps at least one masked pixel; otherwise it is *outside* and equals the source image's token of
that scale exactly. Overlap is `adaptive_max_pool2d` of the mask (its bins are exactly the pixels a cell touches),
so the generated region at each scale covers the mask (never less), and coarse scales are generated more widely.

Sampling is the one generation path (var/sharded_sampling.py, `var.sampling.sample` or the engine) with its
`teacher_force` argument: every scale is drawn as usual (same RNG use, CFG, top-k/top-p), then the outside tokens
are replaced by the source's, so the next scale's input f_hat is built from the composed token map. Pure functions:
no file I/O.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import ZeroShotConfig  # noqa: F401 (re-exported)
from .sampling import resolve_labels
from .sharded_sampling import draw_images
from .transformer import VAR
from .vqvae import VQVAE


def box_mask(B: int, H: int, W: int, box, device=None) -> torch.Tensor:
    """bool (B, H, W): True inside the box (top, left, bottom, right) given as fractions of the image side."""
    t, l, b, r = box
    m = torch.zeros(B, H, W, dtype=torch.bool, device=device)
    m[:, round(t * H):round(b * H), round(l * W):round(r * W)] = True
    return m


def scale_masks(mask_BHW: torch.Tensor, patch_nums) -> list[torch.Tensor]:
    """Pixel mask (True = generate) -> per scale bool (B, pn*pn), raster order: True where the token's cell
    overlaps the mask (see the module docstring)."""
    m = mask_BHW.float().unsqueeze(1)
    return [F.adaptive_max_pool2d(m, pn).flatten(1) > 0 for pn in patch_nums]


@torch.no_grad()
def edit_plan(vqvae: VQVAE, img_B3HW: torch.Tensor, gen_mask_BHW: torch.Tensor, patch_nums) -> tuple:
    """(teacher_force, source idx_Bl list, inside list of bool (B, pn*pn)) for regenerating the masked part of
    images in [-1, 1] (B, 3, H, W): the sampler keeps the source's tokens outside the mask at every scale."""
    src_idx = vqvae.img_to_idx(img_B3HW)
    inside = [m.to(src_idx[0].device) for m in scale_masks(gen_mask_BHW, patch_nums)]
    return (src_idx, [~m for m in inside]), src_idx, inside


@torch.no_grad()
def edit(var: VAR, vqvae: VQVAE, img_B3HW: torch.Tensor, gen_mask_BHW: torch.Tensor, label_B, *,
         seed: int = 0, engine=None, **sampler_kw):
    """Regenerate the masked part of images in [-1, 1] (B, 3, H, W) conditioned on label_B (int, list or tensor),
    with one seeded sampler call (`sampler_kw`: cfg, cfg_schedule, top_k, top_p, more_smooth; `engine`: a
    GenerationEngine of `var`).

    Returns (idx_Bl list, images (B, 3, H, W) in [0, 1], source idx_Bl list, inside list of bool (B, pn*pn)).
    """
    tf, src_idx, inside = edit_plan(vqvae, img_B3HW, gen_mask_BHW, var.patch_nums)
    B, device = img_B3HW.shape[0], var.pos_start.device
    labels = resolve_labels(var, B, label_B, None, device)
    idx, img = draw_images(var, vqvae, labels, seed=seed, engine=engine, teacher_force=tf, **sampler_kw)
    return idx, img, src_idx, inside


def force_first_scales(src_idx: list[torch.Tensor], num_scales: int) -> tuple[list, list]:
    """A `teacher_force` argument that fixes the first `num_scales` token maps to `src_idx` (Fig. 7's shared
    coarse layout) and samples the rest freely."""
    keep = [torch.full_like(t, k < num_scales, dtype=torch.bool) for k, t in enumerate(src_idx)]
    return src_idx, keep


__all__ = ["ZeroShotConfig", "box_mask", "scale_masks", "edit_plan", "edit", "force_first_scales"]
