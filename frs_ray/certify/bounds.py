"""Certification bounds of Fuzzed Randomized Smoothing (He et al., ICLR 2025, Section 4.4).

Pure numpy/scipy: no model is involved here, only vote counts and probabilities.

* :func:`clopper_pearson_lower` -- Theorem 1's ``p_{y*}(x') = Beta(alpha; K_{y*}, K - K_{y*} + 1)``.
* :func:`robustness_condition` -- Eq. 16 with Eq. 17: ``p_lower - beta * (1 - omega**r) > 0.5``.
* :func:`certified_radius` -- the largest trigger length ``r = R_r * L`` (in tokens) meeting Eq. 16-17.
* :func:`radius_gain` -- Eq. 18 (Corollary 1): ``R_new / R_old = log(omega_M) / log(omega_H)``.
* :func:`majority_vote` -- the smoothed classifier's prediction: the class most of the K voters vote for.
* :func:`predict_and_bound` -- Cohen et al. (2019)'s CERTIFY protocol: the class is selected on one vote
  sample and its probability bounded on a second, independent one; abstain when the bound is <= 0.5.

Which ``omega`` to pass matters: ``omega_H`` (the randomization probability inside the spans the fuzzing
found) gives Corollary 1's larger radius, which holds only if the trigger lies inside those spans
(a conditional certificate); ``omega_L`` (outside the spans) gives a certificate that holds wherever the
trigger is (unconditional). This module computes either; the caller labels which one it reports.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scipy.special import betaincinv

from frs_ray.certify.certificate import ABSTAIN
from frs_ray.errors import ConfigError

__all__ = [
    "majority_vote",
    "SmoothedDecision",
    "certified_radius",
    "clopper_pearson_lower",
    "predict_and_bound",
    "radius_gain",
    "robustness_condition",
]

# --------------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------------


def _as_int(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None


def _as_float(name: str, value: object) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    return out


def _check_alpha(alpha: object) -> float:
    a = _as_float("alpha", alpha)
    if not 0.0 < a < 1.0:  # also rejects NaN
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha!r}")
    return a


def _check_unit(name: str, value: object) -> float:
    v = _as_float(name, value)
    if not 0.0 <= v <= 1.0:  # also rejects NaN
        raise ConfigError(f"{name} must lie in [0, 1], got {value!r}")
    return v


def _check_beta(beta: object) -> float:
    b = _as_float("beta", beta)
    if not (b > 0.0 and math.isfinite(b)):
        raise ConfigError(f"beta must be a finite number > 0, got {beta!r}")
    return b


def _check_counts(name: str, counts: Sequence[int]) -> list[int]:
    try:
        items = list(counts)
    except TypeError:
        raise ConfigError(f"{name} must be a sequence of integers, got {counts!r}") from None
    out = [_as_int(f"{name}[{i}]", c) for i, c in enumerate(items)]
    for i, c in enumerate(out):
        if c < 0:
            raise ConfigError(f"{name}[{i}] must be >= 0, got {c}")
    return out


# --------------------------------------------------------------------------------------------------
# Theorem 1: the Clopper-Pearson lower bound p_{y*}
# --------------------------------------------------------------------------------------------------


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided ``(1 - alpha)`` Clopper-Pearson lower confidence bound on a binomial proportion.

    Theorem 1 of the FRS paper: ``p_{y*}(x') = Beta(alpha; K_{y*}, K - K_{y*} + 1)``, the ``alpha``
    quantile of a Beta distribution, where ``K_{y*}`` (``successes``) is the vote count of class ``y*``
    among ``K`` (``trials``) voters. With probability at least ``1 - alpha`` over the votes, the true
    proportion is at least the returned value. Returns ``0.0`` when ``successes == 0``; equals
    ``alpha ** (1 / n)`` when ``successes == trials == n``.

    Raises :class:`ConfigError` unless ``trials >= 1``, ``0 <= successes <= trials`` and ``0 < alpha < 1``.
    """
    k = _as_int("successes", successes)
    n = _as_int("trials", trials)
    a = _check_alpha(alpha)
    if n < 1:
        raise ConfigError(f"trials must be >= 1, got {n}")
    if not 0 <= k <= n:
        raise ConfigError(f"successes must lie in [0, trials={n}], got {k}")
    if k == 0:
        return 0.0
    # scipy.special.betaincinv(a, b, q) is scipy.stats.beta.ppf(q, a, b) without the distribution overhead.
    return float(betaincinv(k, n - k + 1, a))


# --------------------------------------------------------------------------------------------------
# Theorem 1: the robustness condition (Eq. 16-17) and the certified radius
# --------------------------------------------------------------------------------------------------


def _condition(p_lower: float, omega: float, r: int, beta: float) -> bool:
    # Eq. 17: Delta = 1 - omega**(R_r L); Eq. 16: p_{y*} - beta * Delta > 0.5.  (0.0**0 == 1.0 in Python.)
    return p_lower - beta * (1.0 - omega**r) > 0.5


def robustness_condition(p_lower: float, omega: float, r: int, beta: float = 1.0) -> bool:
    """Theorem 1, Eq. 16 with Eq. 17: is ``p_lower - beta * (1 - omega**r) > 0.5``?

    ``p_lower`` is the bound ``p_{y*}(x')`` of :func:`clopper_pearson_lower`, ``omega`` the probability that a
    token of the trigger segment is randomized, ``r = R_r * L`` the trigger length in tokens, so that
    ``Delta = 1 - omega**r`` (Eq. 17) bounds the probability that the trigger is not completely randomized.
    ``beta = 1`` when the model is fine-tuned to convergence. When true, the smoothed prediction is ``y*``
    for every input with a trigger of at most ``r`` tokens, with probability at least ``1 - alpha``.

    Raises :class:`ConfigError` for ``p_lower`` or ``omega`` outside ``[0, 1]``, ``r < 0`` or ``beta <= 0``.
    """
    p = _check_unit("p_lower", p_lower)
    w = _check_unit("omega", omega)
    rr = _as_int("r", r)
    if rr < 0:
        raise ConfigError(f"r must be >= 0, got {rr}")
    b = _check_beta(beta)
    return _condition(p, w, rr, b)


def _largest_true(cond: Callable[[int], bool], guess: int, cap: int) -> int:
    """Largest ``r`` in ``[0, cap]`` with ``cond(r)``, for ``cond`` non-increasing in ``r`` and ``cond(0)`` true.

    Gallops from ``guess`` to bracket the boundary, then bisects: exact whatever the guess, and a handful of
    evaluations when the guess is off by one or two (floating-point rounding of the closed form).
    """
    g = min(max(guess, 0), cap)
    if cond(g):
        lo, step = g, 1  # lo: known true
        while True:
            probe = lo + step
            if probe > cap:
                hi = cap + 1
                break
            if cond(probe):
                lo, step = probe, step * 2
            else:
                hi = probe
                break
    else:
        hi, step = g, 1  # hi: known false
        while True:
            probe = hi - step
            if probe <= 0:
                lo = 0
                break
            if cond(probe):
                lo = probe
                break
            hi, step = probe, step * 2
    while hi - lo > 1:  # invariant: cond(lo) true, cond(hi) false or hi == cap + 1
        mid = (lo + hi) // 2
        if cond(mid):
            lo = mid
        else:
            hi = mid
    return lo


def certified_radius(p_lower: float, omega: float, beta: float = 1.0, max_tokens: int | None = None) -> int:
    """Certified trigger length of Theorem 1: the largest integer ``r >= 0`` meeting Eq. 16-17.

    ``r = R_r * L`` counts tokens. Returns ``-1`` when even ``r = 0`` fails (``p_lower <= 0.5``: the input
    is not certified at all). Otherwise, for ``0 < omega < 1``, Eq. 16-17 are equivalent to
    ``omega**r > 1 - (p_lower - 0.5) / beta`` and, with ``beta = 1``, to the closed form
    ``r < log(1.5 - p_lower) / log(omega)`` (the same shape as CERT-ED's edit-distance radius). The closed form
    gives a candidate that is then moved to the exact boundary of :func:`robustness_condition`, so the result
    equals a brute-force search over ``r`` evaluated in floating point.

    ``max_tokens`` (the text length) caps the radius when given: a trigger cannot be longer than the text.
    Edge cases:

    * ``omega == 0``: only ``r = 0`` can hold (``0**0 == 1``, ``0**r == 0``) unless ``p_lower - beta > 0.5``.
    * unbounded radius -- ``omega == 1`` (the segment is always fully randomized) or ``p_lower - beta > 0.5``
      (even ``Delta = 1`` cannot break Eq. 16; possible only for ``beta < 0.5``): the radius is
      ``max_tokens``, and :class:`ConfigError` is raised when ``max_tokens`` is None. (At exactly
      ``p_lower - beta == 0.5`` the real-valued radius is infinite but the floating-point condition fails once
      ``omega**r`` rounds away; the finite floating-point answer is returned, as a brute force would.)

    Raises :class:`ConfigError` for ``p_lower`` or ``omega`` outside ``[0, 1]``, ``beta <= 0``,
    ``max_tokens < 0``, or an unbounded radius without ``max_tokens``.
    """
    p = _check_unit("p_lower", p_lower)
    w = _check_unit("omega", omega)
    b = _check_beta(beta)
    cap: int | None = None
    if max_tokens is not None:
        cap = _as_int("max_tokens", max_tokens)
        if cap < 0:
            raise ConfigError(f"max_tokens must be >= 0, got {cap}")

    def cond(r: int) -> bool:
        return _condition(p, w, r, b)

    if not cond(0):
        return -1

    # Float-exact limit r -> infinity: omega**r is 1.0 for omega == 1 and reaches 0.0 (underflow) otherwise;
    # the condition is non-increasing in r, so the radius is unbounded iff it holds in the limit.
    unbounded = w == 1.0 or _condition(p, 0.0, 1, b)
    if unbounded:
        if cap is None:
            raise ConfigError(
                f"certified radius is unbounded for omega={omega!r}, p_lower={p_lower!r}, beta={beta!r}; "
                "pass max_tokens (the text length) to cap it"
            )
        return cap

    # Eq. 16-17 as omega**r > threshold.
    threshold = 1.0 - (p - 0.5) / b
    if w == 0.0 or not 0.0 < threshold < 1.0:
        guess = 0  # omega == 0: only r = 0; threshold <= 0 only at the float edge p - beta == 0.5
    else:
        # 0 < omega < 1 and 0 < threshold < 1: r < log(threshold) / log(omega); largest such integer.
        guess = math.ceil(math.log(threshold) / math.log(w)) - 1
    if cap is None:
        # Bounded: the condition fails in the limit, so some finite r fails; double until one does.
        search_cap = max(guess, 0) * 2 + 64
        while cond(search_cap):
            search_cap *= 2
        return _largest_true(cond, guess, search_cap)
    return _largest_true(cond, guess, cap)


# --------------------------------------------------------------------------------------------------
# Corollary 1: the radius gain
# --------------------------------------------------------------------------------------------------


def radius_gain(omega_m: float, omega_h: float) -> float:
    """Eq. 18 (Corollary 1): ``R_new / R_old = log(omega_M) / log(omega_H)``.

    For the same ``p_{y*}`` and ``beta``, the radius of Eq. 16-17 is proportional to ``1 / log(omega)``, so
    randomizing the found vulnerable span with ``omega_H`` instead of the uniform ``omega_M`` multiplies the
    (real-valued) radius by this factor; it exceeds 1 when ``omega_M < omega_H``. Integer radii from
    :func:`certified_radius` follow it only asymptotically (large radii), because of the floor. The larger
    radius is a conditional certificate: it holds when the trigger lies inside the found span.

    Raises :class:`ConfigError` unless both omegas lie strictly inside ``(0, 1)`` (at 0 or 1 a radius is
    zero or unbounded and the ratio is undefined).
    """
    wm = _as_float("omega_m", omega_m)
    wh = _as_float("omega_h", omega_h)
    if not 0.0 < wm < 1.0:
        raise ConfigError(f"omega_m must lie in (0, 1), got {omega_m!r}")
    if not 0.0 < wh < 1.0:
        raise ConfigError(f"omega_h must lie in (0, 1), got {omega_h!r}")
    return math.log(wm) / math.log(wh)


def majority_vote(counts: Sequence[int]) -> int:
    """The smoothed classifier's prediction: the class with the most votes (Sec. 4.3.2 Step 5, "model
    predictions and majority vote"; Theorem 1's ``K_{y*}`` is that class's count among the voters).

    This is the label the paper's CA / PA / ASR are computed on (Appendix B.1: ``f(x)`` is the model's
    prediction). It carries no guarantee by itself: the certificate is :func:`predict_and_bound`, which may
    abstain where the majority is too narrow. Decision: an exact tie between the top classes is no majority
    and returns ``ABSTAIN`` (breaking it towards a fixed class would favour or hurt one label, e.g. the
    attacker's target). Raises :class:`ConfigError` for negative counts or an all-zero / empty list.
    """
    c = _check_counts("counts", counts)
    if not c or sum(c) < 1:
        raise ConfigError(f"counts must name at least one class and total >= 1, got {list(counts)}")
    top = max(c)
    return ABSTAIN if c.count(top) > 1 else c.index(top)


# --------------------------------------------------------------------------------------------------
# Cohen et al. (2019) CERTIFY: selection and estimation on independent samples
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmoothedDecision:
    """Outcome of :func:`predict_and_bound` for one input."""

    label: int  # ABSTAIN or the selected class
    p_lower: float  # Clopper-Pearson lower bound of the selected class's probability (estimation sample)
    abstained: bool  # True when p_lower <= 0.5
    counts: list[int]  # estimation votes per class


def predict_and_bound(select_counts: Sequence[int], estimate_counts: Sequence[int], alpha: float) -> SmoothedDecision:
    """Cohen et al. (2019)'s CERTIFY protocol, giving Theorem 1's ``y*`` and ``p_{y*}``.

    The class is chosen from the SELECTION sample only (argmax of ``select_counts``, ties to the smallest
    index); ``p_lower`` is the :func:`clopper_pearson_lower` bound, at level ``alpha``, of that class's count in
    the INDEPENDENT estimation sample ``estimate_counts``. Because the choice does not depend on the
    estimation votes, ``p_lower`` exceeds the chosen class's true probability with probability at most
    ``alpha`` (reusing one vote set for both would bias it upward). Abstains (``label = ABSTAIN``) when
    ``p_lower <= 0.5``; then ``p_lower`` is still reported.

    Raises :class:`ConfigError` for lists of different or zero length, negative counts, an empty selection
    sample, an estimation total below 1, or ``alpha`` outside ``(0, 1)``.
    """
    sel = _check_counts("select_counts", select_counts)
    est = _check_counts("estimate_counts", estimate_counts)
    a = _check_alpha(alpha)
    if len(sel) != len(est):
        raise ConfigError(f"select_counts and estimate_counts must have the same length, got {len(sel)} and {len(est)}")
    if not sel:
        raise ConfigError("select_counts must name at least one class, got an empty sequence")
    if sum(sel) < 1:
        raise ConfigError(f"select_counts must total >= 1 (the selection sample), got {sel}")
    n = sum(est)
    if n < 1:
        raise ConfigError(f"estimate_counts must total >= 1 (the estimation sample), got {est}")
    chosen = max(range(len(sel)), key=lambda i: (sel[i], -i))  # argmax, ties -> smallest index
    p = clopper_pearson_lower(est[chosen], n, a)
    abstained = not p > 0.5
    return SmoothedDecision(label=ABSTAIN if abstained else chosen, p_lower=p, abstained=abstained, counts=est)
