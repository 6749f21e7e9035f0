"""train_tokenizer on a tiny real VQVAE: learns, resumes bit-exactly, the GAN is inert before disc_start_step."""
import numpy as np
import pytest
import torch

from eval.recon import tokenizer_evaluator
from var.checkpoint import load_model_checkpoint
from var.config import ConfigError, VQVAEConfig, build_config
from var.io import load_torch
from var.tokenizer_train import PatchDiscriminator, TokenizerTrainConfig, hinge_d_loss, restart_dead_codes
from var.tokenizer_train import train_tokenizer as _train_tokenizer
from var.vqvae import VQVAE

PNS = (1, 2, 4)   # 8 px images with one 2x downsampling level


def make(seed=0, N=16, Nval=8):
    torch.manual_seed(seed)
    vq = VQVAE(VQVAEConfig(vocab_size=16, z_channels=4, ch=32, ch_mult=(1, 2), num_res_blocks=1, using_sa=False,
                           using_mid_sa=False, patch_nums=PNS, share_quant_resi=2))
    rng = np.random.default_rng(seed)

    def images(n):   # smooth colour blobs: learnable at 8 px
        base = rng.integers(0, 256, (n, 1, 1, 3))
        ramp = np.linspace(-60, 60, 8)[None, :, None, None]
        return np.clip(base + ramp, 0, 255).astype(np.uint8) * np.ones((1, 1, 8, 1), np.uint8)
    return vq, images(N), images(Nval)


def train_tokenizer(vq, tr, va, cfg, **kw):
    """The stage's wiring: validation metrics on `va` after every epoch."""
    evaluate = tokenizer_evaluator(va, cfg.eval_batch_size or cfg.batch_size, torch.device("cpu"))
    return _train_tokenizer(vq, tr, cfg, evaluate=evaluate, **kw)


CFG = dict(batch_size=4, epochs=2, lr=2e-3, seed=3, ckpt_every_steps=2, log_every_steps=1000)
quiet = dict(device="cpu", log=lambda s: None)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _equal_weights(a, b):
    assert a.keys() == b.keys()
    return all(torch.equal(a[k], b[k]) for k in a)


def test_learns_and_writes_checkpoint(tmp_path):
    vq, tr, va = make()
    cfg = build_config(TokenizerTrainConfig, dict(CFG, epochs=6), "tokenizer_train")
    m = train_tokenizer(vq, tr, va, cfg, out_dir=tmp_path, **quiet)
    first, last = m["history"][0], m["history"][-1]
    assert last["val_psnr"] > first["val_psnr"] and np.isfinite(last["val_psnr"])
    assert len(m["val_usage_per_scale"]) == len(PNS) and all(0 < u <= 100 for u in m["val_usage_per_scale"])
    model, ck = load_model_checkpoint(tmp_path / "model.pt", kind="vqvae")
    assert ck["step"] == 24 and _equal_weights(model.state_dict(), vq.state_dict())


def test_interrupt_and_resume_is_bitwise_identical(tmp_path):
    cfg = build_config(TokenizerTrainConfig, dict(CFG, lambda_g=0.5, disc_start_step=3, disc_ch=8, disc_layers=1,
                                                  dead_code_restart=True, dead_code_every_steps=3),
                       "tokenizer_train")
    vq, tr, va = make()
    ref = train_tokenizer(vq, tr, va, cfg, out_dir=tmp_path / "ref", **quiet)

    def die_at_5(step, n, info):
        if step == 5:
            raise KeyboardInterrupt   # after step 5, before its state would be saved: state.pt holds step 4
    vq2, tr, va = make()
    with pytest.raises(KeyboardInterrupt):
        train_tokenizer(vq2, tr, va, cfg, out_dir=tmp_path / "b", progress=die_at_5, **quiet)
    assert load_torch(tmp_path / "b" / "state.pt")["step"] == 4
    torch.manual_seed(12345)   # the resumed run must not depend on the RNG state it finds
    vq3, tr, va = make(seed=1)[0], tr, va   # different initial weights: they must come from state.pt
    got = train_tokenizer(vq3, tr, va, cfg, out_dir=tmp_path / "b", **quiet)
    assert _equal_weights(vq.state_dict(), vq3.state_dict())
    assert ref["history"] == got["history"]
    sa, sb = load_torch(tmp_path / "ref" / "state.pt"), load_torch(tmp_path / "b" / "state.pt")
    assert _equal_weights(sa["disc"], sb["disc"]) and len(sa["disc"]) > 0


def test_gan_has_no_effect_before_disc_start(tmp_path):
    vq_a, tr, va = make()
    train_tokenizer(vq_a, tr, va, build_config(TokenizerTrainConfig, CFG, "t"), out_dir=tmp_path / "a", **quiet)
    vq_b, tr, va = make()
    gan = dict(CFG, lambda_g=1.0, disc_start_step=100, disc_ch=8, disc_layers=1)
    train_tokenizer(vq_b, tr, va, build_config(TokenizerTrainConfig, gan, "t"), out_dir=tmp_path / "b", **quiet)
    assert _equal_weights(vq_a.state_dict(), vq_b.state_dict())
    vq_c, tr, va = make()
    on = dict(gan, disc_start_step=2)
    m = train_tokenizer(vq_c, tr, va, build_config(TokenizerTrainConfig, on, "t"), out_dir=tmp_path / "c", **quiet)
    assert not _equal_weights(vq_a.state_dict(), vq_c.state_dict()) and np.isfinite(m["val_psnr"])


def test_losses_and_config():
    d = PatchDiscriminator(ch=8, n_layers=2)
    assert d(torch.zeros(2, 3, 16, 16)).shape[:2] == (2, 1)
    assert hinge_d_loss(torch.full((4,), 2.0), torch.full((4,), -2.0)).item() == 0.0
    emb_VC = torch.zeros(4, 2)
    n = restart_dead_codes(emb_VC, torch.tensor([3, 0, 1, 0]), torch.ones(5, 2) * 7)
    assert n == 2 and emb_VC[1].eq(7).all() and emb_VC[3].eq(7).all() and emb_VC[0].eq(0).all()
    vq, tr, va = make()
    with pytest.raises(ValueError, match="perceptual"):
        train_tokenizer(vq, tr, va, build_config(TokenizerTrainConfig, dict(CFG, lambda_p=1.0), "t"),
                        out_dir="/nonexistent/never", **quiet)
    with pytest.raises(ConfigError, match="t.lambda_perc"):
        build_config(TokenizerTrainConfig, {"lambda_perc": 1.0}, "t")


def test_perceptual_plugs_in(tmp_path):
    vq, tr, va = make()
    calls = []

    def l1(rec, img):
        calls.append(rec.shape)
        return (rec - img).abs().flatten(1).mean(1)
    cfg = build_config(TokenizerTrainConfig, dict(CFG, epochs=1, lambda_p=0.5), "t")
    train_tokenizer(vq, tr, va, cfg, out_dir=tmp_path, perceptual=l1, **quiet)
    assert len(calls) == 4


def test_tokenizer_lr_schedule():
    """Linear warm-up from 0, then cosine down to final_lr_ratio at the last step; 1.0 keeps the lr constant."""
    from var.tokenizer_train import tokenizer_lr_scale
    cfg = TokenizerTrainConfig(warmup_steps=4, final_lr_ratio=0.05)
    s = [tokenizer_lr_scale(cfg, i, 24) for i in range(24)]
    assert s[:4] == [0.25, 0.5, 0.75, 1.0] and abs(s[-1] - 0.05) < 1e-12
    assert all(a >= b for a, b in zip(s[3:], s[4:]))                       # monotone after the warm-up
    assert abs(tokenizer_lr_scale(cfg, 4 + 10, 24) - (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * 10 / 19)))) < 1e-12
    const = TokenizerTrainConfig(warmup_steps=2)
    assert [tokenizer_lr_scale(const, i, 10) for i in range(10)] == [0.5] + [1.0] * 9
