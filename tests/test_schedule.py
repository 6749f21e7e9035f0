"""The lr/wd schedule reproduces the reference `lr_wd_annealing` samples of the five README recipes."""
import json
import math

import pytest

from conftest import fixture_path
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
