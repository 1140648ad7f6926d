"""Tests of frs_ray.certify.sequential: the schedule, each look's bound, the stopping rule, and validity.

Validity is shown two ways: exactly (dynamic programming over the looks, ``operating_characteristics``) on a
dense grid of true shares, and by Monte Carlo over synthetic Binomial votes with true shares just above and
just below every threshold the procedure uses (0.5 and each target radius's threshold), where the
false-certificate rate must stay at most alpha + 3 standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import beta as beta_dist
from scipy.stats import binom

from frs_ray.certify.bounds import certified_radius, clopper_pearson_lower, predict_and_bound, robustness_condition
from frs_ray.certify.sequential import (
    CONTINUE,
    FUTILE,
    N_MAX,
    TARGET,
    LookSchedule,
    SequentialEstimate,
    SequentialTest,
    cp_lower,
    cp_upper,
    decision_thresholds,
    run_sequential,
    selected_class,
    target_threshold,
)
from frs_ray.errors import ConfigError

# (target_radius, omega * d): no target; the default token-level mutations (omega_H 0.9 x d 0.8); a high omega.
TARGETS = [(0, 1.0), (1, 0.72), (2, 0.9), (3, 0.9)]
SCHEDULES = [(20, 320, 2.0), (10, 200, 1.5)]  # (first, n_max, growth)


# --------------------------------------------------------------------------------------------------
# schedule
# --------------------------------------------------------------------------------------------------


def test_geometric_schedule_sizes_and_equal_split() -> None:
    s = LookSchedule.geometric(20, 320, 0.05)
    assert s.sizes == (20, 40, 80, 160, 320)
    assert s.alphas == pytest.approx([0.01] * 5, rel=1e-15)
    assert s.alpha == pytest.approx(0.05, rel=1e-15) and s.looks == 5 and s.n_max == 320
    assert [s.round_size(j) for j in range(5)] == [20, 20, 40, 80, 160]
    # n_max between powers: the last look is exactly n_max
    assert LookSchedule.geometric(20, 100, 0.05).sizes == (20, 40, 80, 100)
    assert LookSchedule.geometric(10, 40, 0.01, growth=1.5).sizes == (10, 15, 23, 35, 40)
    # a growth so small that ceil would repeat a size still advances by one vote
    assert LookSchedule.geometric(1, 4, 0.05, growth=1.1).sizes == (1, 2, 3, 4)
    one = LookSchedule.geometric(20, 20, 0.05)
    assert one.sizes == (20,) and one.alphas == (0.05,)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"first": 0, "n_max": 10, "alpha": 0.05}, "first"),
        ({"first": 20, "n_max": 10, "alpha": 0.05}, "n_max"),
        ({"first": 20, "n_max": 40, "alpha": 0.05, "growth": 1.0}, "growth"),
        ({"first": 20, "n_max": 40, "alpha": 0.05, "growth": float("nan")}, "growth"),
        ({"first": 20, "n_max": 40, "alpha": 0.05, "growth": float("inf")}, "growth"),
        ({"first": 20, "n_max": 40, "alpha": 0.0}, "alpha"),
        ({"first": 20, "n_max": 40, "alpha": 1.0}, "alpha"),
        ({"first": 20, "n_max": 40, "alpha": "x"}, "alpha"),
        ({"first": True, "n_max": 40, "alpha": 0.05}, "first"),
        ({"first": 2.5, "n_max": 40, "alpha": 0.05}, "first"),
        ({"first": 1, "n_max": 10**6, "alpha": 0.05, "growth": 1.01}, "looks"),
    ],
)
def test_geometric_schedule_bad_parameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LookSchedule.geometric(**kwargs)


@pytest.mark.parametrize(
    "sizes, alphas, match",
    [
        ((), (), "at least one"),
        ((20, 40), (0.01,), "same length"),
        ((20, 20), (0.01, 0.01), "strictly increasing"),
        ((0, 20), (0.01, 0.01), "strictly increasing"),
        ((20, 40), (0.01, 0.0), "alpha"),
        ((20, 40), (0.6, 0.5), "alpha"),
        ((20, 40), (0.01, float("nan")), "alpha"),
    ],
)
def test_look_schedule_bad_parameters(sizes: tuple, alphas: tuple, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LookSchedule(sizes, alphas)


def test_sequential_test_bad_parameters() -> None:
    s = LookSchedule.geometric(20, 80, 0.05)
    for kwargs, match in [
        ({"target_radius": -1}, "target_radius"),
        ({"omega": 1.5}, "omega"),
        ({"omega": float("nan")}, "omega"),
        ({"futility": 1.0}, "futility"),
        ({"futility": -0.1}, "futility"),
        ({"target_radius": 1.5}, "target_radius"),
    ]:
        with pytest.raises(ConfigError, match=match):
            SequentialTest(s, **kwargs)
    with pytest.raises(ConfigError, match="LookSchedule"):
        SequentialTest((20, 40), 0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="SequentialTest"):
        SequentialEstimate(s)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="radius"):
        target_threshold(-1, 0.5)


def test_estimate_misuse_is_a_config_error() -> None:
    est = SequentialEstimate(SequentialTest(LookSchedule.geometric(20, 80, 0.05)))
    with pytest.raises(ConfigError, match="has not stopped"):
        est.result()
    with pytest.raises(ConfigError, match="exactly 20"):
        est.update(10, 19)
    with pytest.raises(ConfigError, match="successes"):
        est.update(21, 20)
    with pytest.raises(ConfigError, match="successes"):
        est.update(-1, 20)
    assert est.next_round_size() == 20  # the rejected rounds changed nothing
    assert est.update(20, 20) is True  # 20/20 at alpha 0.05/3 certifies the label: stop
    assert est.next_round_size() == 0
    with pytest.raises(ConfigError, match="finished"):
        est.update(20, 20)


# --------------------------------------------------------------------------------------------------
# each look's bound, against scipy and the exact binomial tails
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("first, n_max, growth", SCHEDULES)
@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_each_look_bound_is_clopper_pearson_at_its_level(first: int, n_max: int, growth: float, alpha: float) -> None:
    s = LookSchedule.geometric(first, n_max, alpha, growth)
    t = SequentialTest(s)
    for j, (n, a) in enumerate(zip(s.sizes, s.alphas)):
        ks = np.arange(n + 1)
        got = t.bound(j, ks)
        want = np.array([0.0] + [beta_dist.ppf(a, k, n - k + 1) for k in ks[1:]])
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)
        # Defining property of the exact bound: P_{p = L}(K >= k) = alpha_j for k >= 1.
        np.testing.assert_allclose(binom.sf(ks[1:] - 1, n, got[1:]), a, rtol=1e-7)
        # and it is the fixed-protocol bound at that level
        for k in (0, 1, n // 2, n - 1, n):
            assert got[k] == pytest.approx(clopper_pearson_lower(int(k), n, a), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("n", [1, 7, 40, 333])
@pytest.mark.parametrize("level", [0.01, 0.05, 0.3])
def test_upper_bound_exact_tail(n: int, level: float) -> None:
    ks = np.arange(n + 1)
    u = cp_upper(ks, n, level)
    assert u[-1] == 1.0
    # P_{p = U}(K <= k) = level for k < n, and U is the 1 - level quantile of Beta(k + 1, n - k)
    np.testing.assert_allclose(binom.cdf(ks[:-1], n, u[:-1]), level, rtol=1e-7)
    np.testing.assert_allclose(u[:-1], beta_dist.ppf(1 - level, ks[:-1] + 1, n - ks[:-1]), rtol=1e-10)
    assert np.all(np.diff(u) > 0) and np.all(u >= ks / n)
    assert np.all(cp_upper(ks, n, 0.0) == 1.0)
    assert np.all(cp_lower(ks, n, level) <= ks / n)


def _brute_code(t: SequentialTest, j: int, k: int) -> tuple[float, int]:
    """The stopping rule re-derived with scalar scipy calls and bounds.robustness_condition."""
    s = t.schedule
    n, m, a = s.sizes[j], s.n_max, s.alphas[j]
    p = 0.0 if k == 0 else float(beta_dist.ppf(a, k, n - k + 1))
    reached = robustness_condition(p, t.omega, t.target_radius)
    if j == s.looks - 1:
        return p, TARGET if reached else N_MAX
    if reached:
        return p, TARGET
    u = 1.0 if (t.futility == 0 or k == n) else float(beta_dist.ppf(1 - t.futility, k + 1, n - k))
    kf = min(k + u * (m - n), m)
    proj = 0.0 if kf == 0 else float(beta_dist.ppf(s.alphas[-1], kf, m - kf + 1))
    target_futile = not robustness_condition(min(proj, 1.0), t.omega, t.target_radius)
    if target_futile and (p > 0.5 or not proj > 0.5):
        return p, FUTILE
    return p, CONTINUE


@pytest.mark.parametrize("futility", [0.0, 0.05, 0.3])
@pytest.mark.parametrize("radius, omega", TARGETS + [(2, 0.5)])
def test_decide_matches_brute_force(radius: int, omega: float, futility: float) -> None:
    t = SequentialTest(LookSchedule.geometric(20, 160, 0.05), radius, omega, futility)
    for j, n in enumerate(t.schedule.sizes):
        ks = np.arange(n + 1)
        bound, code = t.decide(j, ks)
        for k in ks:
            p, c = _brute_code(t, j, int(k))
            assert bound[k] == pytest.approx(p, rel=1e-9, abs=1e-14)
            assert code[k] == c, (j, int(k), radius, omega, futility)
        # thresholds in k: once the target is cleared it stays cleared; futility only at small counts
        cleared = code == TARGET
        assert np.all(np.diff(cleared.astype(int)) >= 0)


def test_exact_curtailment_is_never_premature() -> None:
    """futility = 0: FUTILE only when no outcome of the remaining votes (all of them for the class) could clear
    the target at ANY later look, nor certify the label when it is not certified yet."""
    for radius, omega in TARGETS + [(1, 0.6)]:
        t = SequentialTest(LookSchedule.geometric(20, 320, 0.05), radius, omega, futility=0.0)
        s = t.schedule
        futile_seen = 0
        for j in range(s.looks - 1):
            ks = np.arange(s.sizes[j] + 1)
            bound, code = t.decide(j, ks)
            for k in ks[code == FUTILE]:
                futile_seen += 1
                for later in range(j + 1, s.looks):
                    best = clopper_pearson_lower(int(k) + s.sizes[later] - s.sizes[j], s.sizes[later], s.alphas[later])
                    assert not robustness_condition(best, omega, radius), (radius, omega, j, int(k), later)
                    if not bound[k] > 0.5:
                        assert not best > 0.5
        assert futile_seen > 0


def test_single_look_is_the_fixed_protocol() -> None:
    t = SequentialTest(LookSchedule.geometric(20, 20, 0.05))
    for k in range(21):
        res = run_sequential(t, lambda n, k=k: k)
        fixed = predict_and_bound([10, 3], [k, 20 - k], 0.05)
        assert res.p_lower == pytest.approx(fixed.p_lower, rel=1e-12, abs=1e-15)
        assert res.certified == (not fixed.abstained)
        assert (res.votes, res.looks, res.alpha_look, res.alpha_spent) == (20, 1, 0.05, 0.05)
        assert res.stop == ("target" if res.certified else "n_max")


# --------------------------------------------------------------------------------------------------
# validity: exact and Monte Carlo
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("first, n_max, growth", SCHEDULES)
@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_exact_false_bound_probability_at_most_alpha(first: int, n_max: int, growth: float, alpha: float) -> None:
    s = LookSchedule.geometric(first, n_max, alpha, growth)
    grid = list(np.linspace(0.02, 0.98, 25)) + [0.995, 0.999]
    for radius, omega in TARGETS:
        t = SequentialTest(s, radius, omega)
        ps = grid + [th + d for th in decision_thresholds(radius, omega) for d in (-0.01, -1e-3, 1e-3, 0.01)]
        for p in ps:
            oc = t.operating_characteristics(p)
            assert oc.false_bound <= alpha + 1e-12, (radius, omega, p, oc)
            assert sum(oc.stop_at) == pytest.approx(1.0, abs=1e-9)
            for th in decision_thresholds(radius, omega):  # a certificate at a threshold above the true share
                if p < th:
                    assert (oc.target_reached if th > 0.5 else oc.certified) <= alpha + 1e-12


def _simulate(t: SequentialTest, p: float, trials: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Vectorized sequential estimation of ``trials`` independent texts with true share ``p``.

    The stopping codes come from ``t.decide``; the reported bound is recomputed with scipy's Beta quantile at
    the stopping look, so the checked numbers do not come from the code under test.
    """
    s = t.schedule
    rounds = np.stack([rng.binomial(s.round_size(j), p, size=trials) for j in range(s.looks)], axis=1)
    cum = np.cumsum(rounds, axis=1)
    stop_look = np.full(trials, -1)
    bound = np.zeros(trials)
    for j, (n, a) in enumerate(zip(s.sizes, s.alphas)):
        ks = np.arange(n + 1)  # the rule and the bound as tables over the possible counts at this look
        code = t.decide(j, ks)[1][cum[:, j]]
        scipy_bound = np.concatenate([[0.0], beta_dist.ppf(a, ks[1:], n - ks[1:] + 1)])[cum[:, j]]
        now = (stop_look < 0) & (code != CONTINUE)
        stop_look[now] = j
        bound[now] = scipy_bound[now]
    assert np.all(stop_look >= 0)
    n = np.asarray(s.sizes)[stop_look]
    return {"bound": bound, "votes": n, "look": stop_look}


MC_TRIALS = 20_000


@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_monte_carlo_false_certificate_rate(alpha: float) -> None:
    """True shares 0.01 / 0.002 below and above every threshold: P(false certificate) <= alpha + 3 SE."""
    rng = np.random.default_rng(17 + int(alpha * 1000))
    se = math.sqrt(alpha * (1 - alpha) / MC_TRIALS)
    worst = 0.0
    for first, n_max, growth in SCHEDULES:
        s = LookSchedule.geometric(first, n_max, alpha, growth)
        for radius, omega in TARGETS:
            t = SequentialTest(s, radius, omega)
            for th in decision_thresholds(radius, omega):
                for d in (-0.01, -0.002, 0.002, 0.01):
                    p = th + d
                    sim = _simulate(t, p, MC_TRIALS, rng)
                    b = sim["bound"]
                    # false bound (any claim derived from it may be false) and false certificate at this threshold
                    false_bound = float(np.mean(b > p))
                    cert_here = b - (1.0 - omega**radius) > 0.5 if th > 0.5 else b > 0.5
                    false_cert = float(np.mean(cert_here)) if p < th else 0.0
                    for rate in (false_bound, false_cert):
                        assert rate <= alpha + 3 * se, (first, n_max, radius, omega, p, rate)
                    worst = max(worst, false_bound, false_cert)
                    # the simulation and the exact dynamic programme describe the same procedure
                    oc = t.operating_characteristics(p)
                    sd = math.sqrt(max(oc.false_bound * (1 - oc.false_bound), 1e-4) / MC_TRIALS)
                    assert abs(false_bound - oc.false_bound) <= 5 * sd, (p, false_bound, oc.false_bound)
                    assert abs(sim["votes"].mean() - oc.mean_votes) <= 0.05 * oc.mean_votes + 1
    print(f"\nMC false-certificate maximum at alpha={alpha}: {worst:.5f} (alpha + 3 SE = {alpha + 3 * se:.5f})")


# --------------------------------------------------------------------------------------------------
# early stopping, abstaining early, target radius
# --------------------------------------------------------------------------------------------------


def test_easy_input_stops_at_the_first_look() -> None:
    t = SequentialTest(LookSchedule.geometric(20, 320, 0.05))
    oc = t.operating_characteristics(0.99)
    assert oc.stop_at[0] > 0.99 and oc.mean_votes < 21
    res = run_sequential(t, lambda n: n)  # unanimous votes
    assert (res.votes, res.looks, res.stop, res.certified) == (20, 1, "target", True)
    assert res.alpha_look == pytest.approx(0.01) and res.alpha_spent == pytest.approx(0.01)
    assert res.p_lower == pytest.approx(0.01 ** (1 / 20), rel=1e-12)


def test_hopeless_input_abstains_early_and_curtailment_waits() -> None:
    s = LookSchedule.geometric(20, 320, 0.05)
    res = run_sequential(SequentialTest(s), lambda n: n // 4)  # a 25% share
    assert res.stop == "futile" and not res.certified and res.looks == 1 and res.votes == 20
    # exact curtailment never gives up while an outcome of the remaining votes could still certify
    res0 = run_sequential(SequentialTest(s, futility=0.0), lambda n: n // 4)
    assert res0.stop == "n_max" and res0.votes == 320 and not res0.certified
    # a tie-level share: futility saves votes on average against running to n_max
    assert SequentialTest(s).operating_characteristics(0.5).mean_votes < 0.5 * 320


def test_target_radius_keeps_voting_after_the_label_is_certified() -> None:
    radius, omega = 3, 0.85  # needs p_lower > 0.886; 20 votes at alpha / 5 give at most 0.01**(1/20) = 0.794
    t = SequentialTest(LookSchedule.geometric(20, 320, 0.05), radius, omega)
    assert target_threshold(radius, omega) > 0.01 ** (1 / 20)
    rng = np.random.default_rng(3)
    res = run_sequential(t, lambda n: int(rng.binomial(n, 0.97)))
    assert res.stop == "target" and res.target_reached and res.certified
    assert res.votes > 20
    assert certified_radius(res.p_lower, omega) >= radius
    # without the target, the same votes stop as soon as the label is certified
    no_target = SequentialTest(LookSchedule.geometric(20, 320, 0.05))
    assert no_target.operating_characteristics(0.95).mean_votes < t.operating_characteristics(0.95).mean_votes


def test_unreachable_target_falls_back_to_certifying_the_label() -> None:
    # omega**r = 0.25 < 0.5: no bound below 1 certifies 2 tokens, so the target is futile from the start
    t = SequentialTest(LookSchedule.geometric(20, 320, 0.05), target_radius=2, omega=0.5)
    assert target_threshold(2, 0.5) >= 1.0
    res = run_sequential(t, lambda n: n)
    assert (res.stop, res.certified, res.target_reached, res.looks) == ("futile", True, False, 1)
    # not yet certified: it keeps voting for the label (a 70% share certifies with more votes)
    res = run_sequential(t, lambda n: (7 * n) // 10)
    assert res.certified and res.looks > 1 and res.stop == "futile"


def test_state_machine_matches_the_vectorized_rule() -> None:
    """Batched use: many texts' states, each asked for its next round; same outcome as decide() per look."""
    rng = np.random.default_rng(5)
    t = SequentialTest(LookSchedule.geometric(20, 160, 0.05), 1, 0.72)
    s = t.schedule
    shares = rng.uniform(0.3, 1.0, size=300)
    rounds = np.stack([rng.binomial(s.round_size(j), shares) for j in range(s.looks)], axis=1)
    states = [SequentialEstimate(t) for _ in shares]
    look = 0
    while any(not e.done for e in states):
        for i, e in enumerate(states):
            n = e.next_round_size()
            if n:
                e.update(int(rounds[i, look]), n)
        look += 1
    cum = np.cumsum(rounds, axis=1)
    for i, e in enumerate(states):
        r = e.result()
        for j in range(r.looks):
            bound, code = t.decide(j, int(cum[i, j]))
            assert (code != CONTINUE) == (j == r.looks - 1)
        assert r.successes == cum[i, r.looks - 1] and r.votes == s.sizes[r.looks - 1]
        assert r.p_lower == pytest.approx(float(bound), rel=1e-15)
        assert r.alpha_spent == pytest.approx(sum(s.alphas[: r.looks]), rel=1e-12)
        assert r.alpha_spent <= s.alpha + 1e-15


def test_selected_class() -> None:
    assert selected_class([3, 7]) == 1
    assert selected_class([5, 5, 2]) == 0  # ties to the smallest index, as predict_and_bound
    for bad in ([], [0, 0], [-1, 3], [1.5, 2]):
        with pytest.raises(ConfigError):
            selected_class(bad)


def test_monte_carlo_check_catches_naive_repeated_looks() -> None:
    """The validity check has teeth: testing every look at the full alpha (no split) breaks the guarantee."""
    alpha = 0.05
    s = LookSchedule.geometric(20, 320, alpha)
    naive = SequentialTest(LookSchedule(s.sizes, (alpha,) * s.looks))
    sim = _simulate(naive, 0.498, MC_TRIALS, np.random.default_rng(1))
    rate = float(np.mean(sim["bound"] > 0.5))
    assert rate > alpha + 3 * math.sqrt(alpha * (1 - alpha) / MC_TRIALS)
    split = _simulate(SequentialTest(s), 0.498, MC_TRIALS, np.random.default_rng(1))
    assert float(np.mean(split["bound"] > 0.5)) <= alpha
