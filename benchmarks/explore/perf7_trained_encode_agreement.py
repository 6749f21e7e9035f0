"""Does a 16-bit (or TF32) encoder agree with strict fp32 on >= 99.5% of the tokens of a *trained* tokenizer (issue 8)?

bench_vqvae.py measures agreement on a random-init codebook (fp16 99.7%) and on one fitted by k-means to the random
encoder (fp16 95-96%, TF32 96.6%); the released tokenizer's weights are not on this machine. This script trains the
ch160 tokenizer itself (var.tokenizer_train.train_tokenizer: L2 + VQ losses, bf16 autocast, dead-code restarts unless
--no-restart) on
procedural `shapes` images at 256 px for a time budget, and at a few steps along the way measures, on held-out
`shapes` images, the token agreement with the strict fp32 encoder (TF32 off) of:
  * fp16 and bf16 encoders (eager, whole encoder in that dtype, nearest-code search in fp32, as the engine);
  * TF32 convolutions and matmuls (the reference implementation's "fp32" setting, ANCHORS.md);
  * fp32 compute with the encoder's weights rounded to fp16 (the weight rounding alone);
  * fp32 compute with every conv/GroupNorm/linear input and output rounded to fp16 (the activation rounding alone);
  * at the end, the engine's own compiled fp16 encoder (GenerationEngine.encode).
Per path: token agreement (all scales), per-scale agreement, and the fraction of images whose tokens all agree.
Alongside: validation PSNR and codebook usage, so "trained" is quantified.

    python benchmarks/explore/perf7_trained_encode_agreement.py [--minutes 4] [--device cuda]
    python benchmarks/explore/perf7_trained_encode_agreement.py --tiny --device cpu --minutes 0.3   # smoke run

Prints and writes JSON to $BENCH_OUT (default benchmarks/results)/perf7_trained_encode_agreement[_tiny][_norestart]_<date>.json
(common.write_result).
"""
import argparse
import copy
import gc
import json
import os
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
from common import write_result  # noqa: E402
from var.config import VAR_PRESETS, VARConfig, VQVAE_PRESETS, VQVAEConfig  # noqa: E402
from var.data import make_shapes  # noqa: E402
from var.engine import GenerationEngine  # noqa: E402
from var.precision import fp32_precision  # noqa: E402
from var.tokenizer_train import TokenizerTrainConfig, evaluate_tokenizer, to_model_range, train_tokenizer  # noqa: E402
from var.transformer import VAR  # noqa: E402
from var.vqvae import VQVAE  # noqa: E402

TINY = VQVAEConfig(vocab_size=128, z_channels=16, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, using_sa=False,
                   using_mid_sa=False, patch_nums=(1, 2, 3, 4, 6, 8))


class _Budget(Exception):
    """Raised from the progress callback once the time budget is spent (after the last measurement)."""


def _render(args):
    seed, per_class, size, split = args
    return make_shapes(10, per_class, size, seed, split)[0]


def render(n: int, size: int, split: str, workers: int, seed0: int) -> np.ndarray:
    per = max(1, -(-n // (10 * workers)))
    jobs = [(seed0 + w, per, size, split) for w in range(workers)]
    with Pool(workers) as pool:
        return np.concatenate(pool.map(_render, jobs))[:n]


def _rounding_hooks(vq: VQVAE) -> list:
    """Round every conv/GroupNorm/linear input and output of the encoder side to fp16 (values stay float32)."""
    def pre(_m, args):
        return tuple(a.half().float() if torch.is_tensor(a) else a for a in args)

    def post(_m, _args, out):
        return out.half().float()
    hs = []
    for m in list(vq.encoder.modules()) + [vq.quant_conv]:
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.GroupNorm)):
            hs += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    return hs


def compare(idx_ref, idx) -> dict:
    eq = [(a == b) for a, b in zip(idx_ref, idx)]
    return {"token_agreement": round(torch.cat([e.flatten() for e in eq]).float().mean().item(), 5),
            "per_scale": [round(e.float().mean().item(), 4) for e in eq],
            "images_all_equal": round(torch.stack([e.all(1) for e in eq], 1).all(1).float().mean().item(), 4)}


@torch.no_grad()
def measure(vq: VQVAE, x: torch.Tensor, chunk: int) -> dict:
    was = vq.training
    vq.eval()
    q = vq.quantize

    def enc(model, dtype=torch.float32):
        return torch.cat([model.encode_features(c.to(dtype)).float() for c in x.split(chunk)])

    with fp32_precision(False):
        f32 = enc(vq)
        idx32 = q.f_to_idx(f32)
        out = {"codes_used_in_test_tokens": int(torch.cat([i.flatten() for i in idx32]).unique().numel())}
        with fp32_precision(True):
            out["tf32"] = compare(idx32, q.f_to_idx(enc(vq)))
        for name, dt in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
            out[name] = compare(idx32, q.f_to_idx(enc(copy.deepcopy(vq).to(dt), dt)))
        vw = copy.deepcopy(vq)
        for p in list(vw.encoder.parameters()) + list(vw.quant_conv.parameters()):
            p.copy_(p.half().float())
        out["fp16-rounded weights, fp32 compute"] = compare(idx32, q.f_to_idx(enc(vw)))
        va = copy.deepcopy(vq)
        _rounding_hooks(va)
        out["fp16-rounded activations, fp32 weights"] = compare(idx32, q.f_to_idx(enc(va)))
    vq.train(was)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=4.0, help="training time budget")
    ap.add_argument("--train-images", type=int, default=4000)
    ap.add_argument("--test-images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--at", default="0,100,300,1000,3000", help="measure at these steps (and at the end)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="32 px, the embedded default's tokenizer size (smoke runs)")
    ap.add_argument("--no-restart", action="store_true", help="no dead-code restarts (the paper's setup)")
    ap.add_argument("--no-engine", action="store_true", help="skip the compiled engine measurement at the end")
    a = ap.parse_args()
    dev = torch.device(a.device)
    vcfg = TINY if a.tiny else VQVAE_PRESETS["vqvae-ch160v4096z32"]
    size = vcfg.image_size
    workers = max(1, min(16, os.cpu_count() or 1))
    t0 = time.perf_counter()
    train = render(a.train_images, size, "train", workers, seed0=100)
    test = render(a.test_images, size, "val", workers, seed0=200)
    print(f"rendered {len(train)} + {len(test)} images at {size} px in {time.perf_counter() - t0:.1f}s", flush=True)
    x_test = to_model_range(test, dev)
    torch.manual_seed(0)
    vq = VQVAE(vcfg).to(dev)
    tcfg = TokenizerTrainConfig(batch_size=a.batch, max_steps=10 ** 6, lr=a.lr, warmup_steps=100,
                                dead_code_restart=not a.no_restart, dead_code_every_steps=100, log_every_steps=100,
                                ckpt_every_steps=10 ** 9)
    at = sorted(int(s) for s in a.at.split(","))
    rows, t_train = [], [time.perf_counter(), 0.0]

    def record(step):
        t = time.perf_counter()
        ev = evaluate_tokenizer(vq, test, 64, dev)
        r = {"step": step, "train_s": round(t_train[1], 1), "val_psnr": round(ev["val_psnr"], 2),
             "val_usage_mean_pct": round(ev["val_usage_mean"], 1), **measure(vq, x_test, 64)}
        rows.append(r)
        print(json.dumps(r), flush=True)
        return time.perf_counter() - t

    def progress(step, _max, _info):
        now = time.perf_counter()
        t_train[1] += now - t_train[0]
        over = t_train[1] >= a.minutes * 60
        if step in at or over:
            now += record(step)
        t_train[0] = now
        if over:
            raise _Budget

    record(0)
    t_train[0] = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        with fp32_precision(True):                     # training speed only; every measurement sets its own TF32 mode
            try:
                train_tokenizer(vq, train, None, tcfg, out_dir=tmp, device=dev, progress=progress,
                                log=lambda s: print(s, flush=True))
            except _Budget:
                pass
    # Free the training's memory before the engine: the budget exception's traceback may keep train_tokenizer's
    # frame (optimizer state) in a reference cycle. (The out-of-memory error of the first H200 runs was the final
    # fp32 encode keeping autograd graphs, fixed by the no_grad below; 1.1 GiB stays allocated after training.)
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        print(f"after training: {torch.cuda.memory_allocated() / 2**30:.1f} GiB allocated", flush=True)
    engine = None
    if not a.no_engine:
        # The engine's own path: compiled fp16 encoder (channels-last under Inductor, GroupNorm channel statistics).
        vq.eval()
        var_cfg = VAR_PRESETS["var-d16"] if not a.tiny else VARConfig(depth=2, vocab_size=vcfg.vocab_size,
                                                                       z_channels=vcfg.z_channels,
                                                                       patch_nums=vcfg.patch_nums)
        with torch.device(dev):
            var = VAR(var_cfg).eval()
        with fp32_precision(False), torch.no_grad():
            eng = GenerationEngine(var, vq, dtype=torch.bfloat16, decode_batch=64, compile=True)
            idx32 = vq.quantize.f_to_idx(torch.cat([vq.encode_features(c) for c in x_test.split(64)]))
            engine = compare(idx32, eng.encode(x_test))
        print("engine compiled fp16 encode:", json.dumps(engine), flush=True)
    name = "perf7_trained_encode_agreement" + ("_tiny" if a.tiny else "") + ("_norestart" if a.no_restart else "")
    write_result(name, {"tokenizer": "tiny (embedded size)" if a.tiny else "vqvae-ch160v4096z32", "image_size": size,
                        "train_images": len(train), "test_images": len(test), "batch": a.batch, "lr": a.lr,
                        "minutes": a.minutes, "dead_code_restart": not a.no_restart,
                        "data": "procedural shapes (var.data.make_shapes), train/val splits",
                        "reference": "strict fp32 (TF32 off), nearest-code search in fp32 for every path"},
                 rows, checks={"engine_compiled_fp16_final": engine})


if __name__ == "__main__":
    main()
