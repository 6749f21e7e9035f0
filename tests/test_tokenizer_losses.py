"""Each term of the tokenizer loss (5) is computed and applied as documented; PSNR/SSIM/rFID, LPIPS loading,
the independent-scale ablation quantiser, fine-tuning init and the fp32 quantiser under autocast."""
import math

import numpy as np
import pytest
import torch

from eval.evalnet import EvalNet, EvalNetConfig
from eval.recon import evaluate_tokenizer, gaussian_window, psnr, ssim
from var.checkpoint import save_checkpoint
from var.config import VQVAEConfig
from var.perceptual import LPIPS, VGG_CUTS, FeatureDistance, build_perceptual
from var.quant_independent import use_independent_quantizer
from var.tokenizer_train import (
    PatchDiscriminator,
    TokenizerTrainConfig,
    adaptive_weight,
    generator_loss,
    hinge_d_loss,
    init_tokenizer_weights,
    keep_quantizer_fp32,
)
from var.vqvae import VQVAE


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def tiny(beta=0.25, seed=0):
    torch.manual_seed(seed)
    return VQVAE(VQVAEConfig(vocab_size=16, z_channels=4, ch=32, ch_mult=(1, 2), num_res_blocks=1, using_sa=False,
                             using_mid_sa=False, patch_nums=(1, 2, 4), share_quant_resi=2, beta=beta))


def images(B=4, H=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 3, H, H, generator=g) * 2 - 1


def grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()}


def close(a, b, **kw):
    return all(torch.allclose(a[k], b[k], **kw) for k in a)


def cfg(**kw):
    return TokenizerTrainConfig(**kw)


# ------------------------------------------------------------------------------------------ PSNR / SSIM
def test_psnr_known_value():
    x = torch.full((2, 3, 8, 8), 0.5)
    assert torch.allclose(psnr(x + 0.1, x), torch.full((2,), 20.0, dtype=torch.float64))   # MSE 0.01 -> 20 dB


def test_ssim_constant_images_hand_computed():
    # constant images: zero variances, so SSIM = luminance term (2ab + C1) / (a^2 + b^2 + C1)
    a, b, c1 = 0.3, 0.7, 0.01 ** 2
    got = ssim(torch.full((1, 3, 16, 16), a, dtype=torch.float64), torch.full((1, 3, 16, 16), b, dtype=torch.float64))
    assert got.item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-9)


def _ssim_naive(x_CHW: np.ndarray, y_CHW: np.ndarray) -> float:
    """Wang et al. 2004 written out: an 11x11 Gaussian (sigma 1.5) window at every valid position."""
    r = np.arange(11) - 5
    g = np.exp(-r ** 2 / (2 * 1.5 ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    vals = []
    for c in range(x_CHW.shape[0]):
        for i in range(x_CHW.shape[1] - 10):
            for j in range(x_CHW.shape[2] - 10):
                px, py = x_CHW[c, i:i + 11, j:j + 11], y_CHW[c, i:i + 11, j:j + 11]
                mx, my = (w * px).sum(), (w * py).sum()
                vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
                cxy = (w * (px - mx) * (py - my)).sum()
                vals.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return float(np.mean(vals))


def test_ssim_matches_naive_reference_and_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 14, generator=g, dtype=torch.float64)
    y = (x + 0.2 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    got = ssim(x, y)
    for b in range(2):
        assert got[b].item() == pytest.approx(_ssim_naive(x[b].numpy(), y[b].numpy()), abs=1e-10)
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(ssim(y, x), got)
    worse = (x + 0.4 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    assert (ssim(x, worse) < got).all()
    w = gaussian_window()
    assert w.shape == (11,) and w.sum().item() == pytest.approx(1.0) and w.argmax().item() == 5


def test_evaluate_reports_ssim_rfid_and_usage():
    vq = tiny()
    imgs = ((images(8, seed=1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    feats = lambda x: x.reshape(len(x), -1)[:, :6].astype(np.float64) + np.arange(6)  # noqa: E731
    m = evaluate_tokenizer(vq, imgs, 4, torch.device("cpu"), features=feats)
    assert -1 <= m["val_ssim"] <= 1 and math.isfinite(m["val_psnr"]) and len(m["val_usage_per_scale"]) == 3
    assert math.isfinite(m["val_rfid_evalnet"]) and m["val_rfid_evalnet"] >= 0


# ------------------------------------------------------------------------------------------ loss terms
def test_perceptual_term_scales_gradient_and_is_inert_at_zero():
    vq, img = tiny(), images()
    torch.manual_seed(1)
    perc = FeatureDistance(EvalNet(EvalNetConfig(width=4, feature_dim=8), num_classes=3, image_size=16))
    g = {}
    for lam in (0.0, 1.0, 2.0):
        loss, _, info = generator_loss(vq, img, cfg(lambda_p=lam), 0, perceptual=perc)
        g[lam] = grads(vq, loss)
    g_none = grads(vq, generator_loss(vq, img, cfg(), 0, perceptual=None)[0])
    assert close(g[0.0], g_none, rtol=0, atol=0)                       # lambda_P = 0: no effect at all
    assert not close(g[1.0], g[0.0])                                   # applied
    dec = "decoder.conv_out.weight"
    assert torch.allclose(g[2.0][dec] - g[0.0][dec], 2 * (g[1.0][dec] - g[0.0][dec]), atol=1e-6)  # weighted by it
    assert torch.count_nonzero(g[1.0]["encoder.conv_in.weight"] - g[0.0]["encoder.conv_in.weight"]) > 0
    assert all(p.grad is None for p in perc.parameters())              # the backbone is frozen


def test_adversarial_term_only_after_disc_start_and_scaled_by_lambda_g():
    vq, img = tiny(), images()
    torch.manual_seed(2)
    disc = PatchDiscriminator(ch=8, n_layers=1)
    before = [grads(vq, generator_loss(vq, img, cfg(lambda_g=lg, disc_start_step=5), 4, disc=disc)[0])
              for lg in (0.1, 1.0)]
    assert close(before[0], before[1], rtol=0, atol=0)                 # before the start step: inert
    after = {lg: grads(vq, generator_loss(vq, img, cfg(lambda_g=lg, disc_start_step=5), 5, disc=disc)[0])
             for lg in (0.0, 0.5, 1.0)}
    assert close(after[0.0], before[0], rtol=0, atol=0)
    assert not close(after[0.5], after[0.0])
    k = "decoder.conv_out.weight"
    assert torch.allclose(after[1.0][k] - after[0.0][k], 2 * (after[0.5][k] - after[0.0][k]), atol=1e-6)
    assert all(p.grad is None for p in disc.parameters())              # the generator step does not train D
    _, _, info = generator_loss(vq, img, cfg(lambda_g=1.0), 0, disc=disc)
    assert info["adaptive_w"] > 0 and "g_loss" in info


def test_adaptive_weight_and_hinge_by_hand():
    w = torch.randn(3, 3, requires_grad=True)
    nll, g = (w * 2).sum(), (w * 0.5).sum()                            # grads: all 2 / all 0.5
    assert adaptive_weight(nll, g, w, 1e4).item() == pytest.approx(6.0 / (1.5 + 1e-4), rel=1e-6)
    assert adaptive_weight(nll, g, w, 3.0).item() == 3.0              # clamped
    assert hinge_d_loss(torch.tensor([0.5]), torch.tensor([0.0])).item() == pytest.approx(0.5 * (0.5 + 1.0))


@pytest.mark.parametrize("independent", [False, True])
def test_commitment_beta_scales_encoder_gradient_only(independent):
    a, b = tiny(beta=0.25), tiny(beta=0.5)
    b.load_state_dict(a.state_dict())
    if independent:
        use_independent_quantizer(a), use_independent_quantizer(b)
    img = images()
    ga, gb = (grads(m, m(img)[1]) for m in (a, b))                    # the VQ loss alone
    for n in ga:
        if n.startswith(("encoder.", "quant_conv.")):                   # commitment: beta * d/df ||sg(f_hat) - f||^2
            assert torch.allclose(gb[n], 2 * ga[n], rtol=1e-4, atol=1e-9), n
        elif n.startswith("quantize."):                                 # codebook term: beta-free
            assert torch.allclose(gb[n], ga[n], rtol=1e-5, atol=1e-9), n
        else:                                                           # decoder: no VQ gradient
            assert ga[n].abs().sum() == 0, n
    assert ga["encoder.conv_in.weight"].abs().sum() > 0 and ga["quantize.embedding.weight"].abs().sum() > 0
    # straight-through: the reconstruction loss reaches the encoder, not the codebook
    g_rec = grads(a, generator_loss(a, img, cfg(lambda_vq=0.0), 0)[0])
    assert g_rec["encoder.conv_in.weight"].abs().sum() > 0 and g_rec["quantize.embedding.weight"].abs().sum() == 0


# ------------------------------------------------------------------------------------------ perceptual files
def _write_fake_lpips(tmp_path):
    """Random VGG16 `features.*` tensors under torchvision's key names + LPIPS-layout lin heads."""
    from torchvision.models import vgg16
    torch.manual_seed(3)
    feats = vgg16(weights=None).features
    vgg_path, lin_path = tmp_path / "vgg16-397923af.pth", tmp_path / "vgg.pth"
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, vgg_path)
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 128, 256, 512, 512))},
               lin_path)
    return feats, vgg_path, lin_path


def test_lpips_loads_local_files_and_matches_its_definition(tmp_path):
    feats, vgg_path, lin_path = _write_fake_lpips(tmp_path)
    net = build_perceptual("lpips-vgg16", [vgg_path, lin_path])
    assert isinstance(net, LPIPS) and not any(p.requires_grad for p in net.parameters())
    x, y = images(2, 32, seed=4), images(2, 32, seed=5)
    d = net(x, y)
    assert d.shape == (2,) and (d > 0).all() and torch.allclose(net(x, x), torch.zeros(2))
    lins = torch.load(lin_path, weights_only=True)
    shift, scale = torch.tensor([-.030, -.088, -.188]).view(1, 3, 1, 1), torch.tensor([.458, .448, .450]).view(1, 3, 1, 1)
    hx, hy, ref, start = (x - shift) / scale, (y - shift) / scale, torch.zeros(2), 0
    for i, cut in enumerate(VGG_CUTS):
        hx, hy = feats[start:cut](hx), feats[start:cut](hy)
        nx = hx / (hx.square().sum(1, keepdim=True).sqrt() + 1e-10)
        ny = hy / (hy.square().sum(1, keepdim=True).sqrt() + 1e-10)
        ref += ((nx - ny).square() * lins[f"lin{i}.model.1.weight"]).sum(1).mean((1, 2))
        start = cut
    assert torch.allclose(d, ref, rtol=1e-5)


def test_lpips_missing_or_wrong_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"vgg16-397923af\.pth(.|\n)*vgg\.pth"):
        build_perceptual("lpips-vgg16", [tmp_path / "nope.pth"])
    _, vgg_path, lin_path = _write_fake_lpips(tmp_path)
    torch.save({"lin0.model.1.weight": torch.rand(1, 64, 1, 1)}, tmp_path / "bad.pth")
    with pytest.raises(RuntimeError, match="missing keys"):
        build_perceptual("lpips-vgg16", [vgg_path, tmp_path / "bad.pth"])
    with pytest.raises(FileNotFoundError, match="evalnet"):
        build_perceptual("evalnet", evalnet=None)


# ------------------------------------------------------------------------------------------ ablation quantiser
def test_independent_quantizer_definition():
    vq = tiny()
    use_independent_quantizer(vq)
    q = vq.quantize
    f = vq.encode_features(images()).detach()
    idx = q.f_to_idx(f)
    for si, pn in enumerate(q.patch_nums):   # each scale: nearest codes of area-downsampled f (no residual)
        z = torch.nn.functional.interpolate(f, size=(pn, pn), mode="area")
        assert torch.equal(idx[si], q.nearest_code(z.permute(0, 2, 3, 1).reshape(-1, 4)).view(-1, pn * pn))
    f_hat = q.idx_to_fhat(idx)
    h = [q.upsample_phi(q.embed_idx(i, pn), si) for si, (i, pn) in enumerate(zip(idx, q.patch_nums))]
    assert torch.allclose(f_hat, sum(h) / 3, atol=1e-6)
    assert torch.allclose(q(f)[0], f_hat, atol=1e-5)                   # training forward == encode/decode


# ------------------------------------------------------------------------------------------ init / autocast
def test_init_from_our_checkpoint_and_released_state_dict(tmp_path):
    src = tiny(seed=7)
    save_checkpoint(tmp_path / "model.pt", src, kind="vqvae")
    torch.save(src.state_dict(), tmp_path / "released.pth")
    for name in ("model.pt", "released.pth"):
        dst = tiny(seed=8)
        init_tokenizer_weights(dst, tmp_path / name, log=lambda s: None)
        assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    with pytest.raises(FileNotFoundError, match="init_from"):
        init_tokenizer_weights(tiny(), tmp_path / "absent.pth")


def test_quantizer_runs_outside_autocast():
    vq, img, seen = tiny(), images(), []
    vq.quantize.embedding.register_forward_hook(lambda m, a, o: seen.append((torch.is_autocast_enabled("cpu"),
                                                                             o.dtype)))
    hooks = keep_quantizer_fp32(vq)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rec, vq_loss, _ = vq(img)
    assert rec.dtype == torch.bfloat16 and vq_loss.dtype == torch.float32
    assert seen and all(not on and dt == torch.float32 for on, dt in seen)
    assert torch.is_autocast_enabled("cpu") is False
    for h in hooks:
        h.remove()
