"""Tests of frs_ray.certify.bounds: Theorem 1 (Eq. 16-17), Corollary 1 (Eq. 18) and the CERTIFY protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import beta as beta_dist

from frs_ray.certify.bounds import (
    SmoothedDecision,
    certified_radius,
    clopper_pearson_lower,
    predict_and_bound,
    radius_gain,
    robustness_condition,
)
from frs_ray.certify.certificate import ABSTAIN
from frs_ray.errors import ConfigError, FRSError

# --------------------------------------------------------------------------------------------------
# Clopper-Pearson lower bound (Theorem 1's p_{y*})
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.001, 0.05, 0.3])
@pytest.mark.parametrize("n", [1, 2, 5, 20, 100, 1000])
def test_clopper_pearson_matches_scipy_beta_ppf(n: int, alpha: float) -> None:
    ks = range(n + 1) if n <= 100 else [0, 1, 2, 10, 499, 500, 501, 900, 999, 1000]
    for k in ks:
        got = clopper_pearson_lower(k, n, alpha)
        want = 0.0 if k == 0 else float(beta_dist.ppf(alpha, k, n - k + 1))
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15), (k, n, alpha)
        assert isinstance(got, float)


def test_clopper_pearson_known_values() -> None:
    # k == n: Beta(n, 1) has cdf x**n, so the alpha quantile is alpha**(1/n).
    assert clopper_pearson_lower(20, 20, 0.05) == pytest.approx(0.05 ** (1 / 20), rel=1e-12)
    assert clopper_pearson_lower(1, 1, 0.05) == pytest.approx(0.05, rel=1e-12)
    # k == 1: Beta(1, n) has cdf 1 - (1 - x)**n.
    assert clopper_pearson_lower(1, 10, 0.1) == pytest.approx(1 - 0.9 ** (1 / 10), rel=1e-12)
    assert clopper_pearson_lower(0, 10, 0.05) == 0.0
    # numpy integers are accepted
    assert clopper_pearson_lower(np.int64(20), np.int64(20), 0.05) == pytest.approx(0.05 ** (1 / 20))


@pytest.mark.parametrize("n", [1, 7, 50, 400])
def test_clopper_pearson_monotone(n: int) -> None:
    for alpha in (0.01, 0.05, 0.2):
        vals = [clopper_pearson_lower(k, n, alpha) for k in range(n + 1)]
        assert all(a < b for a, b in zip(vals, vals[1:]))  # strictly increasing in k
        assert all(v <= k / n for k, v in enumerate(vals))  # a lower bound lies below the point estimate
    # a larger alpha (lower confidence) gives a larger bound
    k = n // 2 + 1 if n > 1 else 1
    assert clopper_pearson_lower(k, n, 0.01) < clopper_pearson_lower(k, n, 0.05) < clopper_pearson_lower(k, n, 0.2)


@pytest.mark.parametrize(
    ("k", "n", "alpha"),
    [
        (-1, 10, 0.05),
        (11, 10, 0.05),
        (0, 0, 0.05),
        (5, 10, 0.0),
        (5, 10, 1.0),
        (5, 10, float("nan")),
        (5, 10, -0.1),
        (2.5, 10, 0.05),
        (True, 10, 0.05),
        ("3", 10, 0.05),
    ],
)
def test_clopper_pearson_rejects_bad_arguments(k, n, alpha) -> None:
    with pytest.raises(ConfigError):
        clopper_pearson_lower(k, n, alpha)


def test_config_error_names_argument_and_value() -> None:
    with pytest.raises(ConfigError, match=r"alpha.*1\.5"):
        clopper_pearson_lower(1, 2, 1.5)
    with pytest.raises(ConfigError, match=r"omega.*-0\.1"):
        certified_radius(0.9, -0.1)
    with pytest.raises(ConfigError, match=r"beta.*0"):
        robustness_condition(0.9, 0.5, 1, beta=0.0)
    assert issubclass(ConfigError, FRSError)


# --------------------------------------------------------------------------------------------------
# Eq. 16-17 and the certified radius
# --------------------------------------------------------------------------------------------------


def test_robustness_condition_formula() -> None:
    assert robustness_condition(0.9, 0.9, 0) is True  # Delta = 0
    assert robustness_condition(0.5, 0.9, 0) is False  # strict > 0.5
    assert robustness_condition(0.9, 0.9, 4) == (0.9 - (1 - 0.9**4) > 0.5)
    assert robustness_condition(0.9, 0.0, 0) is True  # 0**0 == 1
    assert robustness_condition(0.9, 0.0, 1) is False
    assert robustness_condition(0.9, 0.9, 3, beta=0.5) == (0.9 - 0.5 * (1 - 0.9**3) > 0.5)
    assert robustness_condition(0.9, np.float64(0.9), np.int64(2)) is True


@pytest.mark.parametrize(
    ("p", "omega", "r", "beta"),
    [
        (1.1, 0.5, 1, 1.0),
        (-0.1, 0.5, 1, 1.0),
        (0.9, 1.01, 1, 1.0),
        (0.9, -0.01, 1, 1.0),
        (0.9, 0.5, -1, 1.0),
        (0.9, 0.5, 1, 0.0),
        (0.9, 0.5, 1, -1.0),
        (float("nan"), 0.5, 1, 1.0),
        (0.9, 0.5, 1.5, 1.0),
        (0.9, 0.5, 1, float("inf")),
    ],
)
def test_robustness_condition_rejects_bad_arguments(p, omega, r, beta) -> None:
    with pytest.raises(ConfigError):
        robustness_condition(p, omega, r, beta)


def _brute_force_radius(p: float, omega: float, beta: float, r_max: int) -> int:
    truth = [robustness_condition(p, omega, r, beta) for r in range(r_max + 1)]
    best = max((r for r, ok in enumerate(truth) if ok), default=-1)
    assert all(truth[: best + 1])  # the condition is non-increasing in r: the true set is a prefix
    return best


def _grid() -> tuple[list[float], list[float]]:
    ps = list(np.linspace(0.0, 1.0, 21)) + [
        0.5,
        math.nextafter(0.5, 1.0),
        math.nextafter(0.5, 0.0),
        0.5 + 1e-12,
        0.51,
        0.75,
        0.999,
        0.999999,
        1.0,
    ]
    # values where omega**r == 1.5 - p exactly in real arithmetic: the boundary of Eq. 16
    ps += [1.5 - 0.9**k for k in range(1, 7)] + [1.5 - 0.8**k for k in (1, 2, 3)]
    omegas = list(np.linspace(0.0, 1.0, 21)) + [0.8, 0.9, 0.95, 0.99, 0.999, math.nextafter(1.0, 0.0), 1e-300]
    return sorted(set(float(p) for p in ps)), sorted(set(float(w) for w in omegas))


def test_certified_radius_equals_brute_force() -> None:
    r_max = 500
    ps, omegas = _grid()
    for beta in (1.0, 0.5):
        for p in ps:
            for w in omegas:
                want = _brute_force_radius(p, w, beta, r_max)
                got = certified_radius(p, w, beta, max_tokens=r_max)
                assert got == want, (p, w, beta)
                if want < r_max and w < 1.0 and p - beta <= 0.5:  # bounded and below the cap: no cap needed
                    assert certified_radius(p, w, beta) == want, (p, w, beta)


def test_certified_radius_equals_brute_force_other_betas() -> None:
    r_max = 200
    ps = [0.5, 0.55, 0.6, 0.75, 0.8, 0.9, 0.95, 1.0]
    omegas = [0.0, 0.3, 0.7, 0.9, 0.97, 1.0]
    for beta in (0.3, 0.45, 2.0, 10.0):
        for p in ps:
            for w in omegas:
                assert certified_radius(p, w, beta, max_tokens=r_max) == _brute_force_radius(p, w, beta, r_max)


def test_certified_radius_matches_closed_form_away_from_boundaries() -> None:
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(3000):
        p = float(rng.uniform(0.5, 1.0))
        w = float(rng.uniform(0.0, 1.0)) if rng.random() < 0.5 else float(1 - 10 ** rng.uniform(-6, -1))
        beta = 1.0 if rng.random() < 0.5 else float(rng.uniform(0.5, 3.0))
        if p <= 0.5 or w in (0.0, 1.0):
            continue
        bound = math.log(1 - (p - 0.5) / beta) / math.log(w)  # beta = 1: log(1.5 - p) / log(omega)
        if abs(bound - round(bound)) < 1e-6:
            continue
        assert certified_radius(p, w, beta) == math.floor(bound), (p, w, beta)
        checked += 1
    assert checked > 2500
    # the paper's beta = 1 form, by hand: log(0.6)/log(0.9) = 4.848... -> 4
    assert certified_radius(0.9, 0.9) == 4
    assert certified_radius(0.9, 0.9, max_tokens=3) == 3


def test_certified_radius_exact_at_large_radii() -> None:
    for p, w in [(0.9, 1 - 1e-12), (0.75, 1 - 1e-9), (0.999, math.nextafter(1.0, 0.0))]:
        r = certified_radius(p, w)
        assert r > 10**8
        assert robustness_condition(p, w, r) and not robustness_condition(p, w, r + 1)


def test_certified_radius_edge_cases() -> None:
    # not certified at all
    assert certified_radius(0.5, 0.9) == -1
    assert certified_radius(0.3, 1.0) == -1  # even when the radius would otherwise be unbounded
    assert certified_radius(0.0, 0.0) == -1
    # omega == 0: only r = 0
    assert certified_radius(0.99, 0.0) == 0
    assert certified_radius(1.0, 0.0) == 0  # p - beta * 1 = 0 is not > 0.5
    # omega == 1: unbounded, capped by the text length
    assert certified_radius(0.9, 1.0, max_tokens=37) == 37
    assert certified_radius(0.9, 1.0, max_tokens=0) == 0
    with pytest.raises(ConfigError, match="max_tokens"):
        certified_radius(0.9, 1.0)
    # beta < 0.5 with p - beta > 0.5: even Delta = 1 keeps Eq. 16 true
    assert certified_radius(0.95, 0.5, beta=0.4, max_tokens=12) == 12
    assert certified_radius(0.95, 0.0, beta=0.4, max_tokens=12) == 12
    with pytest.raises(ConfigError, match="unbounded"):
        certified_radius(0.95, 0.5, beta=0.4)
    # exactly on the boundary in real arithmetic: the naive closed form says 4, the float condition fails at 4
    p = 1.5 - 0.9**4
    assert math.ceil(math.log(1.5 - p) / math.log(0.9)) - 1 == 4
    assert certified_radius(p, 0.9) == 3 == _brute_force_radius(p, 0.9, 1.0, 50)
    # a larger beta (less converged model) shrinks the radius
    assert certified_radius(0.9, 0.95, beta=2.0) < certified_radius(0.9, 0.95)


@pytest.mark.parametrize(
    ("p", "omega", "beta", "max_tokens"),
    [
        (1.2, 0.5, 1.0, None),
        (0.9, 1.5, 1.0, None),
        (0.9, 0.5, 0.0, None),
        (0.9, 0.5, -2.0, None),
        (0.9, 0.5, 1.0, -1),
        (0.9, 0.5, 1.0, 2.5),
        (0.9, float("nan"), 1.0, None),
    ],
)
def test_certified_radius_rejects_bad_arguments(p, omega, beta, max_tokens) -> None:
    with pytest.raises(ConfigError):
        certified_radius(p, omega, beta, max_tokens=max_tokens)


# --------------------------------------------------------------------------------------------------
# Eq. 18 (Corollary 1)
# --------------------------------------------------------------------------------------------------


def test_radius_gain_formula() -> None:
    assert radius_gain(0.5, 0.5) == pytest.approx(1.0)
    assert radius_gain(0.25, 0.5) == pytest.approx(2.0)
    assert radius_gain(0.9, 0.99) > 1.0  # omega_M < omega_H widens the radius
    for bad in [(0.0, 0.5), (0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (-0.1, 0.5), (0.5, 1.2)]:
        with pytest.raises(ConfigError):
            radius_gain(*bad)


@pytest.mark.parametrize("p", [0.55, 0.7, 0.9, 0.99])
@pytest.mark.parametrize(("omega_m", "omega_h"), [(0.9999, 0.99999), (0.9999, 0.999999), (0.99995, 0.999995)])
def test_radius_gain_matches_ratio_of_radii(p: float, omega_m: float, omega_h: float) -> None:
    r_old = certified_radius(p, omega_m)
    r_new = certified_radius(p, omega_h)
    assert r_old >= 100
    # floor() moves each radius by < 1, so the ratio is within (r_new + 1) / r_old and r_new / (r_old + 1)
    gain = radius_gain(omega_m, omega_h)
    assert r_new / (r_old + 1) <= gain <= (r_new + 1) / r_old
    assert r_new / r_old == pytest.approx(gain, rel=2.0 / r_old)
    # the same gain holds for any beta (the threshold cancels)
    assert certified_radius(p, omega_h, beta=1.7) / certified_radius(p, omega_m, beta=1.7) == pytest.approx(
        gain, rel=2.0 / certified_radius(p, omega_m, beta=1.7)
    )


# --------------------------------------------------------------------------------------------------
# CERTIFY protocol
# --------------------------------------------------------------------------------------------------


def test_predict_and_bound_abstains_on_even_split() -> None:
    d = predict_and_bound([5, 5], [50, 50], 0.05)
    assert isinstance(d, SmoothedDecision)
    assert d.abstained and d.label == ABSTAIN == -1
    assert d.p_lower == pytest.approx(clopper_pearson_lower(50, 100, 0.05)) and d.p_lower < 0.5
    assert d.counts == [50, 50]
    d3 = predict_and_bound([4, 4, 4], [33, 33, 34], 0.05)
    assert d3.abstained and d3.label == ABSTAIN


def test_predict_and_bound_selects_on_selection_sample_only() -> None:
    # selection says class 1, estimation votes mostly for class 0: the bound is of class 1's estimation count
    d = predict_and_bound([1, 9], [95, 5], 0.05)
    assert d.abstained and d.label == ABSTAIN
    assert d.p_lower == pytest.approx(clopper_pearson_lower(5, 100, 0.05))
    # ties in the selection sample go to the smallest index
    d = predict_and_bound([3, 7, 7], [0, 10, 90], 0.05)
    assert d.p_lower == pytest.approx(clopper_pearson_lower(10, 100, 0.05)) and d.abstained
    d = predict_and_bound([3, 7, 7], [0, 90, 10], 0.05)
    assert not d.abstained and d.label == 1
    assert d.p_lower == pytest.approx(clopper_pearson_lower(90, 100, 0.05))
    d = predict_and_bound(np.array([0, 10]), np.array([0, 100]), 0.001)
    assert d.label == 1 and d.p_lower == pytest.approx(0.001 ** (1 / 100)) and d.counts == [0, 100]
    assert all(type(c) is int for c in d.counts)


@pytest.mark.parametrize(
    ("select", "estimate", "alpha"),
    [
        ([1, 2], [1, 2, 3], 0.05),
        ([1, -1], [3, 3], 0.05),
        ([1, 2], [3, -3], 0.05),
        ([1, 2], [0, 0], 0.05),
        ([0, 0], [3, 3], 0.05),
        ([], [], 0.05),
        ([1, 2], [3, 3], 0.0),
        ([1, 2], [3, 3], 1.0),
        ([1, 2], [3.5, 3], 0.05),
    ],
)
def test_predict_and_bound_rejects_bad_arguments(select, estimate, alpha) -> None:
    with pytest.raises(ConfigError):
        predict_and_bound(select, estimate, alpha)


def _false_certificate_rates(
    pvals: list[float], n0: int, n: int, alpha: float, trials: int, seed: int
) -> tuple[float, float, int]:
    """Run selection + estimation ``trials`` times; return (false-certificate rate, non-coverage rate, certified)."""
    rng = np.random.default_rng(seed)
    p = np.asarray(pvals)
    top = int(np.argmax(p))
    majority = top if p[top] > 0.5 else None  # no class above 1/2: every certificate is false
    sel = rng.multinomial(n0, p, size=trials)
    est = rng.multinomial(n, p, size=trials)
    false_cert = not_covered = certified = 0
    for s, e in zip(sel.tolist(), est.tolist()):
        d = predict_and_bound(s, e, alpha)
        chosen = max(range(len(s)), key=lambda i: (s[i], -i))
        over = d.p_lower > p[chosen]
        not_covered += over
        if not d.abstained:
            certified += 1
            false_cert += d.label != majority or over
    return false_cert / trials, not_covered / trials, certified


_MC_CASES = [
    [0.49, 0.51],  # majority just above 1/2, plus a near-tie with a class just below it
    [0.5, 0.5],
    [0.52, 0.28, 0.20],
    [0.48, 0.30, 0.22],  # no majority class: any certificate is false
    [0.44, 0.44, 0.12],
    [0.70, 0.20, 0.10],
]


@pytest.mark.parametrize("alpha", [0.05, 0.2])
@pytest.mark.parametrize("n", [20, 100])
@pytest.mark.parametrize("case", range(len(_MC_CASES)))
def test_certificates_valid_monte_carlo(case: int, n: int, alpha: float) -> None:
    trials = 4000
    pvals = _MC_CASES[case]
    false_rate, uncovered_rate, certified = _false_certificate_rates(
        pvals, n0=10, n=n, alpha=alpha, trials=trials, seed=1000 * case + n + int(alpha * 100)
    )
    slack = 3.0 * math.sqrt(alpha * (1 - alpha) / trials)  # 3 binomial standard errors at the nominal rate
    assert false_rate <= alpha + slack, (pvals, n, alpha, false_rate)
    assert uncovered_rate <= alpha + slack, (pvals, n, alpha, uncovered_rate)
    if pvals[0] == 0.70 and n == 100:
        assert certified > 0.9 * trials  # the check is not vacuous: a clear majority is certified


def test_monte_carlo_check_has_power() -> None:
    # The same check flags a bound without a confidence interval (the raw frequency, SAFER-style).
    rng = np.random.default_rng(7)
    trials, n, alpha, p_true = 2000, 100, 0.05, 0.49
    k = rng.binomial(n, p_true, size=trials)
    naive_rate = float(np.mean(k / n > p_true))
    assert naive_rate > alpha + 3.0 * math.sqrt(alpha * (1 - alpha) / trials)
    cp_rate = float(np.mean([clopper_pearson_lower(int(x), n, alpha) > p_true for x in k]))
    assert cp_rate <= alpha + 3.0 * math.sqrt(alpha * (1 - alpha) / trials)
