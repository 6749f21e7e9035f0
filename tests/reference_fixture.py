"""Reading the reference fixtures (FIXTURES.md), from either of two files that hold the same dict.

* `fixture_*.pt`: the reference format, a dict of configs, fp16 state dicts, inputs and recorded outputs
  (torch.load with weights_only=True).
* `*_compact.npz`: the same dict encoded losslessly in a fraction of the bytes, so that a copy can live in the
  repository (`tests/data/make_compact_fixture.py` writes it; `tests/data/README.md` describes each file). Every
  tensor decodes bit for bit to the source's and is checked against the sha256 of the source tensor recorded when
  the file was written, so a decoding that drifted (a different NumPy, a different BLAS) fails loudly instead of
  comparing against wrong values.

Codecs of the compact file (a tensor uses one, then an optional list of patched elements):
* `planes`: the raw bytes, stored as byte planes (all first bytes, then all second bytes ...), which deflate
  compresses better than interleaved floats.
* `uniform` / `normal`: the fixture's random weights were drawn from one seeded CPU generator (MT19937, the
  stream of `torch.manual_seed(seed)`, which NumPy's legacy `RandomState(seed)` reproduces and keeps frozen).
  A tensor is the draws at `offset` mapped the way torch's `uniform_` / `normal_` map them; the few elements where
  the reference's float32 rounding differs from this emulation are patched.
* `linear_rows`: rows of logits are `u_row @ head.weight.T + head.bias` (the model's output layer) up to float32
  rounding. Stored: u as two fixed-point integer parts, so the float64 matrix product is exact whatever the
  summation order, and the difference to the reference in units in the last place (int8; larger ones are patched).
"""
from __future__ import annotations

import functools
import hashlib
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "var-compact-fixture/1"
LAYOUT_KEY = "layout.json"
_DTYPES = {"float16": np.float16, "float32": np.float32, "float64": np.float64, "int64": np.int64,
           "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8, "bool": np.bool_}


class FixtureDecodeError(RuntimeError):
    """A compact fixture did not decode to the tensors it was written from (names the file and the tensor)."""


@functools.lru_cache(maxsize=4)
def load_fixture(path: str | Path) -> dict:
    """The fixture dict of a `.pt` reference file or of its compact `.npz` encoding (cached: do not modify it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference fixture not found: {path}")
    if path.suffix == ".npz":
        return decode_compact(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def compact_layout(path: str | Path) -> dict:
    """The layout record of a compact fixture: format, provenance (source file, sha256) and per-tensor codecs."""
    with np.load(path, allow_pickle=False) as z:
        return json.loads(z[LAYOUT_KEY].tobytes().decode())


def decode_compact(path: str | Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    layout = json.loads(arrays.pop(LAYOUT_KEY).tobytes().decode())
    if layout.get("format") != FORMAT:
        raise FixtureDecodeError(f"{path}: format {layout.get('format')!r}, this reader knows {FORMAT!r}")
    return _Decoder(path, layout, arrays).node(layout["root"])


def ordered_int(bits_i32: np.ndarray) -> np.ndarray:
    """float32 bit patterns (as int32) -> int64 keys in the floats' order: consecutive floats differ by 1
    (-0.0 -> -1, +0.0 -> 0), so a key difference counts units in the last place."""
    i = bits_i32.astype(np.int64)
    return np.where(i >= 0, i, -1 - (i & 0x7FFFFFFF))


def from_ordered_int(key: np.ndarray) -> np.ndarray:
    return np.where(key >= 0, key, (-1 - key) | 0x80000000).astype(np.uint32).view(np.int32)


def mt19937_stream(seed: int, length: int) -> np.ndarray:
    """The first `length` 32-bit outputs of torch's CPU generator after `torch.manual_seed(seed)`."""
    return np.random.RandomState(seed).randint(0, 2**32, size=length, dtype=np.uint32)


def uniform_from_stream(raw: np.ndarray, low: float, high: float) -> np.ndarray:
    """torch's float32 `uniform_(low, high)` on CPU: x = (24 random bits) 2^-24, then x * (high - low) + low in
    float32 with each operation rounded, as the fixture's weights were drawn (a build that fuses the multiply-add,
    such as the AVX2 kernels, differs by one float32 ulp in some elements). NumPy's float32 arithmetic is IEEE and
    never fused, so this is the same on every machine."""
    x = (raw & 0xFFFFFF).astype(np.float32) * np.float32(2.0**-24)
    lo, hi = np.float32(low), np.float32(high)
    return x * (hi - lo) + lo


def normal_from_stream(raw: np.ndarray, mean: float, std: float) -> np.ndarray:
    """torch's `normal_` on a float tensor of 16k elements: uniforms u, then Box-Muller per block of 16,
    z_j = sqrt(-2 ln(1 - u_j)) cos(2 pi u_{j+8}), z_{j+8} = ... sin(...), j < 8. Computed in float64; the
    reference's float32 rounding differs in a few elements after the cast to float16, which are patched."""
    if raw.size % 16:
        raise ValueError(f"normal codec needs a multiple of 16 elements, got {raw.size}")
    u = ((raw & 0xFFFFFF).astype(np.float64) * 2.0**-24).reshape(-1, 2, 8)
    radius, theta = np.sqrt(-2.0 * np.log(1.0 - u[:, 0])), 2.0 * np.pi * u[:, 1]
    z = np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1)
    return (z.reshape(-1) * std + mean).astype(np.float32)


def linear_rows_prediction(u_hi, u_lo, shift_hi: int, shift_lo: int, weight_fp16, bias) -> np.ndarray:
    """float32(u @ weight.T + bias) with u = u_hi 2^-shift_hi + u_lo 2^-shift_lo, computed exactly: float16
    weights are integers times 2^-24 and the encoder bounded every partial sum below 2^53, so both float64 matrix
    products are exact integers whatever order the BLAS sums in."""
    w_int = weight_fp16.astype(np.float64) * 2.0**24
    a = (u_hi.astype(np.float64) @ w_int.T) * 2.0**-(shift_hi + 24)
    b = (u_lo.astype(np.float64) @ w_int.T) * 2.0**-(shift_lo + 24)
    return ((a + b) + bias.astype(np.float64)).astype(np.float32)


class _Decoder:
    def __init__(self, path, layout: dict, arrays: dict[str, np.ndarray]):
        self.path, self.layout, self.arrays = path, layout, arrays
        self.tensor_nodes: dict[str, dict] = {}
        self._index(layout["root"])
        self.decoded: dict[str, torch.Tensor] = {}
        self._raw = None

    def _index(self, n):
        if n["t"] == "tensor":
            self.tensor_nodes[n["id"]] = n
        for child in n.get("items", []):
            self._index(child[1] if n["t"] == "dict" else child)

    def raw(self, offset: int, count: int) -> np.ndarray:
        if self._raw is None:
            s = self.layout["stream"]
            self._raw = mt19937_stream(s["seed"], s["length"])
        return self._raw[offset:offset + count]

    def array(self, name: str) -> np.ndarray:
        if name not in self.arrays:
            raise FixtureDecodeError(f"{self.path}: missing array {name!r}")
        return self.arrays[name]

    def node(self, n: dict) -> Any:
        t = n["t"]
        if t == "value":
            return n["v"]
        if t == "dict":
            items = [(k, self.node(v)) for k, v in n["items"]]
            return OrderedDict(items) if n.get("ordered") else dict(items)
        if t in ("list", "tuple"):
            items = [self.node(v) for v in n["items"]]
            return items if t == "list" else tuple(items)
        if t == "tensor":
            return self.tensor(n["id"])
        raise FixtureDecodeError(f"{self.path}: unknown node type {t!r}")

    def tensor(self, tid: str) -> torch.Tensor:
        if tid in self.decoded:
            return self.decoded[tid]
        n = self.tensor_nodes[tid]
        dtype, shape, codec = _DTYPES[n["dtype"]], tuple(n["shape"]), n["codec"]
        count = int(np.prod(shape, dtype=np.int64))
        kind = codec["kind"]
        if kind == "planes":
            planes = self.array(tid)
            flat = np.ascontiguousarray(planes.T).view(dtype).reshape(-1)
        elif kind == "uniform":
            flat = uniform_from_stream(self.raw(codec["offset"], count), codec["low"], codec["high"]).astype(dtype)
        elif kind == "normal":
            flat = normal_from_stream(self.raw(codec["offset"], count), codec["mean"], codec["std"]).astype(dtype)
        elif kind == "linear_rows":
            weight = self.tensor(codec["weight"]).numpy()
            bias = self.tensor(codec["bias"]).numpy()
            pred = linear_rows_prediction(self.array(tid + ".u_hi"), self.array(tid + ".u_lo"), codec["shift_hi"],
                                          codec["shift_lo"], weight, bias).reshape(-1)
            key = ordered_int(pred.view(np.int32)) + self.array(tid + ".ulp_residual").astype(np.int64)
            flat = from_ordered_int(key).view(np.float32).astype(dtype)
        else:
            raise FixtureDecodeError(f"{self.path}: tensor {tid!r} has unknown codec {kind!r}")
        flat = np.array(flat, dtype=dtype, copy=True)
        if codec.get("patched"):
            flat[self.array(tid + ".patch_index")] = self.array(tid + ".patch_value")
        out = flat.reshape(shape)
        digest = hashlib.sha256(np.ascontiguousarray(out).tobytes()).hexdigest()
        if digest != n["sha256"]:
            raise FixtureDecodeError(
                f"{self.path}: tensor {tid!r} ({kind}) decodes to different bytes than its source (sha256 "
                f"{digest[:12]} != {n['sha256'][:12]}). The decoding depends on NumPy's legacy MT19937 stream and "
                f"exact float64 arithmetic; run the parity tests on the full reference file via VAR_FIXTURES.")
        self.decoded[tid] = torch.from_numpy(out)
        return self.decoded[tid]
