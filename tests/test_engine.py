"""The fast generation path (var/engine.py) computes the plain sampler's function.

On CPU: the engine's eager runner in fp32 reproduces `sample`'s tokens (images to float rounding: its bicubic
upsampling is a matmul); its per-scale KV-cached teacher-forced
logits equal the masked full-sequence forward; bf16 stays within bf16 rounding; chunking is deterministic. On a
GPU (skipped on CPU): CUDA-graph replay gives the plain path's tokens.
"""
from __future__ import annotations

import pytest
import torch

from var.config import VARConfig, VQVAEConfig
from var.engine import GenerationEngine
from var.sampling import sample
from var.transformer import VAR
from var.vqvae import VQVAE

PN = (1, 2, 4)


def tiny_models(device="cpu", **var_kw):
    torch.manual_seed(0)
    with torch.device(device):
        vq = VQVAE(VQVAEConfig(vocab_size=64, z_channels=8, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                               patch_nums=PN)).eval()
        var = VAR(VARConfig(depth=2, num_classes=5, vocab_size=64, z_channels=8, patch_nums=PN,
                            embed_dim_override=64, num_heads_override=2, **var_kw)).eval()
        # larger AdaLN gammas than the init's 1e-5, so the blocks matter in these checks
        for b in var.blocks:
            b.ada_lin[-1].weight.data.normal_(0, 0.05)
    return var, vq


KW = dict(cfg=1.5, top_k=10, top_p=0.9)


def test_fp32_engine_equals_plain_sampler():
    var, vq = tiny_models()
    g = torch.Generator()
    idx_a, img_a = sample(var, vq, 6, None, generator=g.manual_seed(3), **KW)
    idx_b, img_b = GenerationEngine(var, vq, dtype=torch.float32).generate(6, None, generator=g.manual_seed(3), **KW)
    assert all(torch.equal(a, b) for a, b in zip(idx_a, idx_b))
    assert (img_a - img_b).abs().max().item() < 1e-5


@pytest.mark.parametrize("pn", [1, 2, 3, 5, 13])
def test_bicubic_matrix_is_torch_bicubic(pn):
    from var.quant import bicubic_matrix
    torch.manual_seed(pn)
    h = torch.randn(3, 4, pn, pn, dtype=torch.float64)
    A = bicubic_matrix(pn, 16, dtype=torch.float64)
    ref = torch.nn.functional.interpolate(h, size=(16, 16), mode="bicubic")
    assert (A @ h @ A.T - ref).abs().max().item() < 1e-12
    if pn > 1:    # not the identity / a constant: the matrix really interpolates
        assert (A @ h @ A.T - torch.nn.functional.interpolate(h, size=(16, 16), mode="bilinear")).abs().max() > 1e-3


def test_matmul_upsampling_encodes_the_same_tokens():
    _, vq = tiny_models()
    img = torch.rand(8, 3, 8, 8) * 2 - 1
    ref_idx, ref_fhat = vq.quantize.f_to_idx(vq.encode_features(img), return_fhat=True)
    eng = GenerationEngine(tiny_models()[0], vq, dtype=torch.float32)
    assert eng.quant.upsample_matmul and not vq.quantize.upsample_matmul    # the caller's module is untouched
    idx, fhat = eng.quant.f_to_idx(vq.encode_features(img), return_fhat=True)
    assert all(torch.equal(a, b) for a, b in zip(ref_idx, idx))
    assert (fhat[-1] - ref_fhat[-1]).abs().max().item() < 1e-5
    assert all(torch.equal(a, b) for a, b in zip(ref_idx, eng.encode(img)))


def test_teacher_forced_kv_cache_logits_equal_masked_forward():
    var, vq = tiny_models()
    labels = torch.tensor([0, 1, 2, 3])
    idx, _ = sample(var, vq, 4, labels, seed=1, **KW)
    ref = var(labels, vq.idx_to_var_input(idx))
    got = GenerationEngine(var, vq, dtype=torch.float32).teacher_forced_logits(labels, idx)
    assert (got - ref).abs().max().item() < 1e-5
    lp = GenerationEngine(var, vq, dtype=torch.bfloat16).teacher_forced_logits(labels, idx)
    rel = ((lp - ref).abs().max() / ref.abs().max()).item()
    assert 0 < rel < 4 * 2 ** -8, rel          # a few bf16 unit roundoffs, and not the fp32 path by mistake


def test_chunked_generation_is_deterministic_and_shaped():
    var, vq = tiny_models()
    eng = GenerationEngine(var, vq, dtype=torch.float32, max_batch=4)
    g = torch.Generator()
    idx1, img1 = eng.generate(7, None, generator=g.manual_seed(5), **KW)
    idx2, img2 = eng.generate(7, None, generator=g.manual_seed(5), **KW)
    assert [tuple(t.shape) for t in idx1] == [(7, pn * pn) for pn in PN]
    assert img1.shape == (7, 3, 8, 8) and 0 <= img1.min() and img1.max() <= 1
    assert all(torch.equal(a, b) for a, b in zip(idx1, idx2)) and torch.equal(img1, img2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_engine_equals_plain_sampler_on_gpu():
    var, vq = tiny_models("cuda")
    g = torch.Generator(device="cuda")
    idx_a, img_a = sample(var, vq, 6, None, generator=g.manual_seed(3), **KW)
    eng = GenerationEngine(var, vq, dtype=torch.float32, cuda_graphs=True)
    idx_b, img_b = eng.generate(6, None, generator=g.manual_seed(3), **KW)
    assert all(torch.equal(a, b) for a, b in zip(idx_a, idx_b))
    assert (img_a - img_b).abs().max().item() < 1e-5
