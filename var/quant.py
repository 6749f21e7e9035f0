"""Multi-scale residual vector quantiser (paper Sec. 3.2, Algorithms 1 and 2).

One codebook is shared by all K scales. Encoding walks the scales coarse to fine: the residual r is
area-downsampled to pn_k x pn_k, quantised to the nearest code, the codes are bicubically upsampled back to
pn_K x pn_K, passed through a phi convolution and accumulated into f_hat, and subtracted from r. The K phi
convolutions are shared among `num_phi` convs chosen per scale by nearest tick (config.phi_index_per_scale).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import VQVAEConfig


class Phi(nn.Conv2d):
    """phi(h) = (1 - r) h + r conv3x3(h): a residual refinement after upsampling (r = quant_resi)."""

    def __init__(self, channels: int, resi_ratio: float):
        super().__init__(channels, channels, kernel_size=3, stride=1, padding=1)
        self.resi_ratio = abs(resi_ratio)

    def forward(self, h_BChw: torch.Tensor) -> torch.Tensor:
        return h_BChw.mul(1 - self.resi_ratio) + super().forward(h_BChw).mul_(self.resi_ratio)


class PhiBank(nn.Module):
    """The shared phi convolutions; `qresi_ls` keeps the released checkpoints' key names."""

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        self.qresi_ls = nn.ModuleList([Phi(cfg.z_channels, cfg.quant_resi) for _ in range(cfg.num_phi)])
        self.index_per_scale = cfg.phi_index_per_scale

    def forward(self, h_BChw: torch.Tensor, si: int) -> torch.Tensor:
        return self.qresi_ls[self.index_per_scale[si]](h_BChw)


def bicubic_matrix(n_in: int, n_out: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The (n_out, n_in) matrix of 1-D bicubic upsampling, read off F.interpolate applied to the unit vectors.

    PyTorch's 2-D bicubic (align_corners=False, a = -0.75, clamped borders) is separable, so
    F.interpolate(h, (n_out, n_out), mode="bicubic") == A @ h @ A.T up to float rounding of the summation
    order. As two small matmuls this is far faster on a GPU than the bicubic kernel, which loops over
    batch x channels inside each thread (measured: 6.5 ms per call at batch 256 on an H100).
    """
    eye = torch.eye(n_in, device=device, dtype=torch.float64).view(n_in, 1, n_in, 1)
    cols = F.interpolate(eye, size=(n_out, 1), mode="bicubic")        # (n_in, 1, n_out, 1): column j = A[:, j]
    return cols.view(n_in, n_out).T.contiguous().to(dtype)


class MultiScaleQuantizer(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        self.cfg = cfg
        # Fast paths (var/engine.py) set this: bicubic upsampling as two matmuls (bicubic_matrix), the same
        # function to float rounding. Off by default, so the plain path is the reference's kernel call.
        self.upsample_matmul = False
        self._bicubic = {}
        self.patch_nums = tuple(cfg.patch_nums)
        self.Cvae = cfg.z_channels
        # Kept for checkpoint compatibility with the released tokenizer (an EMA hit counter; unused here).
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.patch_nums), cfg.vocab_size))
        self.quant_resi = PhiBank(cfg)   # registered before the codebook: the released key order
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.z_channels)
        # Codes start near the origin (uniform +-1/V, as VQGAN and the reference): nearest-code search then
        # follows the feature's direction and spreads over the codebook. With nn.Embedding's N(0, 1) init every
        # feature picks the one smallest-norm code and the codebook collapses (measured: 2% usage).
        nn.init.uniform_(self.embedding.weight, -1.0 / cfg.vocab_size, 1.0 / cfg.vocab_size)

    # ----------------------------------------------------------------------------------------- helpers
    def nearest_code(self, z_NC: torch.Tensor, return_margin: bool = False):
        """argmin_j ||z - e_j||^2, computed as ||z||^2 + ||e||^2 - 2 z.e (first minimum wins).

        return_margin: also (sqrt(d_2) - sqrt(d_1)) / 2 per row, d_1 <= d_2 the two smallest squared distances. No
        perturbation of z shorter than it changes the choice: for every other code j, by the triangle inequality
        ||z + u - e_1|| <= sqrt(d_1) + |u| < sqrt(d_j) - |u| <= ||z + u - e_j||. (The exact distance to the Voronoi
        boundary can be larger; this bound needs only the two smallest distances.)"""
        e_VC = self.embedding.weight.detach()
        d_NV = z_NC.square().sum(dim=1, keepdim=True) + e_VC.square().sum(dim=1)
        d_NV = torch.addmm(d_NV, z_NC, e_VC.T, beta=1, alpha=-2)
        idx_N = d_NV.argmin(dim=1)
        if not return_margin:
            return idx_N
        # Over distinct codes only: copies of one vector (k-means restarts, dead-code resets) tie exactly for every
        # z, so the first copy always wins and they cannot flip the choice.
        d2_N2 = d_NV[:, self._distinct_codes(e_VC)].topk(2, dim=1, largest=False).values.clamp_min(0).sqrt()
        return idx_N, (d2_N2[:, 1] - d2_N2[:, 0]) / 2

    def _distinct_codes(self, e_VC: torch.Tensor) -> torch.Tensor:
        """Index of the first copy of each distinct codebook vector (cached per codebook version)."""
        key = (e_VC.data_ptr(), self.embedding.weight._version, e_VC.dtype)
        if getattr(self, "_distinct_key", None) != key:
            _, inv_V = torch.unique(e_VC, dim=0, return_inverse=True)
            first = torch.full((int(inv_V.max()) + 1,), e_VC.shape[0], dtype=torch.long, device=e_VC.device)
            first.scatter_reduce_(0, inv_V, torch.arange(e_VC.shape[0], device=e_VC.device), reduce="amin")
            self._distinct_key, self._distinct = key, first.sort().values
        return self._distinct

    def _code_map(self, z_BChw: torch.Tensor, margin_B: torch.Tensor | None) -> torch.Tensor:
        """Nearest codes of a (B, C, h, w) map as (B, h*w); writes each image's smallest margin into margin_B (a
        column of the caller's (B, K)) when given."""
        B, C = z_BChw.shape[:2]
        z_NC = z_BChw.permute(0, 2, 3, 1).reshape(-1, C)
        if margin_B is None:
            return self.nearest_code(z_NC).view(B, -1)
        idx_N, m_N = self.nearest_code(z_NC, return_margin=True)
        margin_B.copy_(m_N.view(B, -1).amin(dim=1))
        return idx_N.view(B, -1)

    def upsample_phi(self, h_BChw: torch.Tensor, si: int) -> torch.Tensor:
        """Bicubic upsampling to pn_K (skipped at the last scale), then the scale's phi."""
        H = self.patch_nums[-1]
        if si != len(self.patch_nums) - 1:
            if self.upsample_matmul:
                pn = h_BChw.shape[-1]
                key = (pn, h_BChw.device, h_BChw.dtype)
                if key not in self._bicubic:
                    self._bicubic[key] = bicubic_matrix(pn, H, h_BChw.device, h_BChw.dtype)
                A_Hp = self._bicubic[key]
                h_BChw = A_Hp @ h_BChw @ A_Hp.T
            else:
                h_BChw = F.interpolate(h_BChw, size=(H, H), mode="bicubic")
        return self.quant_resi(h_BChw, si)

    def embed_idx(self, idx_Bl: torch.Tensor, pn: int) -> torch.Tensor:
        """Codebook rows of a raster-order token map: (B, pn*pn) -> (B, Cvae, pn, pn)."""
        B = idx_Bl.shape[0]
        return self.embedding(idx_Bl).transpose(1, 2).reshape(B, self.Cvae, pn, pn)

    # ----------------------------------------------------------------------------------------- encode
    @torch.no_grad()
    def f_to_idx(self, f_BChw: torch.Tensor, return_fhat: bool = False, return_margin: bool = False):
        """Features (B, Cvae, pn_K, pn_K) -> list of token maps (B, pn^2); optionally cumulative f_hat per scale,
        and (last) each image's smallest nearest-code margin per scale, (B, K) (nearest_code): an error in f leaves
        every token unchanged if, at each scale, its area-pooled per-position norm stays below that scale's margin
        (with equal tokens so far, the residuals differ by the same error; pooling averages positions, so the
        unpooled per-position norm bounds it)."""
        B, C, H, W = f_BChw.shape
        f_rest = f_BChw.detach().clone()
        f_hat = torch.zeros_like(f_rest)
        idx_list, fhat_list = [], []
        K = len(self.patch_nums)
        margin_BK = f_rest.new_empty(B, K) if return_margin else None
        for si, pn in enumerate(self.patch_nums):
            z_BChw = F.interpolate(f_rest, size=(pn, pn), mode="area") if si != K - 1 else f_rest
            idx_Bl = self._code_map(z_BChw, None if margin_BK is None else margin_BK[:, si])
            h_BChw = self.upsample_phi(self.embed_idx(idx_Bl, pn), si)
            f_hat.add_(h_BChw)
            f_rest.sub_(h_BChw)
            idx_list.append(idx_Bl)
            if return_fhat:
                fhat_list.append(f_hat.clone())
        out = (idx_list,) + ((fhat_list,) if return_fhat else ()) + ((margin_BK,) if return_margin else ())
        return out if len(out) > 1 else idx_list

    # ----------------------------------------------------------------------------------------- decode
    def idx_to_fhat(self, idx_list: list[torch.Tensor], cumulative: bool = False):
        """Token maps -> f_hat (B, Cvae, pn_K, pn_K); with cumulative=True the list after each scale."""
        H = self.patch_nums[-1]
        B = idx_list[0].shape[0]
        f_hat = self.embedding.weight.new_zeros(B, self.Cvae, H, H)
        out = []
        for si, idx_Bl in enumerate(idx_list):
            pn = self.patch_nums[si]
            f_hat = f_hat + self.upsample_phi(self.embed_idx(idx_Bl, pn), si)
            if cumulative:
                out.append(f_hat)
        return out if cumulative else f_hat

    def idx_to_var_input(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        """Teacher-forcing input (B, L - pn_1^2, Cvae): f_hat after scales 1..k, area-resized to pn_{k+1}."""
        B = idx_list[0].shape[0]
        H = self.patch_nums[-1]
        f_hat = self.embedding.weight.new_zeros(B, self.Cvae, H, H)
        next_scales = []
        for si in range(len(self.patch_nums) - 1):
            h_BChw = self.embed_idx(idx_list[si], self.patch_nums[si])
            f_hat = f_hat + self.upsample_phi(h_BChw, si)
            pn_next = self.patch_nums[si + 1]
            next_scales.append(F.interpolate(f_hat, size=(pn_next, pn_next), mode="area")
                               .reshape(B, self.Cvae, -1).transpose(1, 2))
        return torch.cat(next_scales, dim=1)

    def next_input(self, si: int, f_hat: torch.Tensor, h_BChw: torch.Tensor):
        """The incremental f_hat update used while sampling: returns (f_hat, next scale's input map).

        At the last scale the second value is f_hat itself.
        """
        f_hat = f_hat + self.upsample_phi(h_BChw, si)
        if si == len(self.patch_nums) - 1:
            return f_hat, f_hat
        pn_next = self.patch_nums[si + 1]
        return f_hat, F.interpolate(f_hat, size=(pn_next, pn_next), mode="area")

    # ----------------------------------------------------------------------------------------- train
    def forward(self, f_BChw: torch.Tensor):
        """Training forward: (f_hat with straight-through gradient, vq_loss, usage % per scale).

        vq_loss averages over scales the codebook term ||f_hat - sg(f)||^2 and the commitment term
        beta * ||sg(f_hat) - f||^2 (paper eq. 5), each on the cumulative f_hat after the scale.
        """
        B, C, H, W = f_BChw.shape
        f_no_grad = f_BChw.detach()
        f_rest = f_no_grad.clone()
        f_hat = torch.zeros_like(f_rest)
        vq_loss = f_BChw.new_zeros(())
        usage = []
        K = len(self.patch_nums)
        # code hits of this batch summed over scales, left on the module for the trainer's dead-code restart (saves
        # it a second encoder pass per step); a side record only, the returned values do not depend on it
        self.last_hits_V = torch.zeros(self.embedding.num_embeddings, dtype=torch.long, device=f_BChw.device)
        for si, pn in enumerate(self.patch_nums):
            z_BChw = F.interpolate(f_rest, size=(pn, pn), mode="area") if si != K - 1 else f_rest
            idx_N = self.nearest_code(z_BChw.permute(0, 2, 3, 1).reshape(-1, C))
            hits_V = torch.bincount(idx_N, minlength=self.embedding.num_embeddings)
            self.last_hits_V += hits_V
            usage.append((hits_V > 0).float().mean().item() * 100)
            h_BChw = self.upsample_phi(self.embed_idx(idx_N.view(B, pn * pn), pn), si)
            f_hat = f_hat + h_BChw
            f_rest = f_rest - h_BChw.detach()
            vq_loss = vq_loss + F.mse_loss(f_hat, f_no_grad) + self.cfg.beta * F.mse_loss(f_hat.detach(), f_BChw)
        vq_loss = vq_loss / K
        f_hat_st = (f_hat.detach() - f_no_grad) + f_BChw   # straight-through estimator
        return f_hat_st, vq_loss, usage
