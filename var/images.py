"""Image files -> uint8 (H, W, 3) RGB, with one stated rule per Pillow mode; a mode without one is an error.

Pillow's `convert("RGB")` clips wide modes instead of scaling them (a 16-bit mid-grey 32896 becomes 255, white),
so every mode is handled explicitly here. The rules (tests/test_image_modes.py checks each on a hand-made file):

    RGB, RGBX         as stored (X is padding).
    L, 1              grey replicated to R = G = B; a 1-bit pixel is 0 or 255.
    P                 palette lookup (Pillow's conversion is exact).
    I;16, I;16B,      16-bit grey: v8 = round(v / 257), computed as (v + 128) // 257 (no ties: 257 is odd). This maps
    I;16L, I;16N      0 -> 0 and 65535 -> 255, is the exact inverse of the usual 8 -> 16 bit expansion v * 257, and
                      keeps the error within half a level.
    I                 32-bit integer. From PNG and PGM/PPM, Pillow holds 16-bit samples in it (it scales PGM/PPM
                      maxval to 65535), so the 16-bit rule applies; values outside 0..65535 are an error. From any
                      other format (32-bit integer or signed 16-bit TIFF) there is no white level to scale by: error.
    F                 32-bit float: no defined white level (0..1? 0..255? HDR?): error.
    CMYK              Pillow's conversion, R = round((255 - C) * (255 - K) / 255) and likewise G (M), B (Y); Pillow's
                      JPEG reader already undoes Adobe's inverted CMYK. ICC profiles are not applied.
    YCbCr             Pillow's conversion (full-range ITU-R BT.601, as JPEG/JFIF and TIFF's default reference
                      black/white and coefficients); a TIFF with other ReferenceBlackWhite/YCbCrCoefficients is an
                      error, since Pillow would ignore them.
    alpha             RGBA, LA, PA, palette or colour-key transparency ("transparency" in the file's info), and
                      16-bit grey with a tRNS key: composited over WHITE, out = round((c * a + 255 * (255 - a)) / 255)
                      (no ties: 255 is odd), bit-identical to Pillow's alpha_composite over opaque white. White
                      because transparent-background images (product shots, logos) are drawn to be seen on white
                      pages, and because this is what the data stage has always done, so existing RGBA datasets
                      decode to the same bytes. (Dropping alpha instead, as a plain convert("RGB") does, shows
                      whatever colour happens to be stored under transparent pixels.) Premultiplied La (TIFF
                      associated alpha) composites exactly as out = l + 255 - a; Pillow itself unpremultiplies RGBa.
    EXIF orientation  applied first (all 8 values, `ImageOps.exif_transpose`), so rotated camera JPEGs are upright.
    anything else     (LAB, HSV, ...): UnsupportedImageModeError naming the file and the mode.

16-bit colour PNGs (RGB, RGBA, grey+alpha) are reduced to 8 bits by Pillow's PNG reader itself, which keeps the
high byte, floor(v / 256): the same value as round(v / 257) for every 8-bit value expanded by 257 and for mid-grey
32896, at most one level above it otherwise (65280 -> 255 where round(v / 257) = 254). The decoder never sees
those 16-bit samples, so it cannot apply the grey rule to them.

Model images become stored images by one conversion, `unit_to_uint8`: float in [0, 1] -> uint8 by
floor(clamp(x, 0, 1) * 255 + 0.5) (round half up), for tensors and numpy arrays alike. Every place where images
become uint8 uses it -- samples of every stage, the editing figures, the tokenizer's reconstructions scored for rFID,
the rendered `shapes` data -- so the same float image always becomes the same bytes.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

GREY16_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
SIXTEEN_BIT_INT_FORMATS = ("PNG", "PPM")            # formats whose mode-I images hold 16-bit samples (see above)
_TIFF_REFERENCE_BLACK_WHITE, _TIFF_YCBCR_COEFFICIENTS = 532, 529


class CorruptImageError(ValueError):
    """An image file cannot be decoded (truncated, not an image); the message names the file."""


class UnsupportedImageModeError(CorruptImageError):
    """An image's pixel mode has no defined conversion to 8-bit RGB; the message names the file and the mode."""


def composite_over_white(colour_HWC: np.ndarray, alpha_HW: np.ndarray) -> np.ndarray:
    """uint8 colour (H, W, C) with straight alpha (H, W) -> uint8 (H, W, C) over opaque white (exact rounding)."""
    c, a = colour_HWC.astype(np.uint32), alpha_HW.astype(np.uint32)[..., None]
    return ((c * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def grey16_to_uint8(v: np.ndarray) -> np.ndarray:
    """16-bit samples (0..65535) -> uint8, round(v / 257)."""
    return ((v.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _grey_to_rgb(l_HW: np.ndarray) -> np.ndarray:
    return np.repeat(l_HW[..., None], 3, axis=2)


def _unsupported(path, mode: str, why: str) -> UnsupportedImageModeError:
    return UnsupportedImageModeError(f"cannot decode image {path}: mode {mode!r} is not supported ({why}); "
                                     f"convert the file to 8- or 16-bit RGB or greyscale")


def _check_mode(im: Image.Image, path) -> None:
    """Refuse, before decoding, modes (and mode/format pairs) without a defined rule."""
    mode = im.mode
    if mode == "F":
        raise _unsupported(path, mode, "32-bit float samples have no defined white level")
    if mode == "I" and im.format not in SIXTEEN_BIT_INT_FORMATS:
        raise _unsupported(path, mode, f"32-bit integer samples from {im.format} have no defined white level")
    if mode == "YCbCr" and im.format == "TIFF":
        tags = getattr(im, "tag_v2", {})
        rbw, coef = tags.get(_TIFF_REFERENCE_BLACK_WHITE), tags.get(_TIFF_YCBCR_COEFFICIENTS)
        if rbw is not None and [float(x) for x in rbw] != [0.0, 255.0, 128.0, 255.0, 128.0, 255.0]:
            raise _unsupported(path, mode, f"TIFF ReferenceBlackWhite {tuple(rbw)} is not full range")
        if coef is not None and [round(float(x), 3) for x in coef] != [0.299, 0.587, 0.114]:
            raise _unsupported(path, mode, f"TIFF YCbCrCoefficients {tuple(coef)} are not BT.601")
    if mode not in ("RGB", "RGBX", "L", "1", "P", "PA", "LA", "La", "RGBA", "CMYK", "YCbCr", "I", *GREY16_MODES):
        raise _unsupported(path, mode, "no conversion to 8-bit RGB is defined for it")


def _to_rgb(im: Image.Image, transparency, path) -> np.ndarray:
    """Apply the mode's rule (module docstring) to a loaded, upright image."""
    mode = im.mode
    if mode in GREY16_MODES or mode == "I":
        v = np.asarray(im).astype(np.int64)
        if v.size and (v.min() < 0 or v.max() > 65535):
            raise _unsupported(path, mode, f"samples {v.min()}..{v.max()} exceed the 16-bit range")
        rgb = _grey_to_rgb(grey16_to_uint8(v))
        if isinstance(transparency, int):                # tRNS colour key of a 16-bit grey PNG
            rgb[v == transparency] = 255
        return rgb
    if mode == "La":                                     # premultiplied: over white is l + (255 - a)
        la = np.asarray(im).astype(np.int32)
        return _grey_to_rgb(np.minimum(la[..., 0] + 255 - la[..., 1], 255).astype(np.uint8))
    if mode == "LA":
        la = np.asarray(im)
        return composite_over_white(_grey_to_rgb(la[..., 0]), la[..., 1])
    if mode in ("RGBA", "PA") or transparency is not None:   # P/L/RGB transparency becomes alpha in RGBA
        rgba = np.asarray(im.convert("RGBA"))
        return composite_over_white(rgba[..., :3], rgba[..., 3])
    if mode in ("L", "1"):
        return _grey_to_rgb(np.asarray(im.convert("L")))
    if mode == "RGB":
        return np.asarray(im)
    return np.asarray(im.convert("RGB"))                 # RGBX, P, CMYK, YCbCr: Pillow's conversions


def open_rgb(path) -> Image.Image:
    """Decode one file to an upright 8-bit RGB PIL image by the rules above; errors name the file."""
    try:
        with Image.open(path) as im:
            _check_mode(im, path)
            transparency = im.info.get("transparency")
            im.load()        # forces the full decode, so truncation is caught here and not at resize time
            im = ImageOps.exif_transpose(im)
            rgb_HW3 = _to_rgb(im, transparency, path)
    except UnsupportedImageModeError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise CorruptImageError(f"cannot decode image {path}: {type(e).__name__}: {e}") from e
    return Image.fromarray(np.ascontiguousarray(rgb_HW3), "RGB")


def decode_image(path) -> np.ndarray:
    """uint8 (H, W, 3) RGB of one file at its own size (see the module docstring for each mode's rule)."""
    return np.array(open_rgb(path))


def load_image(path, image_size: int) -> np.ndarray:
    """Decode one file to uint8 (image_size, image_size, 3) RGB, or raise CorruptImageError naming it.

    The decoded image's shorter side is resized to image_size with LANCZOS (high-quality downsampling; no resize
    when it already has that size), then the centre is cropped."""
    im = open_rgb(path)
    w, h = im.size
    scale = image_size / min(w, h)
    nw, nh = max(image_size, round(w * scale)), max(image_size, round(h * scale))
    im = im.resize((nw, nh), Image.Resampling.LANCZOS)
    left, top = (nw - image_size) // 2, (nh - image_size) // 2
    return np.array(im.crop((left, top, left + image_size, top + image_size)), np.uint8)


def unit_to_uint8(x):
    """Elementwise float in [0, 1] (clamped) -> uint8, any layout; a tensor stays on its device, an array stays
    numpy (computed in its own float precision). torch is not imported here, so decoding stays torch-free."""
    if isinstance(x, np.ndarray):
        return np.floor(np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)
    import torch
    return (x.clamp(0, 1) * 255 + 0.5).floor().to(torch.uint8)


def to_uint8(img_B3HW, out: np.ndarray | None = None) -> np.ndarray:
    """Images in [0, 1], (B, 3, H, W) tensor -> uint8 (B, H, W, 3), written into `out` (C-contiguous) when given.
    The HWC layout is made on the tensor's device, so the host receives one dense copy: a strided .cpu() and a
    numpy assignment cost ~0.14 s per block of 250 on an H200, 27.8 s of a 50k run (docs/performance.md)."""
    import torch
    u8_BHW3 = unit_to_uint8(img_B3HW).permute(0, 2, 3, 1).contiguous()
    if out is None:
        return u8_BHW3.cpu().numpy()
    torch.from_numpy(out).copy_(u8_BHW3)
    return out
