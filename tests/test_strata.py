"""Span-length strata of the transplant check's threshold (frs_ray/fuzzing/strata.py): edges, strata, the
calibration's bound on the clean keep rate (on the calibration texts exactly, on new texts by Monte Carlo)."""

from __future__ import annotations

import numpy as np
import pytest

from frs_ray.errors import ConfigError
from frs_ray.fuzzing.strata import NEVER, check_edges, keep_rate, stratified_thresholds, stratum_of, threshold_keeping


@pytest.mark.parametrize(
    "edges, ok",
    [
        ([], True),
        ([1], True),
        ([1, 3], True),
        ([2, 5, 9], True),
        ([0], False),
        ([3, 1], False),
        ([1, 1], False),
        ([1.5], False),
        ([True], False),
        (["2"], False),
        ([-2, 4], False),
    ],
)
def test_edges_must_be_increasing_integers_of_at_least_one(edges, ok):
    if ok:
        assert check_edges(edges) == tuple(edges)
    else:
        with pytest.raises(ConfigError, match="length_strata must be increasing integers >= 1"):
            check_edges(edges)


@pytest.mark.parametrize(
    "edges, length, stratum",
    [((), 1, 0), ((), 40, 0), ((1, 3), 1, 0), ((1, 3), 2, 1), ((1, 3), 3, 1), ((1, 3), 4, 2), ((1, 3), 30, 2), ((4,), 4, 0)],
)
def test_stratum_of_a_length(edges, length, stratum):
    assert stratum_of(edges, length) == stratum


@pytest.mark.parametrize(
    "values, keep, expect",
    [([0.1, 0.9, 0.5, 0.3], 0.0, 0.9), ([0.1, 0.9, 0.5, 0.3], 0.25, 0.5), ([0.1, 0.9, 0.5, 0.3], 0.5, 0.3), ([0.4], 0.2, 0.4)],
)
def test_threshold_keeping_lets_at_most_the_share_above(values, keep, expect):
    thr = threshold_keeping(values, keep)
    assert thr == expect and np.sum(np.array(values) > thr) <= int(keep * len(values))


def test_an_empty_stratum_keeps_nothing_and_one_stratum_is_the_one_threshold_rule():
    best = [{0: 0.2}, {0: 0.6}, {0: 0.4}, {2: 0.9}]
    thr = stratified_thresholds(best, 3, 0.25)
    assert thr[1] == NEVER  # no calibration span of that length: nothing of that length is kept
    assert stratified_thresholds([], 2, 0.1) == [NEVER, NEVER]
    one = [{0: v} for v in np.random.default_rng(0).random(50)]
    assert stratified_thresholds(one, 1, 0.1) == [threshold_keeping([d[0] for d in one], 0.1)]


@pytest.mark.parametrize("target", [0.0, 0.02, 0.05, 0.2])
@pytest.mark.parametrize("spans_per_text", [1, 2])
def test_calibration_keeps_at_most_target_keep_of_its_own_texts(target, spans_per_text):
    rng = np.random.default_rng([7, spans_per_text])
    for _ in range(50):
        n = int(rng.integers(20, 200))
        best = []
        for _ in range(n):
            d: dict[int, float] = {}
            for b in rng.integers(0, 3, spans_per_text):
                d[int(b)] = max(d.get(int(b), -1.0), float(rng.beta(2, 5)))
            best.append(d)
        thr = stratified_thresholds(best, 3, target)
        assert keep_rate(best, thr) <= target + 1e-12


def test_monte_carlo_keep_rate_on_new_clean_texts_matches_the_quantile_formula():
    """New clean texts exchangeable with the calibration ones: over 2000 calibrations of 200 texts (lengths 1,
    2-3, 4+ in shares p = 0.1 / 0.3 / 0.6, scores per stratum from different distributions, as on SST-2), the keep
    rate on fresh texts averages to the docstring's sum_b p_b (k_b + 1) / (n_b + 1) (within Monte-Carlo error, at
    both ends), which stays below target + S / n (S = 3 strata, n = 200)."""
    rng = np.random.default_rng(11)
    shares, target, n, reps = np.array([0.1, 0.3, 0.6]), 0.02, 200, 2000
    params = [(2, 8), (2, 5), (5, 3)]  # beta(a, b) per stratum: longer clean spans score higher

    def draw(size):
        strata = rng.choice(3, size=size, p=shares)
        return strata, rng.beta(np.array(params)[strata, 0], np.array(params)[strata, 1])

    rates, expected = [], []
    for _ in range(reps):
        s, v = draw(n)
        thr = stratified_thresholds([{int(b): float(x)} for b, x in zip(s, v)], 3, target)
        s2, v2 = draw(4000)
        rates.append(float(np.mean(v2 > np.array(thr)[s2])))
        counts = np.bincount(s, minlength=3)
        k = np.floor(target * counts + 1e-9)
        expected.append(float(np.sum(np.where(counts > 0, shares * (k + 1) / (counts + 1), 0.0))))
    diff = np.array(rates) - np.array(expected)
    se = float(np.std(diff)) / np.sqrt(reps)
    assert abs(float(np.mean(diff))) <= 4 * se
    assert float(np.mean(expected)) <= target + 3 / n
