"""Exploratory (2026-11-23, H100): bicubic kernel vs matmul upsampling, engine generation with the matmul
upsampling, encoder precision (bf16 / fp16 / TF32: speed and token agreement with fp32, on a random-weight
initialisation of its own, which is not the one bench_vqvae.py uses), and training-step variants: torch.compile
per block vs of the whole model, with activation-memory budgets. Prints only; output in
benchmarks/results/explore_2026-11-23/. Kept as run. Two findings it led to: per-block compile recompiles for
every block (drop-path rates differ) and falls back to eager after 8; and, found afterwards on CPU with
Inductor's fallback_random (which var.train uses so that compiled runs draw eager's masks), with a budget < 1 the
partitioner recomputes an in-graph drop-path draw in the backward, which gives wrong gradients. VAR therefore now
draws its drop-path masks outside the graph (var.transformer.drop_path_masks). Whether the GPU rows below (no
fallback_random) were affected was not checked; their speed and memory stand, their gradients are not vouched for.

    python benchmarks/explore/perf2_levers.py gen train
"""
import sys, time, os
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

def train_variant(name, mode, budget, B=64):
    import torch._functorch.config as fc
    torch._dynamo.reset()
    cfg = VAR_PRESETS['var-d16']
    torch.manual_seed(0)
    with torch.device(dev):
        model = VAR(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=True)
    L, V = cfg.seq_len, cfg.vocab_size
    g = torch.Generator(device=dev).manual_seed(0)
    labels = torch.randint(0, cfg.num_classes, (B,), device=dev, generator=g)
    x = torch.randn(B, L - 1, cfg.z_channels, device=dev, generator=g)
    target = torch.randint(0, V, (B, L), device=dev, generator=g)
    lg = torch.Generator(device=dev).manual_seed(1)
    fwd = model
    if mode == 'whole':
        fwd = torch.compile(model)
    elif mode == 'blocks':
        for b in model.blocks: b.compile()
    elif mode == 'blocks+head':
        for b in model.blocks: b.compile()
        model.head_nm.compile(); model.head.compile()
    losses = []
    def step():
        with torch.autocast('cuda', dtype=torch.bfloat16):
            logits = fwd(labels, x, generator=lg)
        loss = F.cross_entropy(logits.view(-1, V), target.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        opt.step(); opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    with fc.patch(activation_memory_budget=budget):
        reset_peak()
        t0 = time.time(); step(); sync(); tc = time.time() - t0
        t, ts = time_median(step, runs=3, warmup=1)
    print(f"TRAIN {name}: {B/t:.1f} img/s peak {peak_gb()} GB first-step {tc:.1f}s losses {[round(l.item(),5) for l in losses]}", flush=True)
    del model, opt, fwd

def gen():
    from var.engine import GenerationEngine
    with torch.device(dev):
        vq = VQVAE(VQVAE_PRESETS['vqvae-ch160v4096z32']).eval()
        var = VAR(VAR_PRESETS['var-d16']).eval()
    # bicubic kernel vs matmul
    from var.quant import bicubic_matrix
    for pn in (4, 13):
        h = torch.randn(256, 32, pn, pn, device=dev)
        A = bicubic_matrix(pn, 16, dev)
        t1, _ = time_median(lambda: F.interpolate(h, size=(16, 16), mode='bicubic'), runs=5)
        t2, _ = time_median(lambda: A @ h @ A.T, runs=5)
        print(f"BICUBIC pn={pn} B=256: kernel {t1*1e3:.2f} ms matmul {t2*1e3:.3f} ms", flush=True)
    eng = GenerationEngine(var, vq, compile=True)
    for B in (16, 64, 256):
        t, ts = time_median(lambda: eng.generate(B, seed=0, cfg=1.5, top_k=900, top_p=0.96), runs=3, warmup=1)
        print(f"GEN d16 B{B}: {B/t:.1f} img/s", flush=True)
    # encode precision
    torch.manual_seed(0)
    with torch.no_grad():
        for p in vq.parameters():
            p.copy_(torch.randn_like(p) * (1.0 / max(1, p[0].numel()) ** 0.5) if p.ndim > 1 else p)
    img = torch.rand(256, 3, 256, 256, device=dev) * 2 - 1
    with torch.no_grad():
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        ref = torch.cat([torch.cat(vq.img_to_idx(x), 1) for x in img.split(64)])
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        for dt in (torch.bfloat16, torch.float16):
            e = GenerationEngine(var, vq, dtype=dt, compile=True)
            idx = torch.cat(e.encode(img), 1)
            agree = (idx == ref).float().mean().item()
            t, _ = time_median(lambda: e.encode(img[:64]), runs=3, warmup=1)
            print(f"ENCODE {dt}: agreement {agree:.4f} speed {64/t:.0f} img/s", flush=True)
            ff = e.encoder_fn(e._lp(img[:64]))
            print("  max abs feature", ff.abs().max().item(), torch.isfinite(ff).all().item())
        e = GenerationEngine(var, vq, dtype=torch.float32, compile=True)
        idx = torch.cat(e.encode(img), 1)
        t, _ = time_median(lambda: e.encode(img[:64]), runs=3, warmup=1)
        print(f"ENCODE tf32: agreement {(idx == ref).float().mean().item():.4f} speed {64/t:.0f} img/s", flush=True)

if 'gen' in what:
    gen()
if 'train' in what:
    for name, mode, budget in [('blocks b1.0', 'blocks', 1.0), ('blocks b0.5', 'blocks', 0.5), ('blocks b0.3', 'blocks', 0.3),
                               ('whole b0.5', 'whole', 0.5), ('blocks+head b0.5', 'blocks+head', 0.5)]:
        try:
            train_variant(name, mode, budget)
        except Exception as ex:
            print('TRAIN', name, 'FAILED', repr(ex)[:800], flush=True)
        reset_peak()
