"""Every pixel mode Pillow opens decodes by its stated rule (var/images.py), through the real loader.

Each test writes a file with known pixel values, decodes it with `load_image` (the loader of the data and tokens
stages; `image_size` equal to the file's shorter side, so no resampling happens and pixels compare exactly) and
asserts the uint8 values worked out by hand from the rule, written out as literals.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from eval.features import open_images
from var.data import ImageSplit, check_decodable, write_index
from var.images import CorruptImageError, UnsupportedImageModeError, decode_image, load_image

ORIENTATION = 0x0112


def _png_raw(path, width, height, bit_depth, colour_type, rows: list[bytes], extra_chunks=()):
    """A PNG written byte by byte (filter 0 on every row), for layouts Pillow cannot write (16-bit colour)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    body = b"".join(chunk(t, d) for t, d in extra_chunks)
    idat = zlib.compress(b"".join(b"\x00" + r for r in rows))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + body + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def _decode(path, size):
    return load_image(str(path), size)


def _square(row):
    """A one-row pattern (1, W[, C]) repeated to a W x W image, so `load_image(path, W)` keeps every pixel."""
    row = np.asarray(row)
    return np.repeat(row, row.shape[1], axis=0)


def _decoded_row(path):
    out = _decode(path, Image.open(path).size[0])
    assert (out == out[:1]).all()                                   # every row decoded the same
    return out[0].tolist()


# ------------------------------------------------------------------------------------------------ 16-bit grey
GREY16 = [0, 257, 32896, 65280, 65535, 128, 129, 385]
# round(v / 257): 0, 1, 128 (32896 = 128 * 257), 254 (65280 / 257 = 254.01), 255, 0 (0.498), 1 (0.502), 1 (1.498)
GREY16_EXPECTED = [0, 1, 128, 254, 255, 0, 1, 1]


def _grey16_array():
    return np.array([GREY16], np.uint16).repeat(8, axis=0)          # 8 rows x 8 columns


def _assert_grey_rows(out, expected):
    assert out.dtype == np.uint8 and out.shape[-1] == 3
    assert (out == out[..., :1]).all()                              # R = G = B
    assert out[0, :, 0].tolist() == expected and (out == out[:1]).all()


def test_16bit_png_mid_grey_is_128_not_white(tmp_path):
    Image.fromarray(_grey16_array()).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    _assert_grey_rows(_decode(tmp_path / "g16.png", 8), GREY16_EXPECTED)


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16bit_tiff(tmp_path, mode):
    a = _grey16_array()
    im = Image.frombytes(mode, (8, 8), a.astype("<u2" if mode == "I;16" else ">u2").tobytes())
    im.save(tmp_path / "g16.tif")
    assert Image.open(tmp_path / "g16.tif").mode == mode
    _assert_grey_rows(_decode(tmp_path / "g16.tif", 8), GREY16_EXPECTED)


def test_16bit_grey_png_colour_key_is_white(tmp_path):
    a = _grey16_array()
    trns = (b"tRNS", struct.pack(">H", 32896))                     # grey 32896 is fully transparent
    _png_raw(tmp_path / "k.png", 8, 8, 16, 0, [r.astype(">u2").tobytes() for r in a], [trns])
    out = _decode(tmp_path / "k.png", 8)
    _assert_grey_rows(out, [0, 1, 255, 254, 255, 0, 1, 1])


def test_pgm_mode_I_holds_16bit_samples(tmp_path):
    # maxval 65535: mode I with the raw samples; 65535 -> 255, 32896 -> 128
    (tmp_path / "a.pgm").write_bytes(b"P5\n2 2\n65535\n" + struct.pack(">4H", 32896, 65535, 0, 257))
    # maxval 1023: Pillow scales to 0..65535 (512 -> 32800), then 32800 / 257 = 127.6 -> 128 (= 512 / 1023 * 255)
    (tmp_path / "b.pgm").write_bytes(b"P5\n2 2\n1023\n" + struct.pack(">4H", 512, 1023, 0, 1))
    assert Image.open(tmp_path / "a.pgm").mode == Image.open(tmp_path / "b.pgm").mode == "I"
    assert _decode(tmp_path / "a.pgm", 2)[..., 0].tolist() == [[128, 255], [0, 1]]
    # 1 / 1023 * 65535 = 64.06 -> Pillow 64 -> 64 / 257 = 0.25 -> 0
    assert _decode(tmp_path / "b.pgm", 2)[..., 0].tolist() == [[128, 255], [0, 0]]


@pytest.mark.parametrize("mode, arr", [("I", np.array([[1, 70000], [0, 5]], np.int32)),
                                       ("F", np.array([[0.5, 1.0], [0.0, 0.25]], np.float32))])
def test_32bit_int_and_float_tiff_are_refused_naming_file_and_mode(tmp_path, mode, arr):
    Image.fromarray(arr).save(tmp_path / "wide.tif")
    assert Image.open(tmp_path / "wide.tif").mode == mode
    with pytest.raises(UnsupportedImageModeError) as e:
        _decode(tmp_path / "wide.tif", 2)
    assert str(tmp_path / "wide.tif") in str(e.value) and f"mode {mode!r}" in str(e.value)
    assert isinstance(e.value, CorruptImageError)                  # data.skip_corrupt can drop it like a bad file


def test_16bit_colour_png_is_reduced_by_pillow_keeping_the_high_byte(tmp_path):
    # Documented exception (var/images.py): Pillow hands 16-bit RGB over as 8-bit, floor(v / 256).
    _png_raw(tmp_path / "rgb16.png", 1, 1, 16, 2, [struct.pack(">3H", 32896, 65280, 255)])
    assert _decode(tmp_path / "rgb16.png", 1)[0, 0].tolist() == [128, 255, 0]


# ---------------------------------------------------------------------------------------------------- CMYK
# (C, M, Y, K) = (10, 100, 200, 50): R = round(245 * 205 / 255) = round(196.96) = 197,
# G = round(155 * 205 / 255) = round(124.61) = 125, B = round(55 * 205 / 255) = round(44.22) = 44
@pytest.mark.parametrize("ext, kwargs", [("tif", {}), ("jpg", {"quality": 100})])
def test_cmyk(tmp_path, ext, kwargs):
    Image.new("CMYK", (16, 16), (10, 100, 200, 50)).save(tmp_path / f"c.{ext}", **kwargs)
    assert Image.open(tmp_path / f"c.{ext}").mode == "CMYK"
    out = _decode(tmp_path / f"c.{ext}", 16)
    assert (out == np.array([197, 125, 44], np.uint8)).all()


# ------------------------------------------------------------------------------------------------- palette
PALETTE = [255, 0, 0, 0, 128, 255, 10, 20, 30, 0, 0, 0]             # index 0 red, 1 (0,128,255), 2 (10,20,30), 3 black


def _palette_image(transparency=None):
    im = Image.fromarray(_square(np.array([[0, 1, 2, 3]], np.uint8)), "P")
    im.putpalette(PALETTE + [0] * (768 - len(PALETTE)))
    return im


def test_palette_without_transparency(tmp_path):
    _palette_image().save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    assert _decoded_row(tmp_path / "p.png") == [[255, 0, 0], [0, 128, 255], [10, 20, 30], [0, 0, 0]]


def test_palette_with_per_index_alpha(tmp_path):
    # alpha per index 255, 0, 51, 128: index 1 -> white; index 2 (10,20,30) at 51 = 0.2 * 255:
    # 255 - round(0.2 * (255 - c)) = 255 - round(49, 47, 45) = 206, 208, 210; index 3 black at 128:
    # round((0 * 128 + 255 * 127) / 255) = 127
    _palette_image().save(tmp_path / "pa.png", transparency=bytes([255, 0, 51, 128]))
    assert _decoded_row(tmp_path / "pa.png") == [[255, 0, 0], [255, 255, 255], [206, 208, 210], [127, 127, 127]]


def test_palette_with_one_transparent_index(tmp_path):
    _palette_image().save(tmp_path / "p1.png", transparency=0)
    assert _decoded_row(tmp_path / "p1.png") == [[255, 255, 255], [0, 128, 255], [10, 20, 30], [0, 0, 0]]


def test_palette_alpha_mode_PA(tmp_path):
    im = Image.new("PA", (2, 2))
    im.putpalette(PALETTE + [0] * (768 - len(PALETTE)))
    for y in range(2):
        im.putpixel((0, y), (1, 255))
        im.putpixel((1, y), (2, 51))
    im.save(tmp_path / "pa.tif")
    assert Image.open(tmp_path / "pa.tif").mode == "PA"
    assert _decoded_row(tmp_path / "pa.tif") == [[0, 128, 255], [206, 208, 210]]


# ---------------------------------------------------------------------------------------- grey, alpha, RGB
def test_L_and_L_with_colour_key(tmp_path):
    a = _square(np.array([[0, 77, 128, 255]], np.uint8))
    Image.fromarray(a, "L").save(tmp_path / "l.png")
    Image.fromarray(a, "L").save(tmp_path / "lk.png", transparency=77)
    assert _decoded_row(tmp_path / "l.png") == [[0] * 3, [77] * 3, [128] * 3, [255] * 3]
    assert _decoded_row(tmp_path / "lk.png") == [[0] * 3, [255] * 3, [128] * 3, [255] * 3]


def test_LA(tmp_path):
    # (100, a=0) -> 255; (100, 255) -> 100; (0, 128) -> 255 - 128 = 127; (200, 51) -> 255 - round(0.2 * 55) = 244
    la = _square(np.array([[[100, 0], [100, 255], [0, 128], [200, 51]]], np.uint8))
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert Image.open(tmp_path / "la.png").mode == "LA"
    assert [p[0] for p in _decoded_row(tmp_path / "la.png")] == [255, 100, 127, 244]


def test_premultiplied_La_and_RGBa_tiff(tmp_path):
    # A TIFF whose ExtraSamples says "associated alpha": stored colour is already multiplied by alpha, so over
    # white it is c + 255 - a: (60, a=100) -> 215; RGB (60, 30, 10) at 100 -> (215, 185, 165).
    def associated(mode, arr, name):
        Image.fromarray(arr, mode).save(tmp_path / name)
        raw = bytearray((tmp_path / name).read_bytes())
        entry = raw.find(struct.pack("<HHI", 338, 3, 1))           # ExtraSamples, SHORT, count 1
        assert entry > 0 and raw[entry + 8] == 2                    # Pillow wrote "unassociated"
        raw[entry + 8] = 1
        (tmp_path / name).write_bytes(bytes(raw))
        return tmp_path / name
    la = associated("LA", np.array([[[60, 100]]], np.uint8), "la.tif")
    rgba = associated("RGBA", np.array([[[60, 30, 10, 100]]], np.uint8), "rgba.tif")
    assert Image.open(la).mode == "La"
    assert _decode(la, 1)[0, 0].tolist() == [215, 215, 215]
    assert _decode(rgba, 1)[0, 0].tolist() == [215, 185, 165]


def test_RGBA_composited_over_white(tmp_path):
    # a = 51 = 0.2 * 255: out = 255 - round(0.2 * (255 - c)): c 200 -> 244, 100 -> 224, 0 -> 204; a = 0 -> white
    rgba = _square(np.array([[[200, 100, 0, 51], [200, 100, 0, 255], [1, 2, 3, 0]]], np.uint8))
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert _decoded_row(tmp_path / "rgba.png") == [[244, 224, 204], [200, 100, 0], [255, 255, 255]]


def test_RGB_and_RGB_with_colour_key(tmp_path):
    rgb = _square(np.array([[[1, 2, 3], [250, 128, 7], [9, 9, 9]]], np.uint8))
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb.png")
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgbk.png", transparency=(250, 128, 7))
    assert _decoded_row(tmp_path / "rgb.png") == [[1, 2, 3], [250, 128, 7], [9, 9, 9]]
    assert _decoded_row(tmp_path / "rgbk.png") == [[1, 2, 3], [255, 255, 255], [9, 9, 9]]


def test_1bit(tmp_path):
    Image.fromarray(_square(np.array([[True, False, True, True]]))).save(tmp_path / "b.png")
    assert Image.open(tmp_path / "b.png").mode == "1"
    assert _decoded_row(tmp_path / "b.png") == [[255] * 3, [0] * 3, [255] * 3, [255] * 3]


def test_YCbCr_tiff(tmp_path):
    # Pillow's full-range BT.601 conversion, truncating: (Y, Cb, Cr) = (100, 90, 200):
    # R = 100 + 1.402 * 72 = 200.94 -> 200; G = 100 - 0.344136 * (-38) - 0.714136 * 72 = 61.66 -> 61;
    # B = 100 + 1.772 * (-38) = 32.66 -> 32. Neutral chroma (128, 128) is grey: (100, 100, 100).
    im = Image.new("YCbCr", (2, 2))
    for y in range(2):
        im.putpixel((0, y), (100, 90, 200))
        im.putpixel((1, y), (100, 128, 128))
    im.save(tmp_path / "y.tif")
    assert Image.open(tmp_path / "y.tif").mode == "YCbCr"
    assert _decoded_row(tmp_path / "y.tif") == [[200, 61, 32], [100, 100, 100]]


def test_LAB_is_refused(tmp_path):
    Image.new("LAB", (2, 2), (50, 128, 128)).save(tmp_path / "lab.tif")
    with pytest.raises(UnsupportedImageModeError, match=r"lab\.tif: mode 'LAB' is not supported"):
        _decode(tmp_path / "lab.tif", 2)


# -------------------------------------------------------------------------------------------- orientation
def _displayed(stored, orientation):
    """EXIF orientation semantics written from the tag's definition (where stored row 0 / column 0 appear),
    independent of Pillow: returns the upright image as an index map of `stored` (H, W, ...)."""
    H, W = stored.shape[:2]
    if orientation in (1, 2, 3, 4):
        out = np.empty_like(stored)
        for y in range(H):
            for x in range(W):
                sy = y if orientation in (1, 2) else H - 1 - y          # 3, 4: row 0 at the bottom
                sx = x if orientation in (1, 4) else W - 1 - x          # 2, 3: column 0 on the right
                out[y, x] = stored[sy, sx]
        return out
    out = np.empty((W, H) + stored.shape[2:], stored.dtype)             # 5..8: rows become columns
    for y in range(W):
        for x in range(H):
            sr = x if orientation in (5, 8) else H - 1 - x              # 5, 8: row 0 on the left; 6, 7: right
            sc = y if orientation in (5, 6) else W - 1 - y              # 5, 6: column 0 at the top; 7, 8: bottom
            out[y, x] = stored[sr, sc]
    return out


def _centre_crop(a, size):
    top, left = (a.shape[0] - size) // 2, (a.shape[1] - size) // 2
    return a[top:top + size, left:left + size]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_jpeg(tmp_path, orientation):
    # 8x8 flat blocks of a greyscale JPEG at quality 100 decode exactly (checked: orientation 1 below).
    blocks = np.array([[0, 40, 80, 120], [160, 200, 240, 20]], np.uint8)          # 2 x 4 blocks: 16 x 32 px
    stored = np.kron(blocks, np.ones((8, 8), np.uint8))
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(stored, "L").save(tmp_path / "o.jpg", quality=100, exif=exif)
    upright = _displayed(stored, orientation)
    assert decode_image(tmp_path / "o.jpg")[..., 0].tolist() == upright.tolist()
    assert _decode(tmp_path / "o.jpg", 16)[..., 0].tolist() == _centre_crop(upright, 16).tolist()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_png_rgb(tmp_path, orientation):
    y, x = np.mgrid[0:3, 0:5]
    stored = np.stack([y * 50, x * 40, np.full_like(x, 7)], -1).astype(np.uint8)   # every pixel distinct
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(stored, "RGB").save(tmp_path / "o.png", exif=exif)
    assert decode_image(tmp_path / "o.png").tolist() == _displayed(stored, orientation).tolist()


def test_orientation_reference_is_right():
    """The hand-written semantics agree with two facts stated in the EXIF spec's figures: 6 is a clockwise quarter
    turn, 8 counter-clockwise, 3 a half turn."""
    a = np.arange(6).reshape(2, 3)
    assert _displayed(a, 6).tolist() == np.rot90(a, -1).tolist()
    assert _displayed(a, 8).tolist() == np.rot90(a, 1).tolist()
    assert _displayed(a, 3).tolist() == np.rot90(a, 2).tolist()
    assert _displayed(a, 5).tolist() == a.T.tolist()


# ------------------------------------------------------------------------------------------ stage paths
def test_16bit_mid_grey_through_the_tokens_and_data_stage_readers(tmp_path):
    Image.fromarray(np.full((16, 16), 32896, np.uint16)).save(tmp_path / "grey.png")
    Image.fromarray(np.full((16, 16), 65535, np.uint16)).save(tmp_path / "white.png")
    paths = [str(tmp_path / "grey.png"), str(tmp_path / "white.png")]
    kept, labels, skipped = check_decodable(paths, np.array([0, 1]), 16)        # the data stage's decode pass
    assert kept == paths and skipped == []
    write_index(tmp_path / "split.npz", paths, np.array([0, 1]))
    ds = ImageSplit(tmp_path / "split.npz", 16)                                 # what the tokens stage reads
    assert torch.equal(ds[0][0], torch.full((3, 16, 16), 128.0) / 127.5 - 1.0)      # not 255 (white)
    assert torch.equal(ds[1][0], torch.ones(3, 16, 16))
    folder = open_images(tmp_path)                                              # the score stage's folder reader
    assert sorted(int(folder[i][0, 0, 0]) for i in range(len(folder))) == [128, 255]


def test_unsupported_mode_is_skippable_like_a_corrupt_file(tmp_path):
    Image.fromarray(np.array([[0.5]], np.float32)).save(tmp_path / "f.tif")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "ok.png")
    paths = [str(tmp_path / "f.tif"), str(tmp_path / "ok.png")]
    with pytest.raises(CorruptImageError, match=r"f\.tif: mode 'F' is not supported"):
        check_decodable(paths, np.array([0, 0]), 16)
    kept, _, skipped = check_decodable(paths, np.array([0, 0]), 16, skip_corrupt=True)
    assert kept == [paths[1]] and skipped == [paths[0]]
