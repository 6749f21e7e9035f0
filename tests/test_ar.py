"""The raster-scan AR baseline (var/ar.py) and the Table 3 switches: each changes the model or sampler it claims."""
from __future__ import annotations

import pytest
import torch

from var.ar import AR, ARConfig, sample_ar, single_scale
from var.checkpoint import load_model_checkpoint, save_checkpoint
from var.config import VARConfig, VQVAEConfig
from var.sampling import sample
from var.token_data import model_inputs
from var.transformer import VAR
from var.vqvae import VQVAE

V, NC = 32, 3


def ar_model(**kw) -> AR:
    torch.manual_seed(0)
    return AR(ARConfig(**{"depth": 2, "embed_dim_override": 32, "num_classes": NC, "vocab_size": V,
                          "patch_nums": (4,), **kw})).eval()


def tiny_vqvae(patch_nums=(1, 2, 4)) -> VQVAE:
    torch.manual_seed(0)
    return VQVAE(VQVAEConfig(vocab_size=V, z_channels=8, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, using_sa=False,
                             using_mid_sa=False, patch_nums=patch_nums)).eval()


@pytest.mark.parametrize("adaln", [False, True])
def test_causal_mask_logits_at_t_ignore_tokens_from_t(adaln):
    ar = ar_model(adaln=adaln)
    torch.manual_seed(1)
    idx = torch.randint(0, V, (2, 16))
    label = torch.tensor([0, 2])
    with torch.no_grad():
        ref = ar(label, idx[:, :-1])
        for t in range(16):
            changed = idx.clone()
            changed[:, t:] = torch.randint(0, V, changed[:, t:].shape)
            out = ar(label, changed[:, :-1])
            # logits at position t predict token t from tokens < t: positions <= t are unchanged
            torch.testing.assert_close(out[:, :t + 1], ref[:, :t + 1], rtol=0, atol=1e-5)
            if t < 14:
                assert not torch.allclose(out[:, t + 2:], ref[:, t + 2:])


def test_kv_cache_sampling_equals_full_forward_argmax():
    ar = ar_model()
    vq = tiny_vqvae(single_scale(tiny_vqvae().cfg).patch_nums)
    label = torch.tensor([1, 2])
    idx_cached, img = sample_ar(ar, vq, 2, label, seed=0, cfg=0.0, top_k=1)     # top-1 = greedy
    assert img.shape == (2, 3, 16, 16) and 0 <= img.min() and img.max() <= 1
    idx = torch.zeros(2, 0, dtype=torch.long)
    with torch.no_grad():
        for t in range(16):
            logits = ar(label, torch.cat([idx, torch.zeros(2, 16 - 1 - t, dtype=torch.long)], 1))
            idx = torch.cat([idx, logits[:, t].argmax(-1, keepdim=True)], 1)
    assert torch.equal(idx_cached, idx)


def test_adaln_off_has_no_modulation_parameters():
    names_off = [n for n, _ in ar_model(adaln=False).named_parameters()]
    names_on = [n for n, _ in ar_model(adaln=True).named_parameters()]
    assert not any("ada_lin" in n or "ada_gss" in n for n in names_off)
    assert sum("ada_lin" in n for n in names_on) >= 2 * 2
    common = dict(depth=2, embed_dim_override=32, num_classes=NC, vocab_size=V, z_channels=8, patch_nums=(1, 2, 4))
    var_off = [n for n, _ in VAR(VARConfig(adaln=False, **common)).named_parameters()]
    assert not any("ada_lin" in n or "ada_gss" in n for n in var_off)


def test_attn_l2_norm_off_has_no_scale_mul():
    for model in (ar_model(attn_l2_norm=False),
                  VAR(VARConfig(depth=2, embed_dim_override=32, num_classes=NC, vocab_size=V, z_channels=8,
                                patch_nums=(1, 2, 4), attn_l2_norm=False))):
        assert not any("scale_mul" in n for n, _ in model.named_parameters())
    assert any("scale_mul" in n for n, _ in ar_model(attn_l2_norm=True).named_parameters())


def tokens_outside_top_k(top_k: int, n: int = 40) -> int:
    ar = ar_model()
    with torch.no_grad():
        ar.head.weight.mul_(200.0)          # peaked enough that top-k matters, flat enough to reach the tail
    vq = tiny_vqvae((4,))
    idx, _ = sample_ar(ar, vq, n, 0, seed=0, cfg=0.0, top_k=top_k, decode=False)
    outside = 0
    with torch.no_grad():
        logits = ar(torch.zeros(n, dtype=torch.long), idx[:, :-1])
    kth = logits.topk(3, dim=-1).values[..., -1]
    outside = int((logits.gather(-1, idx.unsqueeze(-1)).squeeze(-1) < kth).sum())
    return outside


def test_top_k_off_samples_outside_the_top_k():
    assert tokens_outside_top_k(top_k=3) == 0
    assert tokens_outside_top_k(top_k=0) > 0


def test_cfg_zero_ignores_the_null_class():
    vq = tiny_vqvae()
    torch.manual_seed(0)
    var = VAR(VARConfig(depth=2, embed_dim_override=32, num_classes=NC, vocab_size=V, z_channels=8,
                        patch_nums=(1, 2, 4))).eval()
    ar = ar_model(adaln=True)
    vq1 = tiny_vqvae((4,))
    with torch.no_grad():                       # sharper logits, so a changed null class changes draws
        var.head.weight.mul_(100.0)
        ar.head.weight.mul_(100.0)
    out = {}
    for cfg in (0.0, 2.0):
        a = sample(var, vq, 4, [0, 1, 2, 0], seed=3, cfg=cfg)[0]
        b = sample_ar(ar, vq1, 4, [0, 1, 2, 0], seed=3, cfg=cfg, decode=False)[0]
        with torch.no_grad():
            var.class_emb.weight[NC].normal_().mul_(10)      # a different null class
            ar.class_emb.weight[NC].normal_().mul_(10)
        a2 = sample(var, vq, 4, [0, 1, 2, 0], seed=3, cfg=cfg)[0]
        b2 = sample_ar(ar, vq1, 4, [0, 1, 2, 0], seed=3, cfg=cfg, decode=False)[0]
        out[cfg] = (all(torch.equal(x, y) for x, y in zip(a, a2)), torch.equal(b, b2))
    assert out[0.0] == (True, True)          # cfg 0: the null class never matters
    assert out[2.0] == (False, False)        # cfg > 0: it does


def test_ar_trains_with_the_var_trainer_inputs_and_checkpoints(tmp_path):
    ar = ar_model()
    idx = torch.randint(0, V, (2, 16))
    x = model_inputs(ar, None, idx, (4,))
    assert torch.equal(x, idx[:, :-1])
    assert ar(torch.tensor([0, 1]), x).shape == (2, 16, V)
    save_checkpoint(tmp_path / "ar.pt", ar, kind=ar.checkpoint_kind)
    back, ckpt = load_model_checkpoint(tmp_path / "ar.pt", kind="ar")
    assert ckpt["kind"] == "ar" and isinstance(back, AR) and back.cfg == ar.cfg


def test_arconfig_rejects_several_scales():
    with pytest.raises(ValueError, match="one scale"):
        ARConfig(patch_nums=(1, 2))


def test_var_only_train_switches_are_refused_for_ar(tmp_path):
    """Recompute and per-block compilation hook into VAR.forward; AR's trainer run says so instead of a TypeError."""
    import numpy as np

    from var.config import build_config
    from var.train import TrainConfig, train_var
    toks = {"idx_NL": np.zeros((4, 16), np.int16), "labels_N": np.zeros(4, np.int64), "patch_nums": np.array([4])}
    for extra, key in [(dict(recompute_blocks=1), "train.recompute_blocks"),
                       (dict(compile=True, compile_scope="block"), "train.compile_scope")]:
        cfg = build_config(TrainConfig, dict(batch_size=2, max_steps=1, **extra), "train")
        with pytest.raises(ValueError, match=key):
            train_var(ar_model().train(), tiny_vqvae((4,)), toks, toks, cfg, out_dir=tmp_path / key, log=lambda s: None)
    assert not any(tmp_path.glob("*/state.pt"))
