"""eval/seeds.py with hand-computed values."""
import math

import pytest

from eval.seeds import SeedSummary, compare, summarize


def test_summary_mean_sd_ddof1_and_count():
    s = summarize([2.0, 4.0, 9.0])
    # mean 5; deviations -3, -1, 4; sum of squares 26; ddof=1 -> variance 13
    assert (s.mean, s.sd, s.n) == (5.0, pytest.approx(math.sqrt(13.0), rel=1e-15), 3)
    one = summarize([7.5])
    assert one.mean == 7.5 and one.n == 1 and math.isnan(one.sd)
    with pytest.raises(ValueError):
        summarize([1.0, float("nan")])
    with pytest.raises(ValueError):
        summarize([])


def test_significance_rule_hand_computed():
    previous = summarize([10.0, 12.0])   # mean 11, sd sqrt(2)
    current = summarize([6.0, 8.0])      # mean 7,  sd sqrt(2)
    change = compare(previous, current)
    # delta = -4; sd_of_difference = sqrt(2 + 2) = 2; |delta| = 4 is not > 2 * 2 = 4: not significant (strict)
    assert change.delta == -4.0 and change.sd_of_difference == pytest.approx(2.0, rel=1e-15)
    assert change.significant is False and change.verdict == "not significant"
    further = compare(previous, summarize([5.9, 7.9]))  # delta -4.1 > 4: significant
    assert further.significant is True and further.verdict == "significant"
    # sd 3 and 4 -> sd_of_difference 5; delta 10.5 > 10
    assert compare(SeedSummary(0.0, 3.0, 4), SeedSummary(10.5, 4.0, 4)).significant is True
    assert compare(SeedSummary(0.0, 3.0, 4), SeedSummary(9.5, 4.0, 4)).significant is False


def test_single_seed_is_not_assessable():
    for a, b in ((summarize([1.0]), summarize([5.0, 6.0])), (summarize([5.0, 6.0]), summarize([100.0]))):
        change = compare(a, b)
        assert change.significant is None and math.isnan(change.sd_of_difference)
        assert change.verdict == "not assessable (one seed)"
        assert change.delta == b.mean - a.mean
