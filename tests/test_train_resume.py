"""train_var: kill -9 + rerun gives bitwise the same weights as an uninterrupted run; NaN stops with the step."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from var.checkpoint import load_model_checkpoint
from var.config import ConfigError, build_config
from var.io import load_torch
from var.loop import epoch_order
from var.token_data import evaluate
from var.token_loss import mean_token_loss, token_ce_BL
from var.train import TrainConfig, param_groups, train_var

REPO = Path(__file__).resolve().parents[1]

# The tiny models and data, shared by the in-process tests and the subprocess (exec'ed there as a script).
COMMON = textwrap.dedent('''
    import numpy as np, torch, torch.nn as nn
    from var.config import VARConfig, VQVAEConfig
    from var.vqvae import VQVAE
    from var.transformer import VAR

    PNS = (1, 2, 3)

    class NanAtVAR(VAR):
        """The real VAR whose training forward number `nan_at_call` (0-based) returns NaN logits."""
        nan_at_call, calls = -1, 0
        def forward(self, label_B, x_BLCv, generator=None):
            out = super().forward(label_B, x_BLCv, generator)
            if self.training:
                self.calls += 1
                if self.calls - 1 == self.nan_at_call:
                    return out * float('nan')
            return out

    def make(seed=0, V=16, ncls=3, N=24, Nval=8):
        torch.manual_seed(seed)
        vq = VQVAE(VQVAEConfig(vocab_size=V, z_channels=4, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                               using_sa=False, using_mid_sa=False, patch_nums=PNS, share_quant_resi=2))
        var = NanAtVAR(VARConfig(depth=2, num_classes=ncls, vocab_size=V, z_channels=4, patch_nums=PNS,
                                 embed_dim_override=32, num_heads_override=2, cond_drop_rate=0.25,
                                 drop_path_rate_override=0.1))
        rng = np.random.default_rng(seed)
        L = sum(p * p for p in PNS)
        def tokens(n):
            lab = rng.integers(0, ncls, n)
            idx = (lab[:, None] * 5 + rng.integers(0, 3, (n, L))) % V   # learnable from the label
            return {"idx_NL": idx.astype(np.int16), "labels_N": lab.astype(np.int64), "patch_nums": np.array(PNS)}
        return var, vq, tokens(N), tokens(Nval)
''')
exec(COMMON)

CFG = dict(batch_size=4, epochs=3, base_lr_per_256=0.5, warmup_epochs=0.5, final_lr_ratio=0.1,
           weight_decay=0.05, weight_decay_end=0.08, seed=7, ckpt_every_steps=2, log_every_steps=1000)

SCRIPT = COMMON + textwrap.dedent(f'''
    import sys, time
    torch.set_num_threads(1)
    from var.train import TrainConfig, train_var
    from var.config import build_config
    out_dir, sleep_s = sys.argv[1], float(sys.argv[2])
    var, vq, tr, va = make()
    cfg = build_config(TrainConfig, {CFG!r}, "train")
    # The parent SIGKILLs this process part-way; the sleep only makes the window wide, it changes no value.
    train_var(var, vq, tr, va, cfg, out_dir=out_dir, log=lambda s: print(s, flush=True),
              progress=lambda step, n, info: time.sleep(sleep_s))
''')


def _run(script: Path, out_dir: Path, sleep_s: float) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(script), str(out_dir), str(sleep_s)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_kill_and_resume_is_bitwise_identical(tmp_path):
    script = tmp_path / "run_train.py"
    script.write_text(SCRIPT)
    ref, crash = tmp_path / "ref", tmp_path / "crash"
    p = _run(script, ref, 0.0)
    assert p.wait(timeout=120) == 0, p.stdout.read().decode()

    p = _run(script, crash, 1.0)
    deadline = time.time() + 60
    while not (crash / "state.pt").exists():
        assert p.poll() is None and time.time() < deadline, "run ended before writing state.pt"
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL, p.stdout.read().decode()
    assert not (crash / "model.pt").exists()
    mid = load_torch(crash / "state.pt")
    total = CFG["epochs"] * 6
    assert 0 < mid["step"] < total, mid["step"]

    p = _run(script, crash, 0.0)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out.decode()
    assert f"resumed from {crash / 'state.pt'} at step {mid['step']}" in out.decode(), out.decode()
    a, b = load_torch(ref / "model.pt"), load_torch(crash / "model.pt")
    assert a["step"] == b["step"] == total
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    sa, sb = load_torch(ref / "state.pt"), load_torch(crash / "state.pt")
    assert sa["history"] == sb["history"] and len(sa["history"]) == CFG["epochs"]
    for x, y in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()):
        assert all(torch.equal(x[k], y[k]) for k in x)


def test_nan_loss_stops_and_keeps_last_good_state(tmp_path):
    torch.set_num_threads(1)
    var, vq, tr, va = make()
    var.nan_at_call = 5                     # the loss of step 5 (0-based) is NaN
    cfg = build_config(TrainConfig, CFG, "train")
    with pytest.raises(FloatingPointError, match="at step 5"):
        train_var(var, vq, tr, va, cfg, out_dir=tmp_path, log=lambda s: None)
    st = load_torch(tmp_path / "state.pt")
    assert st["step"] == 4                  # written at step 4, never overwritten by the bad step
    assert not any(torch.isnan(v).any() for v in st["model"].values() if v.is_floating_point())
    assert not (tmp_path / "model.pt").exists()

    var, vq, tr, va = make()
    var.nan_at_call = 5
    cfg = build_config(TrainConfig, dict(CFG, nan_policy="skip"), "train")
    m = train_var(var, vq, tr, va, cfg, out_dir=tmp_path / "skip", log=lambda s: None)
    assert m["nan_skips"] == 1 and np.isfinite(m["val_loss"])


def test_training_learns_and_writes_checkpoint(tmp_path):
    torch.set_num_threads(1)
    var, vq, tr, va = make()
    before = evaluate(var, vq, __import__("var.train", fromlist=["as_token_data"]).as_token_data(va, PNS, "v"),
                      8, torch.device("cpu"))
    cfg = build_config(TrainConfig, dict(CFG, epochs=8, base_lr_per_256=1.0), "train")
    m = train_var(var, vq, tr, va, cfg, out_dir=tmp_path, log=lambda s: None)
    assert m["val_loss"] < before["val_loss"]
    assert len(m["val_err_per_scale"]) == len(PNS) and 0 <= m["val_err_last"] <= 1
    assert m["train_img_per_s"] > 0
    ck = load_torch(tmp_path / "model.pt")
    assert ck["kind"] == "var" and ck["config"]["patch_nums"] == list(PNS) and ck["step"] == 48
    assert set(ck["model"]) == set(var.state_dict())
    rebuilt, _ = load_model_checkpoint(tmp_path / "model.pt", kind="var")
    assert all(torch.equal(v, var.state_dict()[k]) for k, v in rebuilt.state_dict().items())


def test_loss_param_groups_order_config():
    logits_BLV = torch.randn(3, 5, 7)
    gt_BL = torch.randint(0, 7, (3, 5))
    ref = torch.nn.functional.cross_entropy(logits_BLV.reshape(-1, 7), gt_BL.reshape(-1))
    assert torch.allclose(mean_token_loss(token_ce_BL(logits_BLV, gt_BL)), ref, atol=1e-6)

    var, *_ = make()
    decay, no_decay = param_groups(var)
    ids = {id(p) for p in decay["params"]}
    named = dict(var.named_parameters())
    assert id(named["head.weight"]) in ids and id(named["word_embed.weight"]) in ids
    assert id(named["class_emb.weight"]) in ids                    # 2-D and not in the reference's nowd_keys
    for n, p in named.items():
        if p.ndim <= 1 or n.endswith("bias") or any(k in n for k in ("pos_", "lvl_embed", "scale_mul")):
            assert id(p) not in ids, n
    assert any("scale_mul" in n for n in named) and any("lvl_embed" in n for n in named)
    assert no_decay["wd_scale"] == 0.0

    o1, o2 = epoch_order(1, 0, 10, 3, 4), epoch_order(1, 0, 10, 3, 4)
    assert np.array_equal(o1, o2) and len(o1) == 12 and sorted(o1[:10]) == list(range(10))
    assert not np.array_equal(o1, epoch_order(1, 1, 10, 3, 4))
    with pytest.raises(ConfigError, match="train.lr"):
        build_config(TrainConfig, {"lr": 1.0}, "train")
    with pytest.raises(ConfigError):
        build_config(TrainConfig, {"nan_policy": "ignore"}, "train")


def test_compiled_training_computes_the_eager_function(tmp_path):
    """TrainConfig.compile (torch.compile of forward + loss, with a recompute budget) is a speed switch: the
    compiled loss and gradients equal eager ones to fp32 rounding over several training-mode calls (drop-path and
    label dropout draw the same masks), a compiled train_var runs, and an eager run's state resumes under it.
    (Whole runs are not compared: AdamW turns rounding-level differences of near-zero gradients into lr-sized
    steps, so two runs drift apart whatever the implementation.)"""
    from var.token_data import as_token_data, var_inputs
    from var.token_loss import compiled_forward_loss, forward_loss
    torch.set_num_threads(2)
    var, vq, tr, va = make()
    var.train()
    for b in var.blocks:     # AdaLN gammas far from their ~0 init, so that drop-path changes the loss
        b.ada_lin[-1].weight.data.normal_(0, 0.2)
    var.head.weight.data.normal_(0, 0.5)
    idx_BL = torch.from_numpy(tr["idx_NL"][:6].astype(np.int64))
    label_B = torch.from_numpy(tr["labels_N"][:6])
    x_BLCv = var_inputs(vq, idx_BL, PNS)
    fast = compiled_forward_loss(0.5)
    runs = []
    for fn in (forward_loss, fast):
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(1)
        out = []
        for _ in range(3):
            var.zero_grad(set_to_none=True)
            loss = fn(var, label_B, x_BLCv, idx_BL, gen, 0.1, False)
            loss.backward()
            out.append((loss.item(), [p.grad.clone() for p in var.parameters()]))
        runs.append(out)
    for (l_e, g_e), (l_c, g_c) in zip(*runs):
        assert abs(l_e - l_c) < 1e-6 * l_e
        scale = max(g.abs().max().item() for g in g_e)
        assert max((a - b).abs().max().item() for a, b in zip(g_e, g_c)) < 1e-5 * scale
    assert len({round(l, 4) for l, _ in runs[0]}) == 3     # the dropout masks differ between calls
    # the whole loop under compile, and an eager run's finished state accepted by the compiled config
    var_e, vq, tr, va = make()
    m_e = train_var(var_e, vq, tr, va, build_config(TrainConfig, CFG, "train"), out_dir=tmp_path / "e",
                    log=lambda s: None)
    cfg_c = build_config(TrainConfig, dict(CFG, compile=True, activation_memory_budget=0.5), "train")
    var_c, _, _, _ = make()
    m_c = train_var(var_c, vq, tr, va, cfg_c, out_dir=tmp_path / "c", log=lambda s: None)
    before = evaluate(make()[0], vq, as_token_data(va, PNS, "v"), 8, torch.device("cpu"))
    assert m_c["step"] == 18 and m_c["val_loss"] < before["val_loss"]
    m_r = train_var(var_e, vq, tr, va, cfg_c, out_dir=tmp_path / "e", log=lambda s: None)
    assert m_r["step"] == 18 and m_r["val_loss"] == m_e["val_loss"]
    with pytest.raises(ConfigError, match="activation_memory_budget"):
        build_config(TrainConfig, dict(CFG, activation_memory_budget=0.0), "train")
