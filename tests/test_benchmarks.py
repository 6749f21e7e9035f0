"""The benchmark modules import and parse their flags without a GPU, and every result file has the one layout that
`benchmarks.common.write_result` writes (docs/performance.md)."""
from __future__ import annotations

import json
import runpy
import statistics
import sys
from pathlib import Path

import pytest

from benchmarks.common import dumps_result, result_record, spread, write_result

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODULES = ("bench_generate", "bench_vqvae", "bench_train", "bench_e2e", "bench_score", "bench_ddp",
           "bench_tokenizer_ddp", "bench_metric_suite", "bench_tokens", "bench_rehearsal", "complexity")


def test_every_benchmark_module_is_listed():
    assert sorted(MODULES) == sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py")
                                     if p.stem not in ("__init__", "common"))


@pytest.mark.parametrize("module", MODULES)
def test_help_runs_without_a_gpu(module, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [module, "--help"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module(f"benchmarks.{module}", run_name="__main__")
    assert exc.value.code == 0
    assert f"python -m benchmarks.{module}" in capsys.readouterr().out


def test_spread_is_min_median_max():
    assert spread([0.3, 0.1, 0.25, 0.2]) == {"min": 0.1, "median": 0.225, "max": 0.3}
    assert spread([1.23456]) == {"min": 1.2346, "median": 1.2346, "max": 1.2346}


def test_write_result_layout_round_trips(tmp_path):
    rows = [{"batch": 64, "images_per_s": 10.0, "times_s": [6.5, 6.4, 6.6]}, {"what": "no repeats", "seconds": 3.0}]
    path = write_result("demo", {"batch": 64}, rows, {"identical": True}, out_dir=tmp_path,
                        extra_versions={"scipy": "x"})
    assert path == tmp_path / "demo.json"
    rec = json.loads(path.read_text())
    assert list(rec) == ["benchmark", "date", "commit", "dirty", "machine", "versions", "settings", "results",
                         "checks"]
    assert rec["benchmark"] == "demo" and rec["checks"] == {"identical": True}
    assert rec["results"][0]["spread_s"] == {"min": 6.4, "median": 6.5, "max": 6.6}
    assert "spread_s" not in rec["results"][1]
    assert rec["versions"]["scipy"] == "x" and rec["versions"]["torch"]
    assert len(rec["commit"]) == 40       # the tests run in a git checkout
    # a second run replaces the file
    write_result("demo", {"batch": 32}, rows, out_dir=tmp_path)
    assert json.loads(path.read_text())["settings"] == {"batch": 32}
    assert [p.name for p in tmp_path.iterdir()] == ["demo.json"]


def test_dumps_result_is_the_json_of_the_record():
    rec = result_record("x", {"a": [1, 2], "b": None}, [{"t": "é", "times_s": [1.0, 2.0]}], {},
                        date="2026-01-01", commit={"commit": None, "dirty": None}, machine_info={},
                        version_info={"torch": "t"})
    assert json.loads(dumps_result(rec)) == rec


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*")), ids=lambda p: p.name)
def test_committed_result_files(path):
    """One JSON per benchmark named after it, with date, commit, GPU, torch version, settings, results and checks;
    every `spread_s` is the min / median / max of its row's `times_s`."""
    assert path.suffix == ".json", f"{path.name}: only the latest JSON per benchmark belongs here"
    rec = json.loads(path.read_text())
    assert rec["benchmark"] == path.stem
    for key in ("date", "commit", "machine", "versions", "settings", "results", "checks"):
        assert key in rec, f"{path.name}: no {key!r}"
    assert len(rec["commit"]) == 40 and rec["versions"]["torch"] and rec["results"]
    assert "gpu" in rec["machine"]
    for row in rec["results"]:
        if row.get("times_s"):
            t = row["times_s"]
            assert row["spread_s"] == {"min": min(t), "median": round(statistics.median(t), 4), "max": max(t)}
