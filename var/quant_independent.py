"""The ablation baseline of paper Sec. 3.2: multi-scale token maps WITHOUT the residual ("independent
interpolation of each scale"), for comparison with the residual quantiser of var/quant.py.

Definition used here (the paper gives none in detail):
- scale k quantises z_k = area_downsample(f, pn_k) -- always of f itself, never of a residual -- with the
  shared codebook; h_k = phi_k(bicubic_upsample(e[idx_k])) is that scale's own approximation of f;
- the reconstruction uses ALL scales: f_hat = mean_k h_k, so both variants spend the same tokens (L = sum pn^2)
  and the same phi convolutions on f_hat. (Decoding from the last scale alone would make the coarse scales
  irrelevant to reconstruction: that is single-scale VQ on the finest map, not a multi-scale tokenizer.)
- vq_loss = mean_k ||h_k - sg(f)||^2 + beta ||sg(h_k) - f||^2 (eq. 5 per scale), straight-through on f_hat.

It subclasses the residual quantiser and shares its parameters and state-dict keys; it is not a model option
(var/quant.py is unchanged), so a checkpoint trained with it must be decoded with it: `use_independent_quantizer`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .quant import MultiScaleQuantizer


class IndependentQuantizer(MultiScaleQuantizer):
    def _scale_input(self, f_BChw: torch.Tensor, si: int) -> torch.Tensor:
        pn = self.patch_nums[si]
        return F.interpolate(f_BChw, size=(pn, pn), mode="area") if si != len(self.patch_nums) - 1 else f_BChw

    @torch.no_grad()
    def f_to_idx(self, f_BChw: torch.Tensor, return_fhat: bool = False, return_margin: bool = False):
        B = f_BChw.shape[0]
        margin_BK = f_BChw.new_empty(B, len(self.patch_nums)) if return_margin else None
        idx_list = [self._code_map(self._scale_input(f_BChw.detach(), si), None if margin_BK is None else
                                   margin_BK[:, si]) for si in range(len(self.patch_nums))]
        out = (idx_list,) + ((self.idx_to_fhat(idx_list, cumulative=True),) if return_fhat else ()) \
            + ((margin_BK,) if return_margin else ())
        return out if len(out) > 1 else idx_list

    def idx_to_fhat(self, idx_list: list[torch.Tensor], cumulative: bool = False):
        """f_hat = mean over the given scales of h_k; cumulative: the mean of the first k scales, k = 1..K."""
        out, acc = [], None
        for si, idx_Bl in enumerate(idx_list):
            h_BChw = self.upsample_phi(self.embed_idx(idx_Bl, self.patch_nums[si]), si)
            acc = h_BChw if acc is None else acc + h_BChw
            out.append(acc / (si + 1))
        return out if cumulative else out[-1]

    def idx_to_var_input(self, idx_list):
        raise NotImplementedError("the independent-scale quantiser is a tokenizer ablation; VAR uses the residual one")

    def next_input(self, si, f_hat, h_BChw):
        raise NotImplementedError("the independent-scale quantiser is a tokenizer ablation; VAR uses the residual one")

    def forward(self, f_BChw: torch.Tensor):
        B, C = f_BChw.shape[:2]
        f_no_grad = f_BChw.detach()
        f_hat = torch.zeros_like(f_no_grad)
        vq_loss = f_BChw.new_zeros(())
        usage = []
        K = len(self.patch_nums)
        for si, pn in enumerate(self.patch_nums):
            z_BChw = self._scale_input(f_no_grad, si)
            idx_N = self.nearest_code(z_BChw.permute(0, 2, 3, 1).reshape(-1, C))
            hits_V = torch.bincount(idx_N, minlength=self.embedding.num_embeddings)
            self.last_hits_V = hits_V if si == 0 else self.last_hits_V + hits_V   # as MultiScaleQuantizer.forward
            usage.append((hits_V > 0).float().mean().item() * 100)
            h_BChw = self.upsample_phi(self.embed_idx(idx_N.view(B, pn * pn), pn), si)
            f_hat = f_hat + h_BChw / K
            vq_loss = vq_loss + F.mse_loss(h_BChw, f_no_grad) + self.cfg.beta * F.mse_loss(h_BChw.detach(), f_BChw)
        vq_loss = vq_loss / K
        f_hat_st = (f_hat.detach() - f_no_grad) + f_BChw   # straight-through estimator
        return f_hat_st, vq_loss, usage


def use_independent_quantizer(vqvae) -> None:
    """Switch `vqvae` to the independent-scale quantiser in place, keeping its codebook and phi weights."""
    old = vqvae.quantize
    new = IndependentQuantizer(old.cfg).to(old.embedding.weight.device)
    new.load_state_dict(old.state_dict())
    vqvae.quantize = new
