"""The one generation path (var/sharded_sampling.py), its uint8 conversion (var/images.py) and the sampler variants
(var.config.SamplerConfig): constant vs linear CFG, no CFG, top-k / top-p off -- each changes what it claims and
nothing else, checked against independent computations (the teacher-forced full-sequence forward, hand values)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from var.ar import AR, ARConfig, sample_ar, single_scale
from var.config import VARConfig, VQVAEConfig
from var.engine import GenerationEngine
from var.images import to_uint8, unit_to_uint8
from var.sampling import guidance_weight, sample
from var.sharded_sampling import block_seed, generate, generate_blocks
from var.transformer import VAR
from var.vqvae import VQVAE

PN = (1, 2, 4)
V, NC = 64, 5


def tiny_models():
    torch.manual_seed(0)
    vq = VQVAE(VQVAEConfig(vocab_size=V, z_channels=8, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                           patch_nums=PN)).eval()
    var = VAR(VARConfig(depth=2, num_classes=NC, vocab_size=V, z_channels=8, patch_nums=PN,
                        embed_dim_override=64, num_heads_override=2)).eval()
    for b in var.blocks:      # larger AdaLN gammas than the init's 1e-5, so the class and the blocks matter
        b.ada_lin[-1].weight.data.normal_(0, 0.05)
    return var, vq


@pytest.fixture(scope="module")
def models():
    return tiny_models()


# ------------------------------------------------------------------------------------------------ uint8
def test_uint8_conversion_is_round_half_up_of_the_clamped_value():
    x = torch.tensor([-1.0, 0.0, 0.25, 0.5, 0.75, 1.0, 2.0, float("inf")], dtype=torch.float64)
    # 0.25 * 255 = 63.75 -> 64; 0.5 -> 127.5 + 0.5 = 128; 0.75 -> 191.25 -> 191; clamped outside [0, 1]
    assert unit_to_uint8(x).tolist() == [0, 0, 64, 128, 191, 255, 255, 255]
    # exact halves n + 0.5 go up (round-half-to-even, the rule eval/recon.py had, sends even n down)
    n = np.array([0, 2, 126, 254], np.float64)
    half = (n + 0.5) / 255
    assert np.array_equal(half * 255, n + 0.5)            # the test's premise: these products are exact halves
    assert unit_to_uint8(torch.from_numpy(half)).tolist() == [1, 3, 127, 255]
    assert unit_to_uint8(half).tolist() == [1, 3, 127, 255]
    assert torch.from_numpy(half * 255).round().tolist() == [0, 2, 126, 254]


def test_numpy_path_equals_the_former_data_rounding_and_the_tensor_path():
    rng = np.random.default_rng(0)
    img = rng.uniform(-0.2, 1.2, (4000, 3)).astype(np.float32)
    img[:8] = [[0, 1, 0.5]] * 8
    old = np.clip(np.floor(img * 255 + 0.5), 0, 255).astype(np.uint8)   # var/data.py's shapes rendering before
    assert np.array_equal(unit_to_uint8(img), old)
    assert np.array_equal(unit_to_uint8(torch.from_numpy(img)).numpy(), old)
    img_B3HW = torch.from_numpy(rng.uniform(0, 1, (2, 3, 5, 7)).astype(np.float32))
    assert np.array_equal(to_uint8(img_B3HW), unit_to_uint8(img_B3HW.permute(0, 2, 3, 1)).numpy())


# ------------------------------------------------------------------------------------------------ the path
def test_generate_is_the_block_seeded_sampler(models):
    """Each block is one sampler call seeded with block_seed(seed, b), converted by to_uint8: computed here
    directly, block by block."""
    var, vq = models
    labels = np.repeat(np.arange(NC), 2)
    kw = dict(cfg=2.0, cfg_schedule="constant", top_k=10, top_p=0.9, more_smooth=False)
    g = generate(var, vq, labels, block_size=4, seed=3, keep_tokens=True, **kw)
    assert sorted(g.images) == [0, 1, 2] and g.rejection is None and g.seconds > 0
    for b, s in enumerate(range(0, len(labels), 4)):
        idx, img = sample(var, vq, len(labels[s:s + 4]), torch.from_numpy(labels[s:s + 4]), seed=3 * 100003 + b, **kw)
        assert np.array_equal(g.images[b], to_uint8(img))
        assert all(torch.equal(a, c) for a, c in zip(g.tokens[b], idx))
    assert block_seed(3, 2) == 3 * 100003 + 2



def test_seed_repeats_are_the_same_labels_drawn_from_the_repeat_seeds(models, tmp_path):
    """write_seed_repeats (the sample and sample_row stages' further seeds): repeat i is generate() at
    repeat_seed(seed, i) = seed + 1_000_003 * i, the labels unchanged, every seed recorded (repeat 0 first)."""
    from var.io import load_npz
    from var.sharded_sampling import write_seed_repeats
    var, vq = models
    labels = np.repeat(np.arange(NC), 2)
    kw = dict(cfg=1.5, cfg_schedule="linear", top_k=10, top_p=0.0, more_smooth=False)
    write_seed_repeats(var, vq, labels, tmp_path / "seeds.npz", seeds=3, seed=5, block_size=4, **kw)
    z = load_npz(tmp_path / "seeds.npz")
    assert sorted(z) == ["images_seed1", "images_seed2", "labels", "seeds"]
    assert z["seeds"].tolist() == [5, 5 + 1_000_003, 5 + 2 * 1_000_003] and np.array_equal(z["labels"], labels)
    for i in (1, 2):
        g = generate(var, vq, labels, block_size=4, seed=5 + 1_000_003 * i, **kw)
        assert np.array_equal(z[f"images_seed{i}"], np.concatenate([g.images[b] for b in sorted(g.images)]))
    assert not np.array_equal(z["images_seed1"], z["images_seed2"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seeds.npz"]      # the per-repeat files are removed

def test_ar_rows_take_the_same_path():
    torch.manual_seed(0)
    ar = AR(ARConfig(depth=2, embed_dim_override=32, num_classes=3, vocab_size=32, patch_nums=(4,))).eval()
    torch.manual_seed(0)
    vq = VQVAE(single_scale(VQVAEConfig(vocab_size=32, z_channels=8, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                                        using_sa=False, using_mid_sa=False, patch_nums=(1, 2, 4)))).eval()
    labels = np.array([0, 0, 1, 2, 2], np.int64)
    got, _ = generate_blocks(ar, vq, labels, block_size=2, seed=1, cfg=1.0, cfg_schedule="constant", top_k=8)
    for b, s in enumerate(range(0, 5, 2)):
        _, img = sample_ar(ar, vq, len(labels[s:s + 2]), torch.from_numpy(labels[s:s + 2]), seed=block_seed(1, b),
                           cfg=1.0, cfg_schedule="constant", top_k=8)
        assert np.array_equal(got[b], to_uint8(img))
    with pytest.raises(ValueError, match="more_smooth"):
        generate_blocks(ar, vq, labels, block_size=2, seed=1, more_smooth=True)


# ------------------------------------------------------------------------------------------------ variants
def test_guidance_weight_by_hand():
    assert [guidance_weight(2.0, "linear", k, 5) for k in range(5)] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert [guidance_weight(2.0, "constant", k, 5) for k in range(5)] == [2.0] * 5
    assert guidance_weight(2.0, "linear", 0, 1) == 0.0
    with pytest.raises(ValueError, match="cfg_schedule"):
        guidance_weight(1.0, "cosine", 0, 3)


def _teacher_forced(var, vq, labels, ref_idx, **kw):
    """CFG logits of every scale when every token is forced to `ref_idx`: the inputs of every scale are then the
    same whatever the schedule, so the logits differ only by the guidance."""
    keep = [torch.ones_like(t, dtype=torch.bool) for t in ref_idx]
    _, _, det = sample(var, vq, len(labels), labels, seed=0, return_details=True, teacher_force=(ref_idx, keep), **kw)
    return det["cfg_logits"]


def test_cfg_schedules_against_the_full_sequence_forward(models):
    var, vq = models
    labels = torch.tensor([0, 3, 4])
    ref_idx, _ = sample(var, vq, 3, labels, seed=11, cfg=0.0)
    with torch.no_grad():
        x = vq.idx_to_var_input(ref_idx)
        cond = var(labels, x)                                          # the conditional-only logits path
        uncond = var(torch.full_like(labels, NC), x)                   # the null class
    bounds = [(sum(p * p for p in PN[:k]), sum(p * p for p in PN[:k + 1])) for k in range(len(PN))]
    K, cfg = len(PN), 2.5
    lin = _teacher_forced(var, vq, labels, ref_idx, cfg=cfg, cfg_schedule="linear")
    con = _teacher_forced(var, vq, labels, ref_idx, cfg=cfg, cfg_schedule="constant")
    off = _teacher_forced(var, vq, labels, ref_idx, cfg=0.0)
    for k, (s, e) in enumerate(bounds):
        c, u = cond[:, s:e], uncond[:, s:e]
        t = cfg * k / (K - 1)
        torch.testing.assert_close(lin[k], (1 + t) * c - t * u, rtol=0, atol=2e-4)
        torch.testing.assert_close(con[k], (1 + cfg) * c - cfg * u, rtol=0, atol=2e-4)
        torch.testing.assert_close(off[k], c, rtol=0, atol=2e-4)        # cfg 0: the conditional logits
    # linear guides nothing at the first scale and fully at the last; constant guides every scale fully: the two
    # schedules differ at every scale but the last
    assert (lin[0] - con[0]).abs().max() > 1e-3 and (lin[1] - con[1]).abs().max() > 1e-3
    torch.testing.assert_close(lin[-1], con[-1], rtol=0, atol=1e-5)


def test_schedule_is_irrelevant_without_cfg_and_matters_with_it(models):
    var, vq = models
    labels = torch.arange(NC).repeat(4)
    a = sample(var, vq, len(labels), labels, seed=5, cfg=0.0, cfg_schedule="linear", top_k=10)[0]
    b = sample(var, vq, len(labels), labels, seed=5, cfg=0.0, cfg_schedule="constant", top_k=10)[0]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = sample(var, vq, len(labels), labels, seed=5, cfg=4.0, cfg_schedule="linear", top_k=10)[0]
    d = sample(var, vq, len(labels), labels, seed=5, cfg=4.0, cfg_schedule="constant", top_k=10)[0]
    assert any(not torch.equal(x, y) for x, y in zip(c, d))


@pytest.mark.parametrize("schedule", ["linear", "constant"])
def test_engine_computes_both_schedules_as_the_plain_sampler(models, schedule):
    var, vq = models
    g = torch.Generator()
    kw = dict(cfg=1.5, cfg_schedule=schedule, top_k=10, top_p=0.9)
    idx_a, img_a = sample(var, vq, 6, None, generator=g.manual_seed(3), **kw)
    idx_b, img_b = GenerationEngine(var, vq, dtype=torch.float32).generate(6, None, generator=g.manual_seed(3), **kw)
    assert all(torch.equal(a, b) for a, b in zip(idx_a, idx_b))
    assert (img_a - img_b).abs().max().item() < 1e-5


def test_engine_teacher_forcing_in_chunks_equals_the_plain_sampler(models):
    """Fig. 7 / zero-shot through the engine: teacher forcing is split with the engine's chunks."""
    var, vq = models
    labels = torch.tensor([0, 1, 2, 3, 4])
    src, _ = sample(var, vq, 5, labels, seed=1, cfg=0.0)
    from var.editing import force_first_scales
    tf = force_first_scales(src, 2)
    idx_a, _ = sample(var, vq, 5, labels, seed=9, cfg=1.5, teacher_force=tf)
    idx_b, _ = GenerationEngine(var, vq, dtype=torch.float32, max_batch=2).generate(5, labels, seed=9, cfg=1.5,
                                                                                 teacher_force=tf)
    assert torch.equal(idx_b[0], src[0]) and torch.equal(idx_b[1], src[1])
    eng_one = GenerationEngine(var, vq, dtype=torch.float32).generate(5, labels, seed=9, cfg=1.5, teacher_force=tf)[0]
    assert all(torch.equal(a, b) for a, b in zip(idx_a, eng_one))


def test_top_k_top_p_off_keeps_every_token_and_changes_nothing_before_the_draw(models):
    var, vq = models
    labels = torch.arange(NC).repeat(8)
    _, _, on = sample(var, vq, len(labels), labels, seed=2, cfg=1.5, top_k=3, top_p=0.0, return_details=True)
    _, _, off = sample(var, vq, len(labels), labels, seed=2, cfg=1.5, top_k=0, top_p=0.0, return_details=True)
    assert all(int(n.max()) <= 3 for n in on["num_kept"])
    assert all(bool((n == V).all()) for n in off["num_kept"])            # off: the whole vocabulary stays
    torch.testing.assert_close(on["cfg_logits"][0], off["cfg_logits"][0], rtol=0, atol=0)   # same first logits
    idx_on = sample(var, vq, len(labels), labels, seed=2, cfg=1.5, top_k=3)[0]
    idx_off = sample(var, vq, len(labels), labels, seed=2, cfg=1.5, top_k=0)[0]
    assert len(idx_off[-1].unique()) > len(idx_on[-1].unique())
