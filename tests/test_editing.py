"""Zero-shot editing (var/editing.py): outside the mask every token is the source's, at every scale; the mask rule;
the sampler's default path is untouched by the teacher-forcing hook."""
from __future__ import annotations

import pytest
import torch

from var.config import VARConfig, VQVAEConfig
from var.editing import box_mask, edit, force_first_scales, scale_masks
from var.sampling import sample
from var.transformer import VAR
from var.vqvae import VQVAE

PNS = (1, 2, 3, 4)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    vq = VQVAE(VQVAEConfig(vocab_size=32, z_channels=8, ch=32, ch_mult=(1, 2), num_res_blocks=1, using_sa=False,
                           using_mid_sa=False, patch_nums=PNS)).eval()          # 8 px images, 4x4 latents
    var = VAR(VARConfig(depth=2, embed_dim_override=32, num_classes=4, vocab_size=32, z_channels=8,
                        patch_nums=PNS)).eval()
    img = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return vq, var, img


def test_scale_masks_overlap_rule():
    m = torch.zeros(1, 8, 8, dtype=torch.bool)
    m[0, 2, 2] = True                      # pixel [2,3)^2
    # pn=3: cells [0, 8/3), [8/3, 16/3), [16/3, 8) -> pixel 2 overlaps cells 0 and 1 in each direction
    inside = scale_masks(m, (1, 3, 4, 8))
    assert inside[0].tolist() == [[True]]
    assert inside[1].view(3, 3).tolist() == [[True, True, False], [True, True, False], [False] * 3]
    assert inside[2].view(4, 4).nonzero().tolist() == [[1, 1]]             # cells of 2 px: only [2, 4)
    assert inside[3].view(8, 8).nonzero().tolist() == [[2, 2]]
    full = box_mask(2, 8, 8, (0.25, 0.25, 0.75, 0.75))
    assert full.sum() == 2 * 16 and full[0, 2:6, 2:6].all()


@pytest.mark.parametrize("kind", ["inpaint", "outpaint", "edit"])
def test_tokens_outside_mask_equal_source_at_every_scale(models, kind):
    vq, var, img = models
    box = box_mask(3, 8, 8, (0.25, 0.25, 0.75, 0.75))
    mask = ~box if kind == "outpaint" else box
    labels = [1, 2, 3] if kind == "edit" else [0, 1, 2]
    for more_smooth in (False, True):
        idx, out, src, inside = edit(var, vq, img, mask, labels, seed=3, cfg=1.5, more_smooth=more_smooth)
        assert out.shape == (3, 3, 8, 8) and 0 <= out.min() and out.max() <= 1
        for k, pn in enumerate(PNS):
            outside = ~inside[k]
            assert torch.equal(idx[k][outside], src[k][outside]), (kind, k)
        assert (~inside[-1]).sum() == 3 * (16 - 4 if kind != "outpaint" else 4)   # 4x4 map, 2x2 box
        # the generated part actually differs somewhere (the model is random, V = 32)
        assert any((idx[k][inside[k]] != src[k][inside[k]]).any() for k in range(len(PNS)))


def test_full_keep_reproduces_the_source_reconstruction(models):
    vq, var, img = models
    idx, out, src, _ = edit(var, vq, img, torch.zeros(3, 8, 8, dtype=torch.bool), 0, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(idx, src))
    torch.testing.assert_close(out, vq.idx_to_img(src).add(1).mul(0.5), rtol=0, atol=1e-5)


def test_hook_off_is_the_default_sampler_and_draws_the_same_stream(models):
    vq, var, img = models
    a_idx, a_img = sample(var, vq, 3, [0, 1, 2], seed=7, cfg=1.5)
    b_idx, b_img = sample(var, vq, 3, [0, 1, 2], seed=7, cfg=1.5, teacher_force=None)
    assert all(torch.equal(a, b) for a, b in zip(a_idx, b_idx)) and torch.equal(a_img, b_img)
    # forcing nothing (keep all False) is bit-identical to the default too: the hook never touches the RNG
    tf = force_first_scales(a_idx, 0)
    c_idx, c_img = sample(var, vq, 3, [0, 1, 2], seed=7, cfg=1.5, teacher_force=tf)
    assert all(torch.equal(a, c) for a, c in zip(a_idx, c_idx)) and torch.equal(a_img, c_img)
    src = vq.img_to_idx(img)
    f_idx, _ = sample(var, vq, 3, [0, 1, 2], seed=7, cfg=1.5, teacher_force=force_first_scales(src, 2))
    assert torch.equal(f_idx[0], src[0]) and torch.equal(f_idx[1], src[1])
