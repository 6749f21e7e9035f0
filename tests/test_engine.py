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
    # true fp32 on both paths: with cuDNN's default TF32 the phi convolution rounds its inputs to 10 mantissa bits,
    # and inputs 1e-7 apart (matmul vs kernel bicubic) can round apart, so f_hat would differ by ~1e-4.
    # Saved and restored by hand: torch.backends.cuda.matmul.allow_tf32 is not a plain attribute (torch 2.11's
    # cuBLASModule answers it through __getattr__), so pytest's monkeypatch cannot undo it.
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        _cuda_graph_engine_equals_plain_sampler()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _cuda_graph_engine_equals_plain_sampler():
    var, vq = tiny_models("cuda")
    g = torch.Generator(device="cuda")
    idx_a, img_a = sample(var, vq, 6, None, generator=g.manual_seed(3), **KW)
    eng = GenerationEngine(var, vq, dtype=torch.float32, cuda_graphs=True)
    idx_b, img_b = eng.generate(6, None, generator=g.manual_seed(3), **KW)
    assert all(torch.equal(a, b) for a, b in zip(idx_a, idx_b))
    assert (img_a - img_b).abs().max().item() < 1e-5


def test_engine_switches_leave_the_callers_model_alone_and_fused_gelu_is_cpu_noop():
    var, vq = tiny_models()
    eng = GenerationEngine(var, vq, dtype=torch.float32, fused_gelu=True)
    assert all(b.ffn.fused_gelu for b in eng.var.blocks) and not any(b.ffn.fused_gelu for b in var.blocks)
    x = torch.randn(3, 5, 64)
    with torch.no_grad():     # on CPU the flag takes the unfused path (CPU _addmm_activation would use erf GELU)
        assert torch.equal(eng.var.blocks[0].ffn(x), var.blocks[0].ffn(x))


@pytest.mark.parametrize("channels_last", [False, True])
def test_groupnorm_channel_stats_is_group_norm(channels_last):
    """GroupNorm.channel_stats (per-channel sums, then per group) computes F.group_norm, eager and compiled, also
    on an offset input where a one-pass E[x^2] - E[x]^2 would lose digits."""
    from var.vqvae import GroupNorm
    torch.manual_seed(0)
    gn = GroupNorm(32, 160, eps=1e-6)
    gn.weight.data.normal_()
    gn.bias.data.normal_()
    x = torch.randn(3, 160, 9, 7) * 0.5 + 40.0
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ref = torch.nn.functional.group_norm(x.double(), 32, gn.weight.double(), gn.bias.double(), 1e-6)
    plain = gn(x)
    gn.channel_stats = True
    for out in (gn(x), torch.compile(gn)(x)):
        err = (out.double() - ref).abs().max().item()
        assert err <= 2 * (plain.double() - ref).abs().max().item() + 1e-6
    with pytest.raises(AssertionError):     # and it is not a no-op: a wrong eps is visible at this tolerance
        gn.eps = 1e-2
        assert (gn(x).double() - ref).abs().max().item() < 1e-3


def test_engine_gn_channel_stats_decodes_and_encodes_as_the_plain_vqvae():
    var, vq = tiny_models()
    eng = GenerationEngine(var, vq, dtype=torch.float32, gn_channel_stats=True)
    from var.vqvae import GroupNorm
    assert not any(m.channel_stats for m in vq.modules() if isinstance(m, GroupNorm))   # caller's model untouched
    assert all(m.channel_stats for m in eng.vq_lp.modules() if isinstance(m, GroupNorm))
    torch.manual_seed(1)
    img = torch.rand(4, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        idx = vq.img_to_idx(img)
        assert all(torch.equal(a, b) for a, b in zip(idx, eng.encode(img)))
        f_hat = vq.quantize.idx_to_fhat(idx)
        assert (eng.decode(f_hat) - vq.fhat_to_img(f_hat)).abs().max().item() < 1e-5


def test_engine_blocks_are_world_size_independent():
    """generate_blocks with the engine: the same seeds per block as the plain path, so 2 ranks' blocks together are
    the 1-rank file, and the images equal the plain sampler's to uint8 rounding."""
    import numpy as np

    from var.distributed import World
    from var.sharded_sampling import generate_blocks
    var, vq = tiny_models()
    eng = GenerationEngine(var, vq, dtype=torch.float32)
    labels = np.repeat(np.arange(5), 3)
    one, _ = generate_blocks(var, vq, labels, block_size=4, seed=2, engine=eng, **KW)
    two = {}
    for r in range(2):
        two.update(generate_blocks(var, vq, labels, block_size=4, seed=2, world=World(rank=r, size=2), engine=eng,
                                   **KW)[0])
    assert sorted(one) == sorted(two) == [0, 1, 2, 3]
    assert all(np.array_equal(one[b], two[b]) for b in one)
    into = np.zeros((len(labels), 8, 8, 3), np.uint8)
    viewed, _ = generate_blocks(var, vq, labels, block_size=4, seed=2, engine=eng, into=into, **KW)
    assert np.array_equal(into, np.concatenate([one[b] for b in range(4)])) and viewed[3].base is not None
    plain, _ = generate_blocks(var, vq, labels, block_size=4, seed=2, **KW)
    diff = np.abs(np.concatenate([plain[b] for b in range(4)]).astype(int)
                  - np.concatenate([one[b] for b in range(4)]).astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fused_gelu_epilogue_is_the_tanh_gelu_on_gpu():
    from var.blocks import FFN
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        ffn = FFN(64, 256, 0.0).cuda().to(dtype)
        x = torch.randn(7, 9, 64, device="cuda", dtype=dtype)
        with torch.no_grad():
            ref = ffn(x.double().to(dtype)).double()
            ffn.fused_gelu = True
            got = ffn(x).double()
            ffn.fused_gelu = False
            exact = ffn.double()(x.double())
            ffn.to(dtype)
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        assert (got - exact).norm() / exact.norm() < tol and (ref - exact).norm() / exact.norm() < tol


def test_compiled_block_is_one_graph_for_every_block_even_with_float_specialisation():
    """The engine compiles AdaLNSelfAttn.forward once for all blocks and scales. The blocks differ in their drop-path
    rate; with float specialisation (torch 2.11's default) reading it in eval mode made every block a recompile, and
    after 8 dynamo ran the rest eagerly (measured on an H200). A few graphs (scale length 1 is specialised) only."""
    import torch._dynamo.utils as du

    from var.blocks import AdaLNSelfAttn
    var = VAR(VARConfig(depth=10, num_classes=5, vocab_size=64, z_channels=8, patch_nums=PN, embed_dim_override=64,
                        num_heads_override=2, drop_path_rate_override=0.1)).eval()
    assert len({b.drop_path.p for b in var.blocks}) == 10
    torch._dynamo.reset()
    du.counters.clear()
    fwd = torch.compile(AdaLNSelfAttn.forward, dynamic=True)
    with torch._dynamo.config.patch(specialize_float=True), torch.no_grad():
        for B2 in (4, 8):
            mods, kv, pos = var.modulations(torch.randn(B2, 64)), var.new_kv_cache(B2), 0
            for pn in PN:
                x = torch.randn(B2, pn * pn, 64)
                for block, m, c in zip(var.blocks, mods, kv):
                    x = fwd(block, x, None, None, c, pos, m)
                pos += pn * pn
    assert du.counters["stats"]["unique_graphs"] <= 4, dict(du.counters["stats"])
    torch._dynamo.reset()


def test_engine_compiled_calls_raise_the_recompile_limit_only_for_themselves():
    """Two models (or switch settings) in one process need more than dynamo's default 8 graphs of the shared block
    function; the engine's wrapper lets its calls compile them instead of silently falling back to eager."""
    import torch._dynamo.config as dc
    import torch._dynamo.utils as du

    from var.engine import _with_compile_limit
    key = "recompile_limit" if hasattr(dc, "recompile_limit") else "cache_size_limit"
    default = getattr(dc, key)

    def f(x):
        return x.sin() * 2
    torch._dynamo.reset()
    du.counters.clear()
    fn = _with_compile_limit(torch.compile(f, dynamic=False))
    for n in range(1, default + 4):     # a new static shape each call: one graph each
        assert torch.allclose(fn(torch.ones(n)), torch.ones(n).sin() * 2)
    assert du.counters["stats"]["unique_graphs"] == default + 3
    assert getattr(dc, key) == default           # the process-wide setting is untouched
    torch._dynamo.reset()


def test_priming_runs_the_graphs_sampling_uses_largest_scale_first():
    """prime_compiled calls the compiled block/head once per scale, largest first, at its own batch; the runner's
    later calls at another batch then compile nothing new, so the first launch of every kernel (where Inductor picks
    its launch configuration) was the priming's. The runner's compiled scale steps still equal the eager ones."""
    import torch._dynamo.utils as du

    from var.blocks import AdaLNSelfAttn
    from var.engine import GraphRunner, prime_compiled
    var, _ = tiny_models()
    torch._dynamo.reset()
    du.counters.clear()
    fwd = torch.compile(AdaLNSelfAttn.forward, dynamic=True)
    head = torch.compile(VAR.logits, dynamic=True)
    block_fn = lambda block, x, kv, pos, m: fwd(block, x, None, None, kv, pos, m)  # noqa: E731  (as the engine's)
    calls = prime_compiled(var, block_fn, head, 12)
    assert calls == [(12, 16), (12, 4), (12, 1)]
    graphs = du.counters["stats"]["unique_graphs"]
    assert graphs >= 2
    runner = GraphRunner(var, 6, block_fn, head)     # another batch, the runner's own buffers; no capture on CPU
    cond = torch.randn(6, 64)
    mods = var.modulations(cond)
    kv_eager = var.new_kv_cache(6)
    with torch.no_grad():
        runner.cond.copy_(cond)
        for static, m in zip(runner.mods, mods):
            for s_, v in zip(static, m):
                s_.copy_(v.expand_as(s_))
        for si in range(len(PN)):
            runner.x_in[si].normal_()
            got = runner._run(si)
            ref = var.logits(var.forward_cached(runner.x_in[si], mods, kv_eager, runner.pos[si]), cond)
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert du.counters["stats"]["unique_graphs"] == graphs, dict(du.counters["stats"])
    torch._dynamo.reset()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_engine_primes_once_before_its_first_graphs_on_gpu():
    var, vq = tiny_models("cuda")
    eng = GenerationEngine(var, vq, dtype=torch.bfloat16, compile=True, prime_batch=16)
    assert eng.primed is None
    eng.generate(3, seed=0, **KW)
    assert eng.primed == [(32, 16), (32, 4), (32, 1)]
    first = eng.primed
    eng.generate(40, seed=0, **KW)                  # a new batch size: new graphs, no second priming
    assert eng.primed is first

