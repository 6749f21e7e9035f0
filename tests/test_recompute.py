"""Activation recompute (TrainConfig.recompute_blocks / recompute_ffn) is a memory switch: the same loss and
gradients as the plain forward, eager and under torch.compile (one graph per step, or per block: compile_scope),
with drop-path and label dropout on."""
import numpy as np
import pytest
import torch

from var.config import VARConfig, VQVAEConfig, build_config
from var.token_loss import blockwise_compiled_forward_loss, compiled_forward_loss, forward_loss, make_loss_fn
from var.train import TrainConfig, train_var
from var.transformer import VAR
from var.vqvae import VQVAE

PNS = (1, 2, 3)


def tiny(seed=0):
    torch.manual_seed(seed)
    var = VAR(VARConfig(depth=3, num_classes=3, vocab_size=16, z_channels=4, patch_nums=PNS, embed_dim_override=32,
                        num_heads_override=2, cond_drop_rate=0.25, drop_path_rate_override=0.2)).train()
    for b in var.blocks:   # AdaLN gammas far from their ~0 init, so that drop-path and every block change the loss
        b.ada_lin[-1].weight.data.normal_(0, 0.2)
    var.head.weight.data.normal_(0, 0.5)
    return var


def loss_and_grads(var, fn, calls=2, **kw):
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(0)
    data = torch.Generator().manual_seed(2)
    label_B = torch.randint(0, 3, (5,), generator=data)
    x = torch.randn(5, 13, 4, generator=data)
    idx = torch.randint(0, 16, (5, 14), generator=data)
    out = []
    for _ in range(calls):          # several calls: the drop-path / label-dropout draws advance identically
        var.zero_grad(set_to_none=True)
        loss = fn(var, label_B, x, idx, g, 0.1, False, **kw)
        loss.backward()
        out.append((loss.item(), [p.grad.clone() for p in var.parameters()]))
    return out


@pytest.mark.parametrize("kw", [dict(recompute_blocks=2), dict(recompute_ffn=True),
                                dict(recompute_blocks=1, recompute_ffn=True), dict(recompute_blocks=3)])
def test_eager_recompute_is_bitwise_the_plain_step(kw):
    var = tiny()
    ref = loss_and_grads(var, forward_loss)
    got = loss_and_grads(var, forward_loss, **kw)
    for (l_r, g_r), (l_g, g_g) in zip(ref, got):
        assert l_r == l_g
        assert all(torch.equal(a, b) for a, b in zip(g_r, g_g))
    assert ref[0][0] != ref[1][0]            # the second call drew other masks: the RNG replay is really tested


def test_compiled_recompute_computes_the_eager_function():
    torch.set_num_threads(2)
    var = tiny()
    ref = loss_and_grads(var, forward_loss)
    got = loss_and_grads(var, compiled_forward_loss(1.0), recompute_blocks=1, recompute_ffn=True)
    for (l_r, g_r), (l_g, g_g) in zip(ref, got):
        assert abs(l_r - l_g) < 1e-6 * l_r
        scale = max(g.abs().max().item() for g in g_r)
        assert max((a - b).abs().max().item() for a, b in zip(g_r, g_g)) < 1e-5 * scale


@pytest.mark.parametrize("kw", [dict(), dict(recompute_blocks=2)])
def test_blockwise_compile_computes_the_eager_function(kw):
    """compile_scope 'block': every block through one compiled AdaLNSelfAttn.forward (drop-path rates differ per
    block and are not read, so they do not multiply the graphs), recompute as eager checkpoints of it."""
    torch.set_num_threads(2)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    var = tiny()
    ref = loss_and_grads(var, forward_loss)
    got = loss_and_grads(var, blockwise_compiled_forward_loss(1.0), **kw)
    for (l_r, g_r), (l_g, g_g) in zip(ref, got):
        assert abs(l_r - l_g) < 1e-6 * l_r
        scale = max(g.abs().max().item() for g in g_r)
        assert max((a - b).abs().max().item() for a, b in zip(g_r, g_g)) < 1e-5 * scale
    # block 0 (drop-path rate 0: no mask) and blocks 1-2 (a mask each), plus the cross entropy: a few graphs,
    # not one per block and call
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] <= 4


def test_recompute_keys_are_speed_only(tmp_path):
    """A train_var run with recompute equals the plain run bit for bit on CPU, and resumes the plain run's state."""
    torch.manual_seed(0)
    vq = VQVAE(VQVAEConfig(vocab_size=16, z_channels=4, ch=32, ch_mult=(1, 2), num_res_blocks=1, using_sa=False,
                           using_mid_sa=False, patch_nums=PNS, share_quant_resi=2))
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 3, 16)
    toks = {"idx_NL": ((lab[:, None] * 5 + rng.integers(0, 3, (16, 14))) % 16).astype(np.int16),
            "labels_N": lab.astype(np.int64), "patch_nums": np.array(PNS)}
    base = dict(batch_size=4, max_steps=6, base_lr_per_256=0.5, seed=3, ckpt_every_steps=3, log_every_steps=100)
    m_plain = train_var(tiny(), vq, toks, toks, build_config(TrainConfig, base, "train"), out_dir=tmp_path / "p",
                        log=lambda s: None)
    cfg_r = build_config(TrainConfig, dict(base, recompute_blocks=2, recompute_ffn=True), "train")
    var_r = tiny()
    m_r = train_var(var_r, vq, toks, toks, cfg_r, out_dir=tmp_path / "r", log=lambda s: None)
    assert m_r["val_loss"] == m_plain["val_loss"]
    plain = torch.load(tmp_path / "p" / "state.pt", weights_only=True)["model"]
    assert all(torch.equal(v, var_r.state_dict()[k]) for k, v in plain.items())
    var_p2 = tiny()
    assert train_var(var_p2, vq, toks, toks, cfg_r, out_dir=tmp_path / "p", log=lambda s: None)["step"] == 6
    assert make_loss_fn(build_config(TrainConfig, base, "train")) is forward_loss
    with pytest.raises(Exception, match="recompute_blocks"):
        build_config(TrainConfig, dict(base, recompute_blocks=-1), "train")
    # the low-memory setting through the trainer: per-block compilation with eager recompute, the same run to
    # float rounding, and it resumes the plain run's state (speed-only keys)
    cfg_b = build_config(TrainConfig, dict(base, compile=True, compile_scope="block", recompute_blocks=2), "train")
    m_b = train_var(tiny(), vq, toks, toks, cfg_b, out_dir=tmp_path / "b", log=lambda s: None)
    assert abs(m_b["val_loss"] - m_plain["val_loss"]) < 1e-6 * m_plain["val_loss"]
    assert train_var(tiny(), vq, toks, toks, cfg_b, out_dir=tmp_path / "p", log=lambda s: None)["step"] == 6
    with pytest.raises(Exception, match="compile_scope"):
        build_config(TrainConfig, dict(base, compile=True, compile_scope="layer"), "train")
