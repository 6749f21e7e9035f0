"""The lr/wd schedule reproduces the reference `lr_wd_annealing` samples of the five README recipes
(tests/data/fixture_lr_schedule.json, a copy of ../shared/fixtures/fixture_lr_schedule.json), and every reference
schedule type we implement, by hand."""
import json
import math

import pytest
from conftest import fixture_path

from var.config import TrainConfig
from var.schedule import lr_wd_at, peak_lr_for, wd_at

_CONFIGS = json.loads(fixture_path("fixture_lr_schedule.json").read_text())["configs"]
_IMAGENET_TRAIN = 1281167


@pytest.mark.parametrize("name", sorted(_CONFIGS))
def test_schedule_matches_reference_samples(name):
    rec = _CONFIGS[name]
    a = rec["args"]
    iters_per_ep = math.ceil(_IMAGENET_TRAIN / a["bs"])
    assert iters_per_ep == rec["iters_per_ep"]
    max_it = a["ep"] * iters_per_ep
    assert max_it == rec["max_it"]
    warmup_it = a["ep"] / 50 * iters_per_ep
    assert warmup_it == rec["wp_it"]
    peak = peak_lr_for(a["tblr"], a["bs"])
    assert peak == rec["peak_lr"]
    assert len(rec["samples"]) > 0
    for s in rec["samples"]:
        lr, wd = lr_wd_at(s["it"], peak_lr=peak, max_it=max_it, warmup_it=warmup_it, wd=a["twd"],
                          wd_end=a["twde"], warmup_start_ratio=0.005, final_lr_ratio=a["wpe"])
        assert lr == pytest.approx(s["lr"], rel=1e-12, abs=0), (name, s)
        assert wd == pytest.approx(s["wd"], rel=1e-12, abs=0), (name, s)


def test_schedule_shape():
    kw = dict(peak_lr=1.0, max_it=1000, warmup_it=100, wd=0.05, wd_end=0.05, final_lr_ratio=0.1)
    lrs = [lr_wd_at(i, **kw)[0] for i in range(1000)]
    assert lrs[0] == 0.005 and lrs[100] == 1.0
    assert all(b > a for a, b in zip(lrs[:100], lrs[1:101]))        # warm-up strictly rising
    assert all(b <= a for a, b in zip(lrs[100:], lrs[101:]))        # never rises after warm-up
    assert lrs[999] == pytest.approx(0.1, rel=1e-12)
    assert wd_at(0, max_it=10, wd=0.05, wd_end=0.08) == 0.05
    assert wd_at(9, max_it=10, wd=0.05, wd_end=0.08) == pytest.approx(0.08)


@pytest.mark.parametrize("schedule, p, expected", [
    # post-warm-up progress p -> lr factor, by hand from the reference's formulas (FIXTURES_train.md section 5)
    ("lin0", 0.04, 1.0), ("lin0", 0.525, 0.1 + 0.9 * 0.5), ("lin0", 1.0, 0.1),
    ("lin", 0.145, 1.0), ("lin", 0.575, 0.1 + 0.9 * 0.5), ("lin", 1.0, 0.1),
    ("lin00", 0.0, 1.0), ("lin00", 0.5, 0.55), ("lin00", 1.0, 0.1),
    ("cos", 0.0, 1.0), ("cos", 0.5, 0.55), ("cos", 1.0, 0.1),
    ("exp", 0.145, 1.0), ("exp", 0.575, math.sqrt(0.1)), ("exp", 1.0, 0.1),
    ("const", 0.7, 1.0),
])
def test_schedule_types(schedule, p, expected):
    # no warm-up and 201 iterations: iteration 200 p is the progress
    lr, _ = lr_wd_at(round(200 * p), peak_lr=2.0, max_it=201, warmup_it=0, wd=0.05, wd_end=0.05,
                     final_lr_ratio=0.1, schedule=schedule)
    assert lr == pytest.approx(2.0 * expected, rel=1e-12)


@pytest.mark.parametrize("name", ["lin0.5", "linx", "cosine", ""])
def test_unknown_schedules_are_refused(name):
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_wd_at(5, peak_lr=1.0, max_it=10, warmup_it=0, wd=0.05, wd_end=0.05, schedule=name)
    with pytest.raises(ValueError):
        TrainConfig(schedule=name)
