"""Scale-out on CPU with the gloo backend: two processes give the results of one.

- training: world size 2 matches world size 1 at the same global batch (loss and weights within fp32 tolerance),
  with label dropout and drop-path on (the chunks draw them from (seed, step, chunk)), with ZeRO-sharded AdamW,
  and after resuming a 2-process run's state in 1 process;
- sampling: the sample file of world size 2 is byte-identical to that of world size 1.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from var.checkpoint import load_model_checkpoint, save_checkpoint
from var.config import VARConfig, VQVAEConfig, build_config
from var.train import TrainConfig

PNS = (1, 2, 3)
V, NCLS = 16, 3


def make(seed=0, N=24, Nval=8, drop=True):
    from var.transformer import VAR
    from var.vqvae import VQVAE
    torch.manual_seed(seed)
    vq = VQVAE(VQVAEConfig(vocab_size=V, z_channels=4, ch=32, ch_mult=(1, 2), num_res_blocks=1, using_sa=False,
                           using_mid_sa=False, patch_nums=PNS, share_quant_resi=2))
    var = VAR(VARConfig(depth=2, num_classes=NCLS, vocab_size=V, z_channels=4, patch_nums=PNS, embed_dim_override=32,
                        num_heads_override=2, cond_drop_rate=0.25 if drop else 0.0,
                        drop_path_rate_override=0.1 if drop else 0.0))
    rng = np.random.default_rng(seed)
    L = sum(p * p for p in PNS)

    def tokens(n):
        lab = rng.integers(0, NCLS, n)
        idx = (lab[:, None] * 5 + rng.integers(0, 3, (n, L))) % V
        return {"idx_NL": idx.astype(np.int16), "labels_N": lab.astype(np.int64), "patch_nums": np.array(PNS)}
    return var, vq, tokens(N), tokens(Nval)


BASE = dict(batch_size=8, epochs=2, base_lr_per_256=0.5, warmup_epochs=0.5, final_lr_ratio=0.1, weight_decay=0.05,
            seed=7, ckpt_every_steps=2, log_every_steps=1000)


class Stop(Exception):
    pass


def _init(rank: int, world: int, tmp: str, tag: str) -> None:
    torch.set_num_threads(1)
    os.environ["LOCAL_RANK"] = str(rank)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/pg-{tag}", rank=rank, world_size=world)


def _train(rank: int, world: int, tmp: str, tag: str, cfg: dict, drop: bool, stop_at: int) -> None:
    """One rank of a training run (world 1 too: then no process group, the plain single-process path)."""
    import var.loop as L
    import var.train as T
    if world > 1:
        _init(rank, world, tmp, tag)
    torch.set_num_threads(1)
    orig = L.save_state
    if stop_at:     # a crash right after the state of step `stop_at` was written, on every rank

        def save_then_stop(path, step, *a, **k):
            orig(path, step, *a, **k)
            if step == stop_at:
                raise Stop
        L.save_state = save_then_stop
    var, vq, tr, va = make(drop=drop)
    losses = []
    try:
        T.train_var(var, vq, tr, va, build_config(TrainConfig, cfg, "train"), out_dir=Path(tmp) / tag,
                    log=lambda s: None, progress=lambda s, n, info: losses.append(info["loss"]))
    except Stop:
        pass
    finally:
        L.save_state = orig     # world 1 runs in the test process: later runs must not stop
        if world > 1:
            dist.destroy_process_group()
    if rank == 0:
        (Path(tmp) / f"{tag}.losses.json").write_text(json.dumps(losses))


def run_train(tmp: Path, tag: str, world: int, cfg: dict, drop: bool = True, stop_at: int = 0) -> tuple:
    if world == 1:
        _train(0, 1, str(tmp), tag, cfg, drop, stop_at)
    else:
        mp.spawn(_train, args=(world, str(tmp), tag, cfg, drop, stop_at), nprocs=world, join=True)
    losses = json.loads((tmp / f"{tag}.losses.json").read_text())
    model = tmp / tag / "model.pt"
    return losses, (load_model_checkpoint(model, kind="var")[0].state_dict() if model.is_file() else None)


def assert_close_runs(a, b, atol=1e-5):
    (la, wa), (lb, wb) = a, b
    assert len(la) == len(lb) and np.allclose(la, lb, rtol=0, atol=atol), (la, lb)
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=0, atol=atol), (k, (wa[k] - wb[k]).abs().max())


@pytest.fixture
def tmp(tmp_path):
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_ddp_two_processes_match_one_with_accumulation(tmp):
    """Chunks of 4 of a global batch of 8: one process accumulates two chunks, two processes take one each. Label
    dropout and drop-path are on; their draws come from (seed, step, chunk), so the runs agree."""
    cfg = {**BASE, "micro_batch_size": 4}
    one = run_train(tmp, "w1", 1, cfg)
    two = run_train(tmp, "w2", 2, cfg)
    assert_close_runs(one, two)


def test_ddp_matches_the_single_process_path_without_randomness(tmp):
    """micro_batch_size 0: one process runs the original code path (one chunk); two split the batch in halves."""
    one = run_train(tmp, "w1", 1, BASE, drop=False)
    two = run_train(tmp, "w2", 2, BASE, drop=False)
    assert_close_runs(one, two)


def test_zero_sharded_state_resumes_in_one_process(tmp):
    """ZeRO-1 under 2 processes, stopped after the state of step 4; the state (rank 0's, optimizer gathered) then
    resumes in one process with plain AdamW, and the end result equals an uninterrupted one-process run."""
    cfg = {**BASE, "micro_batch_size": 4, "shard_optimizer": True}
    ref = run_train(tmp, "ref", 1, cfg)
    run_train(tmp, "mixed", 2, cfg, stop_at=4)
    st = torch.load(tmp / "mixed" / "state.pt", weights_only=True)
    assert st["step"] == 4 and len(st["optimizer"]["state"]) == len(list(make()[0].parameters()))
    losses_tail, weights = run_train(tmp, "mixed", 1, cfg)
    ref_losses, ref_weights = ref
    assert_close_runs((ref_losses[4:], ref_weights), (losses_tail, weights))


def test_chunks_need_one_per_process():
    from var.distributed import chunk_bounds
    assert chunk_bounds(8, 0, 2) == [(0, 4), (4, 8)]
    assert chunk_bounds(10, 4, 2) == [(0, 4), (4, 8), (8, 10)]
    with pytest.raises(ValueError, match="fewer than"):
        chunk_bounds(8, 8, 2)


# ------------------------------------------------------------------------------------------------ sampling
def _sample(rank: int, world: int, tmp: str, tag: str, block: int, fast: bool = False) -> None:
    from var.distributed import current_world
    from var.sharded_sampling import gather_to_file, generate_blocks
    if world > 1:
        _init(rank, world, tmp, tag)
    torch.set_num_threads(1)
    var, vq = load_model_checkpoint(Path(tmp) / "var.pt", kind="var")[0], load_model_checkpoint(
        Path(tmp) / "vq.pt", kind="vqvae")[0]
    labels_N = np.repeat(np.arange(NCLS, dtype=np.int64), 5)          # 15 images: blocks of 4 leave one of 3
    w = current_world()
    engine = None
    if fast:   # the `sample` stage with sample.fast: the GenerationEngine (fp32 here, eager runner on CPU)
        from var.engine import GenerationEngine
        engine = GenerationEngine(var.eval(), vq.eval(), dtype=torch.float32)
    blocks, _ = generate_blocks(var.eval(), vq.eval(), labels_N, block_size=block, seed=3, world=w, engine=engine,
                                cfg=1.5, top_k=5, top_p=0.9)
    gather_to_file(blocks, labels_N, Path(tmp) / f"{tag}.npz", block, w)
    if world > 1:
        dist.destroy_process_group()


def _tokens(rank: int, world: int, tmp: str, tag: str) -> None:
    from pipeline.stages.tokens import encode_split
    from var.distributed import current_world
    from var.sharded_sampling import atomic_savez_reproducible
    if world > 1:
        _init(rank, world, tmp, tag)
    torch.set_num_threads(1)
    vq = load_model_checkpoint(Path(tmp) / "vq.pt", kind="vqvae")[0].eval()
    w = current_world()
    tok = encode_split(vq, Path(tmp) / "split.npz", vq.cfg.image_size, 4, torch.device("cpu"), False, "tokens", w,
                       0, tmp)
    if w.is_main:
        atomic_savez_reproducible(Path(tmp) / f"{tag}.npz", **tok)
    if world > 1:
        dist.destroy_process_group()


def test_sharded_tokens_are_byte_identical_across_world_sizes(tmp):
    """The tokens stage's encode under torchrun: 2 processes write the token file of 1 (blocks of 4 over 15
    images leave a short last block, taken by rank 0 of 2)."""
    from var.data import write_split
    _, vq, _, _ = make()
    save_checkpoint(tmp / "vq.pt", vq, kind="vqvae")
    H = vq.cfg.image_size
    write_split(tmp / "split.npz", np.random.default_rng(0).integers(0, 256, (15, H, H, 3), dtype=np.uint8),
                np.arange(15, dtype=np.int64) % NCLS)
    _tokens(0, 1, str(tmp), "t1")
    mp.spawn(_tokens, args=(2, str(tmp), "t2"), nprocs=2, join=True)
    assert (tmp / "t1.npz").read_bytes() == (tmp / "t2.npz").read_bytes()
    with np.load(tmp / "t2.npz", allow_pickle=False) as z:
        assert z["idx_NL"].shape == (15, sum(p * p for p in PNS)) and (z["labels_N"] == np.arange(15) % NCLS).all()
    assert not list(tmp.glob(".tokens-*")), "shards are removed after the merge"


@pytest.mark.parametrize("fast", [False, True], ids=["plain", "engine"])
def test_sharded_sampling_is_byte_identical_across_world_sizes(tmp, fast):
    var, vq, _, _ = make()
    save_checkpoint(tmp / "var.pt", var, kind="var")
    save_checkpoint(tmp / "vq.pt", vq, kind="vqvae")
    _sample(0, 1, str(tmp), "w1", 4, fast)
    mp.spawn(_sample, args=(2, str(tmp), "w2", 4, fast), nprocs=2, join=True)
    a, b = (tmp / "w1.npz").read_bytes(), (tmp / "w2.npz").read_bytes()
    assert a == b
    with np.load(tmp / "w2.npz", allow_pickle=False) as z:
        H = vq.cfg.image_size
        assert z["images"].shape == (15, H, H, 3) and z["images"].dtype == np.uint8
        assert (z["labels"] == np.repeat(np.arange(NCLS), 5)).all()
    assert not list(tmp.glob(".w2.npz.shard*")), "shards are removed after the merge"


# ------------------------------------------------------------------------------------------------ tokenizer
TOK_CFG = dict(batch_size=8, max_steps=6, lr=2e-3, warmup_steps=2, final_lr_ratio=0.1, dead_code_restart=True,
               dead_code_every_steps=3, micro_batch_size=2, ckpt_every_steps=2, eval_every_epochs=100,
               log_every_steps=1000, seed=5)


def _train_tok(rank: int, world: int, tmp: str, tag: str) -> None:
    from var.tokenizer_train import TokenizerTrainConfig, train_tokenizer
    from var.vqvae import VQVAE
    if world > 1:
        _init(rank, world, tmp, tag)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    vq = VQVAE(VQVAEConfig(vocab_size=V, z_channels=4, ch=32, ch_mult=(1, 2), num_res_blocks=1, using_sa=False,
                           using_mid_sa=False, patch_nums=PNS, share_quant_resi=2))
    images = np.random.default_rng(1).integers(0, 256, (20, 6, 6, 3), dtype=np.uint8)   # 3x3 latents
    losses = []
    m = train_tokenizer(vq, images, build_config(TokenizerTrainConfig, TOK_CFG, "tokenizer.train"),
                        out_dir=Path(tmp) / tag, log=lambda s: None,
                        progress=lambda s, n, info: losses.append([info["loss"], info["rec"], info["vq"]]))
    if world > 1:
        dist.destroy_process_group()
    if rank == 0:
        (Path(tmp) / f"{tag}.losses.json").write_text(json.dumps({"losses": losses,
                                                                  "restarted": m["restarted_codes"]}))


def test_tokenizer_ddp_two_processes_match_one(tmp):
    """The tokenizer trainer under 2 gloo processes (chunks of 2 of a batch of 8, accumulated) matches 1 process:
    per-step losses, dead-code restarts (global hit counts, restart features of the whole batch) and weights."""
    _train_tok(0, 1, str(tmp), "t1")
    mp.spawn(_train_tok, args=(2, str(tmp), "t2"), nprocs=2, join=True)
    one, two = (json.loads((tmp / f"{t}.losses.json").read_text()) for t in ("t1", "t2"))
    assert len(one["losses"]) == 6 and np.allclose(one["losses"], two["losses"], rtol=0, atol=1e-5)
    assert one["restarted"] == two["restarted"] > 0       # restarts happened, identically
    # Weights are compared through what they compute: a conv bias right before a one-channel-per-group GroupNorm
    # has a gradient of exactly zero in theory, so Adam turns its rounding noise (~1e-9, summed in another order
    # over 2 ranks) into lr-sized steps that change no output.
    a, b = (load_model_checkpoint(tmp / t / "model.pt", kind="vqvae")[0].eval() for t in ("t1", "t2"))
    x = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (4, 6, 6, 3))).permute(0, 3, 1, 2) / 127.5 - 1
    with torch.no_grad():
        fa, fb = a.encode_features(x.float()), b.encode_features(x.float())
        assert torch.allclose(fa, fb, rtol=0, atol=1e-4), (fa - fb).abs().max()
        ra, rb = a(x.float())[0], b(x.float())[0]
        assert torch.allclose(ra, rb, rtol=0, atol=1e-4), (ra - rb).abs().max()
    assert torch.allclose(a.quantize.embedding.weight, b.quantize.embedding.weight, rtol=0, atol=1e-4)


def test_compiled_ddp_training_matches_eager_single_process(tmp):
    """train.compile under DDP (the compiled forward + loss called on the DDP module, chunked global batch) trains
    the same run as one eager process."""
    cfg = {**BASE, "micro_batch_size": 4}
    one = run_train(tmp, "w1", 1, cfg)
    two = run_train(tmp, "w2c", 2, {**cfg, "compile": True})
    assert_close_runs(one, two)
