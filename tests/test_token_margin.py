"""The nearest-code margin (var.quant.nearest_code / f_to_idx return_margin) that the engine's checked low-precision
encode relies on: no feature error shorter than it changes a token."""
from __future__ import annotations

import pytest
import torch

from var.config import VQVAEConfig
from var.quant_independent import use_independent_quantizer
from var.vqvae import VQVAE


def codebook_quantizer(independent: bool = False):
    torch.manual_seed(0)
    vq = VQVAE(VQVAEConfig(vocab_size=32, z_channels=4, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                           patch_nums=(1, 2, 4))).eval()
    if independent:
        use_independent_quantizer(vq)
    with torch.no_grad():
        vq.quantize.embedding.weight.normal_()      # spread codes: margins of all sizes
    return vq.quantize


def test_margin_is_half_the_gap_of_the_two_smallest_distances_and_no_shorter_error_flips():
    q = codebook_quantizer()
    g = torch.Generator().manual_seed(1)
    z = torch.randn(500, 4, generator=g)
    idx, m = q.nearest_code(z, return_margin=True)
    d = torch.cdist(z.double(), q.embedding.weight.double())
    d2 = d.topk(2, dim=1, largest=False).values
    torch.testing.assert_close(m.double(), (d2[:, 1] - d2[:, 0]) / 2, rtol=1e-4, atol=1e-5)
    assert torch.equal(idx, q.nearest_code(z))
    for _ in range(20):                                     # random directions, length just under the margin
        u = torch.randn(500, 4, generator=g)
        u = u / u.norm(dim=1, keepdim=True) * m[:, None] * 0.999
        assert torch.equal(q.nearest_code(z + u), idx)
    # the bound is not vacuous: moving towards the runner-up by a little more than the exact boundary distance
    # (d_2 - d_1) / (2 |e_2 - e_1|) >= margin flips every row
    e = q.embedding.weight
    second = d.topk(2, dim=1, largest=False).indices[:, 1]
    gap = e[second] - e[idx]
    dist = (d2[:, 1] ** 2 - d2[:, 0] ** 2).float() / (2 * gap.norm(dim=1))
    assert (dist >= m - 1e-5).all()
    moved = z + gap / gap.norm(dim=1, keepdim=True) * (dist[:, None] * 1.001 + 1e-4)
    assert (q.nearest_code(moved) != idx).float().mean() > 0.99


@pytest.mark.parametrize("independent", [False, True])
def test_feature_error_below_each_images_margin_keeps_every_token(independent):
    q = codebook_quantizer(independent)
    g = torch.Generator().manual_seed(2)
    f = torch.randn(16, 4, 4, 4, generator=g) * 1.5
    idx, fhat, m_BK = q.f_to_idx(f, return_fhat=True, return_margin=True)
    assert all(torch.equal(a, b) for a, b in zip(idx, q.f_to_idx(f)))
    assert len(fhat) == 3 and m_BK.shape == (16, 3) and (m_BK > 0).all()
    # scale 1 sees the area mean of f itself (both quantisers)
    torch.testing.assert_close(m_BK[:, 0], q.nearest_code(f.mean((2, 3)), return_margin=True)[1])
    m_B = m_BK.amin(1)
    for _ in range(10):     # per-position error norms just under the image's margin
        u = torch.randn(16, 4, 4, 4, generator=g)
        u = u / u.norm(dim=1, keepdim=True) * m_B[:, None, None, None] * 0.999
        assert all(torch.equal(a, b) for a, b in zip(idx, q.f_to_idx(f + u)))
    # ... while errors several times the margins do change tokens (the test can fail)
    u = torch.randn(16, 4, 4, 4, generator=g)
    u = u / u.norm(dim=1, keepdim=True) * m_B[:, None, None, None] * 20
    assert not all(torch.equal(a, b) for a, b in zip(idx, q.f_to_idx(f + u)))


def test_copies_of_a_code_do_not_shrink_the_margin():
    """Duplicated codes tie exactly for every z (the first copy always wins): the margin is to the nearest other
    vector. Changing the codebook in place refreshes the cached set of distinct codes."""
    q = codebook_quantizer()
    z = torch.randn(200, 4, generator=torch.Generator().manual_seed(3))
    idx, m = q.nearest_code(z, return_margin=True)
    with torch.no_grad():
        q.embedding.weight[20:] = q.embedding.weight[:12]       # 12 copies, of codes 0..11
    idx2, m2 = q.nearest_code(z, return_margin=True)
    e = q.embedding.weight[:20]
    d = torch.cdist(z, e).topk(2, dim=1, largest=False).values
    torch.testing.assert_close(m2, (d[:, 1] - d[:, 0]) / 2, rtol=1e-4, atol=1e-5)
    assert (idx2 < 20).all() and (m2 > 0).all()
