"""The VAR transformer: a GPT-style decoder with AdaLN that predicts every token of scale k+1 from scales 1..k.

Paper Sec. 3.3: the start token is the class embedding; each later token is the word embedding of the
teacher-forcing input (f_hat of the coarser scales, area-resized to the next scale); attention is block-causal
over scales (a token sees every token of its own and coarser scales). Module names follow the released
checkpoints (`var_d16.pth` ...) so they load strictly.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from .blocks import AdaLNBeforeHead, AdaLNSelfAttn, InjectedRandomness, _call_block, drop_path_masks
from .config import VARConfig


class VAR(nn.Module):
    def __init__(self, cfg: VARConfig):
        super().__init__()
        self.cfg = cfg
        C, D, V = cfg.embed_dim, cfg.embed_dim, cfg.vocab_size
        self.C, self.L, self.num_classes = C, cfg.seq_len, cfg.num_classes
        self.patch_nums = tuple(cfg.patch_nums)
        self.first_l = self.patch_nums[0] ** 2
        self.begin_ends = cfg.begin_ends

        self.pos_start = nn.Parameter(torch.empty(1, self.first_l, C))
        self.pos_1LC = nn.Parameter(torch.empty(1, self.L, C))
        lvl_1L = torch.cat([torch.full((pn * pn,), i) for i, pn in enumerate(self.patch_nums)]).view(1, self.L)
        self.register_buffer("lvl_1L", lvl_1L)
        # Block-causal mask over scales: query t sees key s iff scale(s) <= scale(t).
        self.register_buffer("attn_bias_for_masking", torch.where(
            lvl_1L.view(1, self.L, 1) >= lvl_1L.view(1, 1, self.L), 0.0, -torch.inf).reshape(1, 1, self.L, self.L))
        self.word_embed = nn.Linear(cfg.z_channels, C)
        self.class_emb = nn.Embedding(cfg.num_classes + 1, C)   # the extra row is the null class (CFG)
        self.lvl_embed = nn.Embedding(len(self.patch_nums), C)
        if cfg.adaln and cfg.shared_aln:
            self.shared_ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * C))
        dpr = [cfg.drop_path_rate * i / (cfg.depth - 1) if cfg.depth > 1 else 0.0 for i in range(cfg.depth)]  # linspace
        self.blocks = nn.ModuleList([AdaLNSelfAttn(cfg, i, dpr[i]) for i in range(cfg.depth)])
        self.head_nm = AdaLNBeforeHead(C, D, cfg.norm_eps, cfg.adaln)
        self.head = nn.Linear(C, V)
        self.attention = "sdpa"     # or "flex": how forward() applies the block-causal mask (same function)
        self._block_mask = None
        self.init_weights()

    # ------------------------------------------------------------------------------------------ init
    @torch.no_grad()
    def init_weights(self, init_adaln: float = 0.5, init_adaln_gamma: float = 1e-5, init_head: float = 0.02):
        """Truncated-normal init with std sqrt(1/(3C)); AdaLN gammas start near zero so blocks start as identity."""
        std = math.sqrt(1 / self.C / 3)
        for name, p in self.named_parameters():
            if p.ndim >= 2 and not name.endswith("ada_gss"):
                nn.init.trunc_normal_(p, std=std)
            elif name.endswith("bias") or name.endswith("q_bias") or name.endswith("v_bias"):
                nn.init.zeros_(p)
        nn.init.trunc_normal_(self.pos_start, std=std)
        nn.init.trunc_normal_(self.pos_1LC, std=std)
        nn.init.trunc_normal_(self.lvl_embed.weight, std=std)
        nn.init.trunc_normal_(self.class_emb.weight, std=std)
        for m in self.modules():
            if isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.head.weight.mul_(init_head)
        depth = len(self.blocks)
        for i, b in enumerate(self.blocks):
            # Residual branches scaled down with depth (GPT-2 style) so deep models start stable.
            b.attn.proj.weight.div_(math.sqrt(2 * depth))
            b.ffn.fc2.weight.div_(math.sqrt(2 * depth))
            if b.attn.attn_l2_norm:
                b.attn.scale_mul_1H11.fill_(math.log(4.0))
            if hasattr(b, "ada_lin"):
                w = b.ada_lin[-1].weight
                w[2 * self.C:].mul_(init_adaln)
                w[:2 * self.C].mul_(init_adaln_gamma)
        if hasattr(self, "shared_ada_lin"):
            w = self.shared_ada_lin[-1].weight
            w[2 * self.C:].mul_(init_adaln)
            w[:2 * self.C].mul_(init_adaln_gamma)
        if self.cfg.adaln:
            self.head_nm.ada_lin[-1].weight.mul_(init_adaln)

    # ------------------------------------------------------------------------------------------ helpers
    def block_cond(self, cond_BD: torch.Tensor) -> torch.Tensor:
        """What the blocks receive: the class embedding, or the shared AdaLN projection (B, 1, 6, C)."""
        if hasattr(self, "shared_ada_lin"):
            return self.shared_ada_lin(cond_BD).view(-1, 1, 6, self.C)
        return cond_BD

    def logits(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        """Head in the model's dtype; logits returned as float32."""
        return self.head(self.head_nm(x_BLC, cond_BD)).float()

    def modulations(self, cond_BD: torch.Tensor) -> list:
        """Every block's AdaLN modulation for these classes (None per block with AdaLN off)."""
        cond = self.block_cond(cond_BD)
        return [b.modulation(cond) if b.adaln else None for b in self.blocks]

    def new_kv_cache(self, B: int, device=None, dtype=None, max_len: int | None = None,
                     num_blocks: int | None = None):
        """Preallocated per-block (k, v) buffers (B, H, L, hd): filled scale by scale while sampling. num_blocks:
        for the first that many blocks only (default all)."""
        H, hd = self.cfg.num_heads, self.cfg.head_dim
        ref = self.pos_1LC
        shape = (B, H, max_len or self.L, hd)
        n = len(self.blocks) if num_blocks is None else num_blocks
        return [(torch.empty(shape, device=device or ref.device, dtype=dtype or ref.dtype),
                 torch.empty(shape, device=device or ref.device, dtype=dtype or ref.dtype)) for _ in range(n)]

    def forward_cached(self, x_BlC: torch.Tensor, mods: list, kv_cache: list, pos: int) -> torch.Tensor:
        """Run the blocks on one scale's tokens (positions [pos, pos + l)) against the KV cache; no mask is
        needed since a scale sees every earlier scale and itself."""
        for block, m, kv in zip(self.blocks, mods, kv_cache):
            x_BlC = block(x_BlC, None, None, kv=kv, pos=pos, mods=m)
        return x_BlC

    def block_mask(self):
        """The block-causal mask as a FlexAttention BlockMask (built once per device)."""
        dev = self.lvl_1L.device
        if self._block_mask is None or self._block_mask.kv_indices.device != dev:
            from torch.nn.attention.flex_attention import create_block_mask
            lvl_L = self.lvl_1L[0]

            def block_causal(b, h, q_idx, kv_idx):
                return lvl_L[q_idx] >= lvl_L[kv_idx]

            self._block_mask = create_block_mask(block_causal, None, None, self.L, self.L, device=dev)
        return self._block_mask

    def drop_labels(self, label_B: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Label dropout for classifier-free guidance: each label becomes the null class with prob cond_drop_rate."""
        if self.cfg.cond_drop_rate <= 0:
            return label_B
        u = torch.rand(label_B.shape, device=label_B.device, generator=generator)
        return torch.where(u < self.cfg.cond_drop_rate, self.num_classes, label_B)

    # ------------------------------------------------------------------------------------------ forward
    def forward(self, label_B: torch.Tensor, x_BLCv: torch.Tensor, generator: torch.Generator | None = None, *,
                recompute_blocks: int = 0, recompute_ffn: bool = False, block_fn=None,
                injected: InjectedRandomness | None = None) -> torch.Tensor:
        """Teacher-forced forward: labels (B,) and x (B, L - first_l, Cvae) -> logits (B, L, V) float32.

        Label dropout is applied only in training mode (the reference applies it in eval mode too).
        Training memory (the same function and gradients; TrainConfig.recompute_*): the first `recompute_blocks`
        blocks keep only their input and are recomputed in the backward (activation checkpointing); with
        `recompute_ffn` every other block recomputes its FFN.
        block_fn(block, x, cond, attn_bias, dp_masks, recompute_ffn) -> x: how a block is called (default: the
        block itself; TrainConfig.compile_scope 'block' passes a compiled AdaLNSelfAttn.forward). Recompute wraps
        that call, eagerly, so the autograd engine frees each recomputed block before the next one runs.
        injected (test-only, training mode): label dropout and drop-path decisions given instead of drawn
        (InjectedRandomness); `label_B` and `generator` are then not read and no random number is drawn.
        """
        B = x_BLCv.shape[0]
        if injected is not None:
            if not self.training:
                raise ValueError("injected randomness replaces training-mode draws; the model is in eval mode")
            label_B = injected.label_B
        elif self.training:
            label_B = self.drop_labels(label_B, generator)
        cond_BD = self.class_emb(label_B)
        sos = cond_BD.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start.expand(B, self.first_l, -1)
        x_BLC = torch.cat((sos, self.word_embed(x_BLCv.to(self.word_embed.weight.dtype))), dim=1)
        x_BLC = x_BLC + (self.lvl_embed(self.lvl_1L.expand(B, -1)) + self.pos_1LC)
        attn_bias = self.block_mask() if self.attention == "flex" else self.attn_bias_for_masking
        cond = self.block_cond(cond_BD)
        dp = [None] * (2 * len(self.blocks))
        if self.training:
            keep_KB = None if injected is None else injected.drop_path_keep.reshape(2 * len(self.blocks), B)
            dp = drop_path_masks(B, [b.drop_path.p for b in self.blocks for _ in range(2)], x_BLC.device, keep_KB)
        call = block_fn or _call_block
        for i, block in enumerate(self.blocks):
            masks = (dp[2 * i], dp[2 * i + 1])
            if i < recompute_blocks and torch.is_grad_enabled():
                x_BLC = checkpoint(call, block, x_BLC, cond, attn_bias, masks, False, use_reentrant=False)
            else:
                x_BLC = call(block, x_BLC, cond, attn_bias, masks, recompute_ffn and torch.is_grad_enabled())
        return self.logits(x_BLC, cond_BD)
