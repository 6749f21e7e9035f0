"""Exploratory (2026-11-23, H100): the training step of VAR-d16 (batch 64, bf16 autocast) eager vs torch.compile of
the whole model, with SDPA + additive block-causal mask vs FlexAttention; and where one engine generate of 256
images spends its time (transformer steps / decode / the rest). Prints only; the output is kept in
benchmarks/results/explore_2026-11-23/. Kept as run, to reproduce the README's numbers; the benchmark scripts
(bench_train.py, bench_generate.py) are the maintained measurements.

    python benchmarks/explore/perf1_train_attention.py train gen
"""
import sys, time, os, json, statistics
sys.path.insert(0, '.'); sys.path.insert(0, 'benchmarks')  # run from the repository root
import torch, torch.nn.functional as F
from common import time_median, reset_peak, peak_gb, sync
from var.config import VAR_PRESETS, VQVAE_PRESETS
from var.transformer import VAR
from var.vqvae import VQVAE
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
torch.backends.cudnn.benchmark = True
dev = torch.device('cuda')
what = sys.argv[1:]

def train_variant(name, attention, compile_model, B=64):
    cfg = VAR_PRESETS['var-d16']
    torch.manual_seed(0)
    with torch.device(dev):
        model = VAR(cfg).train()
    model.attention = attention
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=True)
    L, V = cfg.seq_len, cfg.vocab_size
    g = torch.Generator(device=dev).manual_seed(0)
    labels = torch.randint(0, cfg.num_classes, (B,), device=dev, generator=g)
    x = torch.randn(B, L - 1, cfg.z_channels, device=dev, generator=g)
    target = torch.randint(0, V, (B, L), device=dev, generator=g)
    fwd = torch.compile(model) if compile_model else model
    losses = []
    def step():
        with torch.autocast('cuda', dtype=torch.bfloat16):
            logits = fwd(labels, x)
        loss = F.cross_entropy(logits.view(-1, V), target.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        opt.step(); opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    reset_peak()
    t0 = time.time()
    step(); sync(); tc = time.time() - t0
    t, ts = time_median(step, runs=3, warmup=1)
    print(f"TRAIN {name}: {B/t:.1f} img/s peak {peak_gb()} GB first-step {tc:.1f}s losses {[round(l.item(),5) for l in losses]}", flush=True)
    del model, opt, fwd

def gen_breakdown(B, compile_):
    from var.engine import GenerationEngine
    with torch.device(dev):
        vq = VQVAE(VQVAE_PRESETS['vqvae-ch160v4096z32']).eval()
        var = VAR(VAR_PRESETS['var-d16']).eval()
    eng = GenerationEngine(var, vq, compile=compile_)
    T = {'step': 0.0, 'decode': 0.0}
    orig_runner = eng._runner
    def timed(key, fn):
        def w(*a, **k):
            sync(); t = time.perf_counter(); r = fn(*a, **k); sync(); T[key] += time.perf_counter() - t; return r
        return w
    eng.generate(B, seed=0, cfg=1.5, top_k=900, top_p=0.96); sync()
    r = eng._runner(B); r.step = timed('step', r.step)
    eng.decode = timed('decode', eng.decode)
    t, _ = time_median(lambda: eng.generate(B, seed=0, cfg=1.5, top_k=900, top_p=0.96), runs=1, warmup=0)
    print(f"GEN d16 B{B} compile={compile_}: total {t:.3f}s ({B/t:.0f} img/s) step {T['step']:.3f} decode {T['decode']:.3f} other {t-T['step']-T['decode']:.3f}", flush=True)
    # profile sampling ops
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        eng.generate(B, seed=0, cfg=1.5, top_k=900, top_p=0.96); sync()
    print(prof.key_averages().table(sort_by='self_cuda_time_total', row_limit=30, max_name_column_width=70), flush=True)

if 'train' in what:
    for name, att, comp in [('eager sdpa', 'sdpa', False), ('eager flex', 'flex', False), ('compile sdpa', 'sdpa', True), ('compile flex', 'flex', True)]:
        try:
            train_variant(name, att, comp)
        except Exception as e:
            print('TRAIN', name, 'FAILED', repr(e)[:500], flush=True)
        reset_peak()
if 'gen' in what:
    for B in (64, 256):
        gen_breakdown(B, True)
