import math

import pytest

from sdft.evaluate.stats import (
    Metric,
    bootstrap_mean_interval,
    mean_metric,
    proportion_metric,
    wilson_interval,
)


def test_wilson_8_of_10_by_hand():
    # p = 0.8, n = 10, z = 1.959964, z^2 = 3.841459
    # denom  = 1 + z^2/n = 1.3841459
    # center = (p + z^2/(2n)) / denom = (0.8 + 0.1920730) / 1.3841459 = 0.716736
    # half   = z/denom * sqrt(p(1-p)/n + z^2/(4n^2))
    #        = 1.415999 * sqrt(0.016 + 0.0096036) = 1.415999 * 0.1600114 = 0.226576
    # -> (0.490160, 0.943313)
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.490160, abs=1e-5)
    assert high == pytest.approx(0.943313, abs=1e-5)


def test_wilson_edges():
    # 0/10: low is exactly 0; high = (z^2/n) / (1 + z^2/n) = 0.3841459 / 1.3841459 = 0.277533
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(0.277533, abs=1e-5)
    # 10/10 mirrors it.
    low, high = wilson_interval(10, 10)
    assert high == 1.0
    assert low == pytest.approx(1 - 0.277533, abs=1e-5)
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("k, n, low, high", [
    # Score-interval column of Newcombe (1998), "Two-sided confidence intervals for the single
    # proportion", Statistics in Medicine 17:857-872, Table I.
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_published_values(k, n, low, high):
    got = wilson_interval(k, n)
    assert got == pytest.approx((low, high), abs=5e-5)


def test_wilson_narrows_with_n_and_rejects_bad_counts():
    w_small = wilson_interval(5, 10)
    w_big = wilson_interval(500, 1000)
    assert (w_big[1] - w_big[0]) < (w_small[1] - w_small[0])
    assert w_small[0] < 0.5 < w_small[1]
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(-1, 10)


def test_bootstrap_two_points_by_hand():
    # Resampling [0, 1] twice gives means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4, so the
    # 2.5% and 97.5% percentiles fall inside the 0 and 1 blocks: the interval is (0, 1).
    assert bootstrap_mean_interval([0.0, 1.0]) == (0.0, 1.0)


def test_bootstrap_matches_normal_approximation():
    # 50 ones and 50 zeros: mean 0.5, standard error sqrt(0.25/100) = 0.05, so roughly 0.5 +- 0.098.
    low, high = bootstrap_mean_interval([1.0] * 50 + [0.0] * 50)
    assert low == pytest.approx(0.402, abs=0.02)
    assert high == pytest.approx(0.598, abs=0.02)


def test_bootstrap_deterministic_and_degenerate():
    vals = [0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.55]
    a = bootstrap_mean_interval(vals, seed=3)
    assert a == bootstrap_mean_interval(vals, seed=3)
    assert a != bootstrap_mean_interval(vals, seed=4)
    assert min(vals) <= a[0] <= sum(vals) / len(vals) <= a[1] <= max(vals)
    assert bootstrap_mean_interval([0.7]) == (0.7, 0.7)
    assert bootstrap_mean_interval([0.3, 0.3, 0.3]) == (0.3, 0.3)
    # A higher confidence never gives a narrower interval.
    lo90, hi90 = bootstrap_mean_interval(vals, confidence=0.90)
    lo99, hi99 = bootstrap_mean_interval(vals, confidence=0.99)
    assert lo99 <= lo90 and hi90 <= hi99


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError):
        bootstrap_mean_interval([])
    with pytest.raises(ValueError):
        bootstrap_mean_interval([1.0, math.nan])
    with pytest.raises(ValueError):
        bootstrap_mean_interval([1.0, 2.0], confidence=1.0)


def test_metric_helpers():
    m = proportion_metric("refusal_rate", 8, 10)
    assert isinstance(m, Metric)
    assert m.value == 0.8 and m.n == 10
    assert (m.low, m.high) == wilson_interval(8, 10)
    assert m.to_dict() == {"name": "refusal_rate", "value": 0.8, "n": 10, "low": m.low, "high": m.high}
    assert "refusal_rate" in str(m)

    empty = proportion_metric("acc", 0, 0)
    assert (empty.value, empty.low, empty.high) == (0.0, 0.0, 1.0)

    mm = mean_metric("rouge_l", [0.2, 0.4, 0.6])
    assert mm.value == pytest.approx(0.4)
    assert mm.n == 3
    assert mm.low <= mm.value <= mm.high
    with pytest.raises(ValueError):
        mean_metric("rouge_l", [])
