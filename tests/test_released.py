"""Expected FIDs of released weights and the within/outside verdict (eval/released.py), on hand-made score and
train-metrics dicts shaped like the score stage's and train_var's JSON files."""
from __future__ import annotations

from eval import paper
from eval.released import FID_TOLERANCE, MIN_SAMPLES, STORED_REFERENCE_STATS, expectation, fid_verdict, release_for

D16_PARAMS, D30_PARAMS = 310_283_520, 2_010_020_356


def scores(fid: float, *, extractor: str = "inception", n: int = 50_000, stats: str = STORED_REFERENCE_STATS):
    return {f"fid_{extractor}": fid, f"is_{extractor}": 280.0, f"precision_{extractor}": 0.8,
            f"recall_{extractor}": 0.5, "extractor": {"inception": "inception-v3-compat"}.get(extractor, extractor),
            "num_samples": n, "num_reference": 10_000, "reference_stats": stats}


def imported(num_params: int, path: str = "weights/var_d16.pth"):
    return {"model": "var-d16", "num_params": num_params, "pretrained": path, "step": 0}


def test_within():
    e = expectation(scores(3.41), imported(D16_PARAMS))
    assert (e.release, e.fid_paper, e.fid_release, e.verdict) == ("var_d16", 3.30, 3.55, "within")
    assert "[3.00, 3.85]" in e.reason


def test_outside_on_either_side():
    assert expectation(scores(3.90), imported(D16_PARAMS)).verdict == "outside"
    assert expectation(scores(2.95), imported(D16_PARAMS)).verdict == "outside"
    e = expectation(scores(2.50), imported(D30_PARAMS, "weights/var_d30.pth"))   # band [1.62, 2.27]
    assert (e.release, e.fid_paper, e.fid_release, e.verdict) == ("var_d30", 1.92, 1.97, "outside")


def test_band_edges_are_inclusive():
    # d16: [min(3.30, 3.55) - 0.3, max(3.30, 3.55) + 0.3] = [3.00, 3.85], at the FIDs' printed precision
    assert FID_TOLERANCE == 0.3
    assert [fid_verdict(m, 3.30, 3.55) for m in (2.99, 3.00, 3.85, 3.86)] == ["outside", "within", "within", "outside"]
    # symmetric in the two published values (the README's can be the lower one too)
    assert fid_verdict(3.00, 3.55, 3.30) == "within"


def test_wrong_extractor_gets_no_verdict():
    e = expectation(scores(3.41, extractor="evalnet"), imported(D16_PARAMS))
    assert (e.release, e.fid_paper, e.fid_release, e.verdict) == ("var_d16", 3.30, 3.55, "none")
    assert "'evalnet' features" in e.reason


def test_too_few_samples_get_no_verdict():
    e = expectation(scores(3.41, n=10_000), imported(D16_PARAMS))
    assert e.verdict == "none" and "10000 samples" in e.reason and f"{MIN_SAMPLES:,}" in e.reason
    assert expectation(scores(3.41, n=MIN_SAMPLES - 1), imported(D16_PARAMS)).verdict == "none"
    no_count = scores(3.41)
    del no_count["num_samples"]
    assert expectation(no_count, imported(D16_PARAMS)).verdict == "none"


def test_other_reference_statistics_get_no_verdict():
    e = expectation(scores(3.41, stats="computed from reference images"), imported(D16_PARAMS))
    assert e.verdict == "none" and "stored statistics" in e.reason


def test_trained_weights_get_nothing_and_unknown_imports_no_release():
    assert expectation(scores(3.41), {"model": "var-d16", "num_params": D16_PARAMS, "step": 1000}) is None
    assert expectation(scores(3.41), None) is None
    e = expectation(scores(3.41), imported(123_456))
    assert (e.release, e.fid_paper, e.verdict) == ("", None, "none") and "123456 parameters" in e.reason


def test_the_release_comes_from_the_weights_not_the_names():
    # a file named var_d30.pth holding d16's parameter count is the d16 release; the model name plays no part
    e = expectation(scores(3.41), {**imported(D16_PARAMS, "weights/var_d30.pth"), "model": "var-d30"})
    assert e.release == "var_d16" and e.fid_paper == 3.30
    assert [release_for(r.num_params).depth for r in paper.RELEASES] == [16, 20, 24, 30]
    assert release_for(2_353_893_904) is None       # var_d36 (512 px, Table 2) is not a Table 1 release


def test_published_and_rescored_fids_are_within():
    """The rule accepts every FID reported for these weights: the paper's, the README's, and the independent
    re-scorings (the spread the tolerance stands for)."""
    for r in paper.RELEASES:
        fp = paper.table1_row(r.paper_model).FID
        for measured in (fp, r.readme_fid, *(d[r.name] for d in paper.RESCORED_FIDS if r.name in d)):
            assert expectation(scores(measured), imported(r.num_params)).verdict == "within", (r.name, measured)
