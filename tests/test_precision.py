"""var.precision.fp32_precision, and the tokens stage encoding under it (strict IEEE float32 on every device)."""
import numpy as np
import torch

from pipeline.stages.tokens import encode_split
from var.config import VQVAEConfig
from var.data import write_split
from var.precision import fp32_precision
from var.vqvae import VQVAE

CONV, MM = torch.backends.cudnn.conv, torch.backends.cuda.matmul


def _set(conv: str, mm: str):
    CONV.fp32_precision, MM.fp32_precision = conv, mm


def test_fp32_precision_sets_and_restores():
    saved = CONV.fp32_precision, MM.fp32_precision
    try:
        _set("tf32", "tf32")
        with fp32_precision():
            assert (CONV.fp32_precision, MM.fp32_precision) == ("ieee", "ieee")
        assert (CONV.fp32_precision, MM.fp32_precision) == ("tf32", "tf32")
        _set("ieee", "ieee")
        with fp32_precision(allow_tf32=True):
            assert (CONV.fp32_precision, MM.fp32_precision) == ("tf32", "tf32")
        assert (CONV.fp32_precision, MM.fp32_precision) == ("ieee", "ieee")
        _set("tf32", "ieee")
        try:                                   # restored on an exception too
            with fp32_precision():
                raise KeyError("boom")
        except KeyError:
            pass
        assert (CONV.fp32_precision, MM.fp32_precision) == ("tf32", "ieee")
    finally:
        _set(*saved)


def test_tokens_stage_encodes_in_ieee_fp32_whatever_the_default(tmp_path):
    torch.manual_seed(0)
    cfg = VQVAEConfig(vocab_size=32, z_channels=8, ch=32, ch_mult=(1, 2), num_res_blocks=1, using_sa=False,
                      using_mid_sa=False, patch_nums=(1, 2, 4))
    vq = VQVAE(cfg).eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(10, dtype=np.int64) % 3
    write_split(tmp_path / "split.npz", images, labels)
    seen = []
    plain = vq.img_to_idx

    def spy(img_B3HW):
        seen.append((CONV.fp32_precision, MM.fp32_precision))
        return plain(img_B3HW)
    vq.img_to_idx = spy
    saved = CONV.fp32_precision, MM.fp32_precision
    try:
        _set("tf32", "tf32")                   # cuDNN's default on a GPU
        out = encode_split(vq, tmp_path / "split.npz", 8, 4, torch.device("cpu"), False, "test")
        assert seen == [("ieee", "ieee")] * 3  # 10 images in batches of 4
        assert (CONV.fp32_precision, MM.fp32_precision) == ("tf32", "tf32")
    finally:
        _set(*saved)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    expect = torch.cat(plain(x), dim=1).numpy()
    np.testing.assert_array_equal(out["idx_NL"], expect)
    np.testing.assert_array_equal(out["labels_N"], labels)
    assert out["idx_NL"].dtype == np.int16 and out["idx_NL"].shape == (10, 1 + 4 + 16)
