"""Compact copy of a reference training fixture (`fixture_train_*.pt`, ../shared/fixtures/FIXTURES_train.md), and
the loader that reads either form back in the original layout.

    PYTHONPATH=. python tests/data/make_compact_train_fixture.py SRC.pt DST.pt      # from the repository root

(`python -m tests.data...` does not work here: torch-fidelity installs a top-level `tests` package that shadows this
folder, so tests/test_train_parity.py imports this file by its path.)

What changes (tests/data/README.md has the numbers for fixture A):
* Dropped: the images (`steps[i].images_uint8`) and the tokenizer's encoder and `quant_conv` weights. The parity
  test then uses the recorded target tokens `gt_BL` (FIXTURES_train.md section 10: the smallest nearest-code margin
  is 3.3e-5 and a float64 or perturbed tokenizer reproduces every token), while the full file is still encoded
  with our tokenizer. The quantiser (codebook and phi convs) stays: it builds the teacher-forcing input.
* Lossless, lzma over the byte planes of each tensor: the initial weights, the quantiser, the AdamW moments, the
  probe gradients and every other tensor above 4 KiB.
* Lossy: the weights after step 1 and after the last step, stored as integer multiples of a per-tensor power of two
  q added to the initial weights (in float64, then rounded to float32). q is the largest one for which the
  reconstruction's max abs error is <= ABS_ERROR_BOUND and its relative L2 error per tensor <= REL_ERROR_BOUND,
  ten times below the parity test's tolerances (1e-5 absolute, 2e-5 relative); the measured errors are stored in
  `compaction` and printed.
Buffers that never change (the attention mask, level indices) are stored once.

Every tensor is a plain uint8 / numeric tensor and every other value a str / number / list / dict, so the file
loads with torch.load(weights_only=True); decoding runs no stored code.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import lzma
import sys
from pathlib import Path

import numpy as np
import torch

from var.io import atomic_torch_save, load_torch

FORMAT = "var-train-fixture-compact-v1"
ABS_ERROR_BOUND = 1e-6      # max abs reconstruction error of the lossy weights (tolerance 1e-5)
REL_ERROR_BOUND = 2e-6      # relative L2 reconstruction error per tensor (tolerance 2e-5)
WEIGHT_KEYS = ("var_state_after_step1", "var_state_final")
DROPPED_VAE_PREFIXES = ("encoder.", "quant_conv.")
_SMALL = 4096               # bytes: smaller tensors are stored as they are


# ------------------------------------------------------------------------------------------------ codecs
def pack_lossless(t: torch.Tensor) -> dict:
    """Exact: the tensor's bytes grouped by byte position (sign/exponent bytes together compress), then lzma."""
    a = t.contiguous().numpy()
    planes = a.view(np.uint8).reshape(-1, a.itemsize).T.copy()
    return {"codec": "lzma-planes", "dtype": str(a.dtype), "shape": list(a.shape),
            "data": torch.frombuffer(bytearray(lzma.compress(planes.tobytes(), preset=9)), dtype=torch.uint8)}


def _quantise(x: torch.Tensor, base: torch.Tensor, q: float) -> tuple[np.ndarray, torch.Tensor]:
    k = np.rint((x.double() - base.double()).numpy() / q).astype(np.int32)
    return k, _dequantise(k, base, q)


def _dequantise(k: np.ndarray, base: torch.Tensor, q: float) -> torch.Tensor:
    return (base.double() + torch.from_numpy(k.astype(np.float64) * q)).to(torch.float32)


def pack_delta(x: torch.Tensor, base: torch.Tensor) -> tuple[dict, float, float]:
    """x - base as integer multiples of the largest power of two q meeting both error bounds.
    Returns (packed, max abs error, relative L2 error) of the reconstruction."""
    norm = x.double().norm().item()
    for e in range(-20, -60, -1):
        q = 2.0 ** e
        k, rec = _quantise(x, base, q)
        diff = (rec.double() - x.double())
        err, rel = diff.abs().max().item(), diff.norm().item() / max(norm, 1e-300)
        if err <= ABS_ERROR_BOUND and (rel <= REL_ERROR_BOUND or norm == 0):
            packed = pack_lossless(torch.from_numpy(k))
            packed.update(codec="lzma-delta", q=q)
            return packed, err, rel
    raise ValueError("no quantisation step meets the error bounds")


def unpack(p, base: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse of pack_lossless / pack_delta (base: the tensor the delta was taken from)."""
    if isinstance(p, torch.Tensor):
        return p
    codec = p["codec"]
    if codec == "same-as-base":
        return base.clone()
    raw = lzma.decompress(p["data"].numpy().tobytes())
    dtype = np.dtype(p["dtype"])
    a = np.frombuffer(raw, np.uint8).reshape(dtype.itemsize, -1).T.copy().view(dtype).reshape(p["shape"])
    if codec == "lzma-planes":
        return torch.from_numpy(a.copy())
    if codec == "lzma-delta":
        return _dequantise(a, base, p["q"])
    raise ValueError(f"unknown codec {codec!r}")


def _pack_tree(obj):
    """Nested dicts / lists with every tensor above _SMALL bytes packed losslessly."""
    if isinstance(obj, torch.Tensor):
        return pack_lossless(obj) if obj.numel() * obj.element_size() > _SMALL else obj
    if isinstance(obj, dict):
        return {k: _pack_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_pack_tree(v) for v in obj]
    return obj


def _unpack_tree(obj):
    if isinstance(obj, dict) and "codec" in obj:
        return unpack(obj)
    if isinstance(obj, dict):
        return {k: _unpack_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unpack_tree(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------------------------ file level
def compact(fx: dict, source_sha256: str = "") -> dict:
    """The compact form of a loaded training fixture."""
    out = {k: copy.deepcopy(v) for k, v in fx.items() if k not in
           ("vae_state_dict", "var_state_init", *WEIGHT_KEYS, "steps")}
    out = _pack_tree(out)
    out["format"] = FORMAT
    init = fx["var_state_init"]
    out["var_state_init"] = {k: pack_lossless(v) for k, v in init.items()}
    errors = {}
    for key in WEIGHT_KEYS:
        packed, err, rel = {}, 0.0, 0.0
        for k, v in fx[key].items():
            if torch.equal(v, init[k]):
                packed[k] = {"codec": "same-as-base"}
            elif v.is_floating_point():
                packed[k], e, r = pack_delta(v, init[k])
                err, rel = max(err, e), max(rel, r)
            else:
                packed[k] = pack_lossless(v)
        out[key] = packed
        errors[key] = {"max_abs_error": err, "max_rel_l2_error": rel}
    out["vae_state_dict"] = {k: pack_lossless(v) for k, v in fx["vae_state_dict"].items()
                             if not k.startswith(DROPPED_VAE_PREFIXES)}
    out["steps"] = [_pack_tree({k: v for k, v in s.items() if k != "images_uint8"}) for s in fx["steps"]]
    out["compaction"] = {
        "format": FORMAT, "source_sha256": source_sha256,
        "dropped": ["steps[*].images_uint8"] + [f"vae_state_dict {p}*" for p in DROPPED_VAE_PREFIXES],
        "lossy": list(WEIGHT_KEYS), "abs_error_bound": ABS_ERROR_BOUND, "rel_error_bound": REL_ERROR_BOUND,
        "measured": errors,
    }
    return out


def expand(cfx: dict) -> dict:
    """A compact fixture back in the original layout (without what was dropped; `compaction` says what)."""
    if cfx.get("format") != FORMAT:
        raise ValueError(f"not a compact training fixture (format {cfx.get('format')!r}, expected {FORMAT!r})")
    fx = {k: _unpack_tree(v) for k, v in cfx.items() if k not in ("var_state_init", *WEIGHT_KEYS, "format")}
    init = {k: unpack(v) for k, v in cfx["var_state_init"].items()}
    fx["var_state_init"] = init
    for key in WEIGHT_KEYS:
        fx[key] = {k: unpack(v, init[k]) for k, v in cfx[key].items()}
    src = fx["config"].setdefault("vae_source", {})
    src["omitted_keys_prefixes"] = list(src.get("omitted_keys_prefixes", [])) + list(DROPPED_VAE_PREFIXES)
    return fx


def load_train_fixture(path: str | Path) -> dict:
    """A training fixture, full or compact, in the original layout (weights_only load: no stored code runs)."""
    obj = load_torch(path)
    if not isinstance(obj, dict) or "steps" not in obj:
        raise ValueError(f"{path}: not a training fixture (no 'steps')")
    return expand(obj) if obj.get("format") == FORMAT else obj


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="full training fixture (fixture_train_*.pt)")
    ap.add_argument("dst", type=Path, help="compact output")
    args = ap.parse_args(argv)
    sha = hashlib.sha256(args.src.read_bytes()).hexdigest()
    cfx = compact(load_torch(args.src), sha)
    atomic_torch_save(args.dst, cfx)
    print(f"{args.src} ({args.src.stat().st_size / 1e6:.2f} MB) -> {args.dst} ({args.dst.stat().st_size / 1e6:.2f} MB)")
    for key, m in cfx["compaction"]["measured"].items():
        print(f"  {key}: max abs error {m['max_abs_error']:.3g} (bound {ABS_ERROR_BOUND:g}), "
              f"max relative L2 error {m['max_rel_l2_error']:.3g} (bound {REL_ERROR_BOUND:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
