"""The raster-scan AR baseline of the paper's Table 3 (row 1): a decoder-only GPT-2-style transformer that
predicts the tokens of ONE token map (the tokenizer's final scale, pn x pn) one at a time in raster order.

It shares the VAR blocks (var/transformer.py), so the Table 3 switches mean the same thing for both kinds:
`adaln` off gives plain pre-LayerNorm blocks (GPT-2; the class is only the start token), `attn_l2_norm` off gives
ordinary softmax(q k^T / sqrt(d)) attention. Only the sequence differs: a causal (lower-triangular) mask instead
of VAR's block-causal one, token embeddings instead of f_hat features, one learned position per token.

Inputs (teacher forcing, `logits_BLV = ar(label_B, idx_BLm1)`): the first L-1 tokens, int64 (B, L-1); position 0
is the class embedding, position t >= 1 the embedding of token t-1, so logits[:, t] predict token t from the class
and tokens < t. `sample_ar` decodes with a per-block KV cache and the VAR sampler's filter / draw functions.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .blocks import AdaLNBeforeHead, AdaLNSelfAttn
from .config import ARConfig, single_scale  # noqa: F401 (re-exported)
from .sampling import draw, filter_top_k_top_p_, guidance_weight, resolve_labels
from .transformer import VAR


class AR(nn.Module):
    checkpoint_kind = "ar"      # read by var.train.train_var and var.checkpoint.MODEL_KINDS

    def __init__(self, cfg: ARConfig):
        super().__init__()
        self.cfg = cfg
        C, V = cfg.embed_dim, cfg.vocab_size
        self.C, self.L, self.num_classes = C, cfg.seq_len, cfg.num_classes
        self.class_emb = nn.Embedding(cfg.num_classes + 1, C)      # start token / AdaLN condition; +1: null class
        self.tok_emb = nn.Embedding(V, C)
        self.pos_embed = nn.Parameter(torch.empty(1, self.L, C))   # one learned position per raster index
        # Causal mask: query t sees key s iff s <= t.
        self.register_buffer("attn_bias_for_masking", torch.full((self.L, self.L), -torch.inf).triu(1)
                             .reshape(1, 1, self.L, self.L))
        if cfg.adaln and cfg.shared_aln:
            self.shared_ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C))
        dpr = [cfg.drop_path_rate * i / (cfg.depth - 1) if cfg.depth > 1 else 0.0 for i in range(cfg.depth)]
        self.blocks = nn.ModuleList([AdaLNSelfAttn(cfg, i, dpr[i]) for i in range(cfg.depth)])
        self.head_nm = AdaLNBeforeHead(C, C, cfg.norm_eps, cfg.adaln)
        self.head = nn.Linear(C, V)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self, init_adaln: float = 0.5, init_adaln_gamma: float = 1e-5, init_head: float = 0.02):
        """VAR's init (truncated normal, std sqrt(1/(3C)); GPT-2 residual scaling 1/sqrt(2 depth))."""
        std = math.sqrt(1 / self.C / 3)
        for name, p in self.named_parameters():
            if p.ndim >= 2 and not name.endswith("ada_gss"):
                nn.init.trunc_normal_(p, std=std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
        for m in self.modules():
            if isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.head.weight.mul_(init_head)
        for b in self.blocks:
            b.attn.proj.weight.div_(math.sqrt(2 * len(self.blocks)))
            b.ffn.fc2.weight.div_(math.sqrt(2 * len(self.blocks)))
            if b.attn.attn_l2_norm:
                b.attn.scale_mul_1H11.fill_(math.log(4.0))
            for lin in ([b.ada_lin[-1]] if hasattr(b, "ada_lin") else []) + \
                       ([self.shared_ada_lin[-1]] if hasattr(self, "shared_ada_lin") else []):
                lin.weight[2 * self.C:].mul_(init_adaln)
                lin.weight[:2 * self.C].mul_(init_adaln_gamma)
        if self.cfg.adaln:
            self.head_nm.ada_lin[-1].weight.mul_(init_adaln)

    # ------------------------------------------------------------------------------------------ helpers
    def teacher_forcing_input(self, idx_BL: torch.Tensor) -> torch.Tensor:
        """Ground-truth tokens (B, L) -> the model input (B, L-1): every token but the last (the shift right)."""
        return idx_BL[:, :-1]

    def block_cond(self, cond_BD: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "shared_ada_lin"):
            return self.shared_ada_lin(cond_BD).view(-1, 1, 6, self.C)
        return cond_BD

    def modulations(self, cond_BD: torch.Tensor) -> list:
        cond = self.block_cond(cond_BD)
        return [b.modulation(cond) if b.adaln else None for b in self.blocks]

    def logits(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_nm(x_BLC, cond_BD)).float()

    def new_kv_cache(self, B: int):
        shape = (B, self.cfg.num_heads, self.L, self.cfg.head_dim)
        ref = self.pos_embed
        return [(ref.new_empty(shape), ref.new_empty(shape)) for _ in self.blocks]

    # The same per-token logic as VAR's (blocks against a KV cache; label dropout for CFG). Without a mask
    # forward_cached is only valid for one new token per step, which is how the AR sampler feeds it.
    forward_cached = VAR.forward_cached
    drop_labels = VAR.drop_labels

    # ------------------------------------------------------------------------------------------ forward
    def forward(self, label_B: torch.Tensor, idx_BLm1: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Teacher-forced forward: labels (B,) and tokens 0..L-2 (B, L-1) int64 -> logits (B, L, V) float32."""
        if self.training:
            label_B = self.drop_labels(label_B, generator)
        cond_BD = self.class_emb(label_B)
        x_BLC = torch.cat((cond_BD.unsqueeze(1), self.tok_emb(idx_BLm1.long())), dim=1) + self.pos_embed
        cond = self.block_cond(cond_BD)
        for block in self.blocks:
            x_BLC = block(x_BLC, cond, self.attn_bias_for_masking)
        return self.logits(x_BLC, cond_BD)


@torch.no_grad()
def sample_ar(ar: AR, vqvae, B: int, label_B=None, *, seed: int | None = None, cfg: float = 0.0, top_k: int = 0,
              top_p: float = 0.0, cfg_schedule: str = "linear", generator: torch.Generator | None = None,
              decode: bool = True):
    """Generate B images token by token. Returns (idx_BL int64 (B, L) in raster order, images (B, 3, H, W) in
    [0, 1], or None with decode=False).

    As the VAR sampler (var/sampling.py): the conditional and unconditional halves run as one batch of 2B at
    every step (so measured costs compare like with like), guided logits (1 + t) l_cond - t l_uncond, then
    top-k / top-p filtering and one multinomial draw. The guidance weight t follows VAR's linear ramp over the
    generation progress, t = cfg * i / (L - 1) at token i (`cfg_schedule='linear'`), or is constant
    (`'constant'`, t = cfg, the usual AR convention): var.sampling.guidance_weight, the VAR sampler's function.
    The paper's row 1 has no CFG, where both are identical.
    """
    guidance_weight(cfg, cfg_schedule, 0, 1)      # an unknown schedule fails before any work
    device = ar.pos_embed.device
    if seed is not None:
        generator = generator or torch.Generator(device=device)
        generator.manual_seed(seed)
    labels = resolve_labels(ar, B, label_B, generator, device)
    cond_2BD = ar.class_emb(torch.cat((labels, torch.full_like(labels, ar.num_classes))))   # [cond; uncond]
    mods, kv_cache = ar.modulations(cond_2BD), ar.new_kv_cache(2 * B)
    L = ar.L
    idx_BL = torch.empty(B, L, dtype=torch.long, device=device)
    x_2B1C = cond_2BD.unsqueeze(1) + ar.pos_embed[:, :1]
    for i in range(L):
        logits_2B1V = ar.logits(ar.forward_cached(x_2B1C, mods, kv_cache, i), cond_2BD)
        t = guidance_weight(cfg, cfg_schedule, i, L)
        logits_B1V = (1 + t) * logits_2B1V[:B] - t * logits_2B1V[B:]
        filter_top_k_top_p_(logits_B1V, top_k, top_p)
        tok_B1 = draw(logits_B1V, generator)
        idx_BL[:, i] = tok_B1[:, 0]
        if i != L - 1:
            x_2B1C = (ar.tok_emb(tok_B1) + ar.pos_embed[:, i + 1:i + 2]).repeat(2, 1, 1)
    if not decode:
        return idx_BL, None
    return idx_BL, vqvae.idx_to_img([idx_BL]).float().add(1).mul(0.5)

