"""VAR.attention = "flex" (FlexAttention with the block-causal BlockMask) computes the masked-SDPA forward.

FlexAttention has no CPU backward, so the gradient check runs on a GPU only (skipped on CPU)."""
import pytest
import torch

from var.config import VARConfig
from var.transformer import VAR


def _model(device="cpu"):
    torch.manual_seed(0)
    with torch.device(device):
        m = VAR(VARConfig(depth=2, embed_dim_override=64, num_heads_override=2, vocab_size=32, num_classes=4,
                          patch_nums=(1, 2, 3, 5), z_channels=8, cond_drop_rate=0.0,
                          drop_path_rate_override=0.0))
    for b in m.blocks:       # AdaLN gammas far from ~0, so attention (and its mask) shapes the output
        b.ada_lin[-1].weight.data.normal_(0, 0.3)
    m.head.weight.data.normal_(0, 0.3)
    return m


def _inputs(m, device="cpu"):
    g = torch.Generator(device=device).manual_seed(1)
    label_B = torch.tensor([0, 1, 3], device=device)
    x = torch.randn(3, m.L - m.first_l, 8, device=device, generator=g)
    return label_B, x


def test_flex_forward_equals_masked_sdpa():
    m = _model().eval()
    label_B, x = _inputs(m)
    with torch.no_grad():
        ref = m(label_B, x)
        m.attention = "flex"
        out = m(label_B, x)
        m.attention = "sdpa"
        m.attn_bias_for_masking.zero_()       # no mask: must differ, so the comparison above tests the mask
        unmasked = m(label_B, x)
    assert (out - ref).abs().max().item() < 1e-5 * ref.abs().max().item()
    assert (unmasked - ref).abs().max().item() > 1e-2 * ref.abs().max().item()
    bm = _model().block_mask()
    assert bm.shape[-2:] == (m.L, m.L)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (FlexAttention has no CPU backward)")
def test_flex_gradients_equal_sdpa_on_gpu():
    grads = []
    for attention in ("sdpa", "flex"):
        m = _model("cuda").train()
        m.attention = attention
        label_B, x = _inputs(m, "cuda")
        m(label_B, x).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]))
    assert ((grads[0] - grads[1]).norm() / grads[0].norm()).item() < 1e-4
