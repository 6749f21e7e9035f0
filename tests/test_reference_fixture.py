"""The in-repository reference fixture: its codecs reproduce torch's draws and exact arithmetic, a corrupted file is
refused, and the fixture paths resolve (VAR_FIXTURES, VAR_SHARED, tests/data) without ever skipping."""
from __future__ import annotations

import shutil
from fractions import Fraction

import conftest
import numpy as np
import pytest
import torch
from conftest import PARITY_DEFAULT, fixture_path, fixture_paths
from reference_fixture import (
    FixtureDecodeError,
    compact_layout,
    decode_compact,
    from_ordered_int,
    linear_rows_prediction,
    load_fixture,
    mt19937_stream,
    normal_from_stream,
    ordered_int,
    uniform_from_stream,
)

SOURCE_SHA256 = "97b00a86994e2be4f75b1cbc1f8ad49a4e90c4df92bc228729e5569f871afcf5"   # the reference fixture_A.pt


def test_compact_copy_is_fixture_A():
    layout = compact_layout(fixture_path(PARITY_DEFAULT))
    assert layout["source"] == {"file": "fixture_A.pt", "bytes": 19397515, "sha256": SOURCE_SHA256}
    fx = load_fixture(fixture_path(PARITY_DEFAULT))      # every tensor is checked against its source sha256
    assert list(fx) == ["meta", "config", "vae_state_dict", "var_state_dict", "inputs", "outputs"]
    assert fx["outputs"]["logits_BLV"].shape == (2, 155, 4096) and fx["outputs"]["logits_BLV"].dtype == torch.float32
    assert sorted(fx["outputs"]["ar"]) == ["main", "more_smooth"]
    assert fx["vae_state_dict"]["encoder.conv_in.weight"].dtype == torch.float16


def test_stream_codecs_reproduce_torch_draws():
    seed, n = 20240404, 4096
    raw = mt19937_stream(seed, n)
    g = torch.Generator().manual_seed(seed)
    assert np.array_equal((raw & 0xFFFFFF) * 2.0**-24, torch.rand(n, generator=g).double().numpy())
    for lo, hi in [(-0.0589255650988789, 0.0589255650988789), (0.5, 1.5), (-3.0, 0.25)]:
        # x * (hi - lo) + lo; torch's kernel fuses the multiply-add on some builds (AVX2), the fixture's draws and
        # the codec do not: the two differ by at most one rounding of the product, one ulp of the bound
        expect = torch.empty(n).uniform_(lo, hi, generator=torch.Generator().manual_seed(seed)).numpy()
        err = np.abs(uniform_from_stream(raw, lo, hi).astype(np.float64) - expect)
        assert err.max() <= np.spacing(np.float32(max(abs(lo), abs(hi)))), (lo, hi)
    # normal_: torch computes Box-Muller in float32 (vectorised log/sin/cos), the codec in float64; the
    # float16 copies the fixture stores then differ in a few elements, which the codec patches
    expect = torch.empty(n).normal_(1.0, 0.3, generator=torch.Generator().manual_seed(seed)).numpy()
    np.testing.assert_allclose(normal_from_stream(raw, 1.0, 0.3), expect, rtol=0, atol=3e-6)


def test_ordered_int_counts_ulps_and_inverts():
    x = np.array([-np.inf, -2.5, -1e-40, -0.0, 0.0, 1e-45, 1.0, 3e38, np.inf], dtype=np.float32)
    key = ordered_int(x.view(np.int32))
    assert np.all(np.diff(key) > 0)                                   # monotone, -0.0 below +0.0
    assert np.array_equal(from_ordered_int(key).view(np.float32).view(np.int32), x.view(np.int32))
    finite = x[np.isfinite(x) & (x != 0)]
    up = np.nextafter(finite, np.float32(np.inf))                     # the next float is one key up
    assert np.array_equal(ordered_int(up.view(np.int32)) - ordered_int(finite.view(np.int32)), np.ones(5, np.int64))


def test_linear_rows_prediction_is_exact_rational_arithmetic():
    g = np.random.default_rng(0)
    w = (g.standard_normal((64, 128)) * 0.2).astype(np.float16)
    b = g.standard_normal(64).astype(np.float16)
    u_hi = g.integers(-2**21, 2**21, (3, 128), dtype=np.int64).astype(np.int32)
    u_lo = g.integers(-2**20, 2**20, (3, 128), dtype=np.int64).astype(np.int32)
    pred = linear_rows_prediction(u_hi, u_lo, 17, 38, w, b)
    for r, v in [(0, 0), (1, 17), (2, 63)]:
        hi = sum(Fraction(int(u_hi[r, c])) * Fraction(float(w[v, c])) for c in range(128)) / 2**17
        lo = sum(Fraction(int(u_lo[r, c])) * Fraction(float(w[v, c])) for c in range(128)) / 2**38
        a, bb = np.float64(hi), np.float64(lo)           # each product sum is exact, then rounded once
        assert pred[r, v] == np.float32((a + bb) + np.float64(b[v]))


def test_a_corrupted_compact_fixture_is_refused(tmp_path):
    src = fixture_path(PARITY_DEFAULT)
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    key = "outputs/logits_BLV.ulp_residual"
    arrays[key] = arrays[key].copy()
    arrays[key][1000] += 1                                           # one logit moved by one ulp
    np.savez_compressed(tmp_path / "bad.npz", **arrays)
    with pytest.raises(FixtureDecodeError, match="outputs/logits_BLV"):
        decode_compact(tmp_path / "bad.npz")


def test_fixture_paths_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("VAR_FIXTURES", raising=False)
    monkeypatch.delenv("VAR_SHARED", raising=False)
    assert fixture_paths(PARITY_DEFAULT) == [conftest.DATA / PARITY_DEFAULT]
    assert fixture_path("manifest_var_d16.json") == conftest.DATA / "manifest_var_d16.json"
    a, b = tmp_path / "a.pt", tmp_path / "b.npz"
    for p in (a, b):
        shutil.copy(src := conftest.DATA / "manifest_var_d16.json", p)
    monkeypatch.setenv("VAR_FIXTURES", f"{a},{b}")
    assert fixture_paths(PARITY_DEFAULT) == [a, b]
    assert fixture_path("manifest_var_d16.json") == src               # VAR_FIXTURES only names parity fixtures
    monkeypatch.setenv("VAR_FIXTURES", f"{a}:{tmp_path / 'missing.pt'}")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        fixture_paths(PARITY_DEFAULT)
    monkeypatch.delenv("VAR_FIXTURES")
    (tmp_path / "fixtures").mkdir()
    shutil.copy(a, tmp_path / "fixtures" / "fixture_A.pt")
    monkeypatch.setenv("VAR_SHARED", str(tmp_path))
    assert fixture_paths(PARITY_DEFAULT) == [tmp_path / "fixtures" / "fixture_A.pt"]
    with pytest.raises(FileNotFoundError, match="VAR_SHARED"):
        fixture_path("fixture_lr_schedule.json")
