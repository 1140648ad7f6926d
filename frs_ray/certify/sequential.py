"""Sequential CERTIFY estimation: estimation votes in rounds, alpha split over a fixed schedule of looks.

Pure numpy/scipy; no model is involved, only vote counts of the class chosen by the selection sample.

Setting. Cohen et al. (2019)'s CERTIFY chooses the class ``c`` on ``n_select`` votes and bounds ``p_c`` on an
independent estimation sample (:func:`frs_ray.certify.bounds.predict_and_bound`). Here the estimation sample
arrives in rounds: at look ``j = 1..J`` the cumulative number of estimation votes is ``n_j`` (a schedule fixed
before any vote is seen, e.g. 20, 40, 80, ..., ``n_max``), ``k_j`` of them for ``c``, and the bound of that look
is the one-sided Clopper-Pearson bound ``L_j = Beta(alpha_j; k_j, n_j - k_j + 1)`` at level ``alpha_j``, with
``alpha_1 + ... + alpha_J = alpha`` (default: the equal split ``alpha / J``). After each look a stopping rule
(:meth:`SequentialTest.decide`) either stops or asks for the next round; the procedure reports the bound ``L_T``
of the look ``T`` it stopped at.

Guarantee. ``P(L_T > p_c) <= alpha`` for any stopping rule, so every claim derived from ``L_T`` -- the label is
certified (``L_T > 0.5``), the certified radius of Theorem 1 (a non-decreasing function of the bound) -- holds
with probability at least ``1 - alpha``, for the selected class, exactly as for the fixed protocol.

Argument (Bonferroni over a fixed schedule of looks: the simplest alpha-spending function of group-sequential
testing, Lan & DeMets 1983, "Discrete sequential boundaries for clinical trials", Biometrika 70; Jennison &
Turnbull 2000, "Group Sequential Methods with Applications to Clinical Trials"). The selection
votes are independent of the estimation votes, so conditionally on the chosen class ``c`` the estimation votes
are i.i.d. Bernoulli(``p_c``) (``frs_ray.certify.smooth``: every vote draws its voter and its randomization
afresh) and ``k_j ~ Binomial(n_j, p_c)`` for each FIXED ``j``. At a fixed sample size the Clopper-Pearson bound
is valid from the exact binomial tail: ``P(L_j > p_c) <= alpha_j`` (Clopper & Pearson 1934). Whatever ``T`` is, the event
``{L_T > p_c}`` lies inside ``{L_1 > p_c} u ... u {L_J > p_c}``, because ``T`` takes one of the values 1..J;
the union bound gives ``P(L_T > p_c) <= alpha_1 + ... + alpha_J = alpha``. Nothing about the stopping rule is
used, so stopping early because the target is reached, giving up because it looks unreachable, or any other
data-dependent rule keeps the guarantee; only the schedule ``(n_j, alpha_j)`` must be fixed in advance (it is:
:class:`LookSchedule` depends on the configuration only, never on votes). This holds for whichever class ``c``
the selection picked, so a wrongly selected class is covered too. An anytime-valid confidence sequence (e.g. Howard
et al. 2021, "Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist. 49) would allow looks
at any time; with a handful of looks fixed in advance, the Bonferroni split is simple and typically tighter.

Stopping rule (:meth:`SequentialTest.decide`), which affects cost and power, never validity. The TARGET of a
text is the smallest bound that certifies the requested radius ``r`` tokens under Theorem 1 with per-token
destruction probability ``w`` (``omega * d`` of ``frs_ray.certify.smooth``): ``L - (1 - w**r) > 0.5``; with no
requested radius (``r = 0``) it is ``L > 0.5``. At look ``j``:

1. stop (``"target"``) when ``L_j`` clears the target;
2. stop (``"n_max"``) at the last look;
3. stop (``"futile"``) when the target looks unreachable within ``n_max`` and either the label is already
   certified (``L_j > 0.5``: a smaller radius is returned) or certifying the label looks unreachable as well
   (abstain early). "Looks unreachable" for a threshold: even if the class's share were the one-sided
   Clopper-Pearson UPPER bound ``U_j`` at level ``futility`` of the votes so far, and the remaining
   ``n_max - n_j`` votes came in at that share, the last look's bound would not clear it. ``futility = 0``
   makes ``U_j = 1``: curtailment (stop only when no outcome of the remaining votes could clear it at the last
   look, which with equal levels is the best any later look can give).
   The upper bound spends none of ``alpha``: abstaining, or returning a smaller radius, is never a false
   certificate; a larger ``futility`` saves votes on hopeless inputs and loses some power near the threshold.
4. otherwise ask for the next round.

With one look (``n_max`` equal to the first round) this is exactly the fixed protocol of ``predict_and_bound``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import betaincinv
from scipy.stats import binom

from frs_ray.certify.bounds import _as_float, _as_int, _check_alpha
from frs_ray.errors import ConfigError
from frs_ray.looks import MAX_LOOKS, geometric_sizes

__all__ = [
    "decision_thresholds",
    "CONTINUE",
    "FUTILE",
    "N_MAX",
    "STOP_REASONS",
    "TARGET",
    "MAX_LOOKS",
    "LookSchedule",
    "OperatingCharacteristics",
    "SequentialEstimate",
    "SequentialResult",
    "SequentialTest",
    "cp_lower",
    "cp_upper",
    "run_sequential",
    "selected_class",
    "target_threshold",
]

CONTINUE, TARGET, FUTILE, N_MAX = 0, 1, 2, 3
"""Codes of :meth:`SequentialTest.decide`: ask for the next round, or stop for one of three reasons."""
STOP_REASONS: dict[int, str] = {TARGET: "target", FUTILE: "futile", N_MAX: "n_max"}


# --------------------------------------------------------------------------------------------------
# vectorized Clopper-Pearson bounds
# --------------------------------------------------------------------------------------------------


def cp_lower(successes: np.ndarray | float, trials: np.ndarray | float, alpha: float) -> np.ndarray:
    """One-sided ``(1 - alpha)`` Clopper-Pearson lower bound ``Beta(alpha; k, n - k + 1)``, elementwise.

    Equals :func:`frs_ray.certify.bounds.clopper_pearson_lower` on integers (0 where ``k == 0``); real-valued
    ``k`` in ``[0, n]`` give the continuous extension (used for the projected bound of the futility rule), which
    is increasing in ``k``. No argument checks: callers validate.
    """
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    pos = k > 0
    safe_k = np.where(pos, k, 1.0)
    return np.where(pos, betaincinv(safe_k, n - safe_k + 1.0, alpha), 0.0)


def cp_upper(successes: np.ndarray | float, trials: np.ndarray | float, level: float) -> np.ndarray:
    """One-sided ``(1 - level)`` Clopper-Pearson upper bound ``Beta(1 - level; k + 1, n - k)``, elementwise.

    1 where ``k == n``; 1 everywhere for ``level == 0``. ``P(p > U) <= level`` at a fixed ``n``.
    """
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    if level <= 0.0:
        return np.ones(np.broadcast(k, n).shape)
    below = k < n
    safe_b = np.where(below, n - k, 1.0)
    return np.where(below, betaincinv(k + 1.0, safe_b, 1.0 - level), 1.0)


def target_threshold(radius: int, omega: float) -> float:
    """``0.5 + (1 - omega**radius)``: a bound above it certifies ``radius`` tokens (Theorem 1, beta = 1).

    ``omega`` is the per-token destruction probability (``omega * d``). A value >= 1 means the radius can never
    be certified (a Clopper-Pearson bound is below 1). :meth:`SequentialTest.clears` uses the floating-point
    form of :func:`frs_ray.certify.bounds.certified_radius` itself; this number is for reporting and tests.
    """
    r = _as_int("radius", radius)
    w = _as_float("omega", omega)
    if r < 0:
        raise ConfigError(f"radius must be >= 0, got {r}")
    if not 0.0 <= w <= 1.0:
        raise ConfigError(f"omega must lie in [0, 1], got {omega!r}")
    return 0.5 + (1.0 - w**r)


# --------------------------------------------------------------------------------------------------
# the schedule of looks
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LookSchedule:
    """Cumulative estimation votes ``sizes[j]`` at each look and the level ``alphas[j]`` of its bound.

    Fixed before any vote is drawn; the overall error of :class:`SequentialTest` is ``sum(alphas)``
    (:attr:`alpha`). Raises :class:`ConfigError` unless sizes are strictly increasing integers >= 1, there are
    as many positive levels as sizes, at most :data:`MAX_LOOKS` looks, and ``0 < sum(alphas) < 1``.
    """

    sizes: tuple[int, ...]
    alphas: tuple[float, ...]

    def __post_init__(self) -> None:
        sizes = tuple(_as_int(f"sizes[{i}]", s) for i, s in enumerate(self.sizes))
        alphas = tuple(_as_float(f"alphas[{i}]", a) for i, a in enumerate(self.alphas))
        if not sizes:
            raise ConfigError("a look schedule needs at least one look")
        if len(sizes) != len(alphas):
            raise ConfigError(f"sizes and alphas must have the same length, got {len(sizes)} and {len(alphas)}")
        if len(sizes) > MAX_LOOKS:
            raise ConfigError(f"a look schedule may have at most {MAX_LOOKS} looks, got {len(sizes)}")
        if sizes[0] < 1 or any(b <= a for a, b in zip(sizes, sizes[1:])):
            raise ConfigError(f"look sizes must be strictly increasing integers >= 1, got {list(sizes)}")
        if not all(a > 0.0 and math.isfinite(a) for a in alphas):
            raise ConfigError(f"every look's alpha must be > 0, got {list(alphas)}")
        _check_alpha(sum(alphas))
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "alphas", alphas)

    @classmethod
    def geometric(cls, first: int, n_max: int, alpha: float, growth: float = 2.0) -> "LookSchedule":
        """Looks at ``first, ceil(first * growth), ...`` cumulative votes, the last one at exactly ``n_max``
        (the first size >= ``n_max`` is replaced by ``n_max``), with alpha split equally: ``alpha / J`` each.

        ``n_max == first`` gives one look at level ``alpha``: the fixed protocol. Raises :class:`ConfigError`
        for ``first < 1``, ``n_max < first``, ``growth <= 1`` or non-finite, more than :data:`MAX_LOOKS` looks,
        or ``alpha`` outside ``(0, 1)``.
        """
        f = _as_int("first", first)
        m = _as_int("n_max", n_max)
        g = _as_float("growth", growth)
        a = _check_alpha(alpha)
        sizes = geometric_sizes(f, m, g)
        return cls(tuple(sizes), tuple([a / len(sizes)] * len(sizes)))

    @classmethod
    def of(cls, config) -> "LookSchedule | None":
        """The schedule a :class:`~frs_ray.config.CertifyConfig` asks for: estimation rounds from ``n_estimate`` up
        to ``n_max`` growing by ``round_growth``, alpha split equally; None for the fixed protocol (``n_max``
        unset)."""
        if config.n_max is None:
            return None
        return cls.geometric(config.votes_estimate, config.n_max, config.alpha, config.round_growth)

    @property
    def looks(self) -> int:
        return len(self.sizes)

    @property
    def n_max(self) -> int:
        return self.sizes[-1]

    @property
    def alpha(self) -> float:
        """The overall error budget: the sum of the looks' levels."""
        return float(sum(self.alphas))

    def round_size(self, look: int) -> int:
        """Votes drawn for look ``look`` (0-based): ``sizes[0]`` first, then the differences."""
        return self.sizes[look] - (self.sizes[look - 1] if look > 0 else 0)


# --------------------------------------------------------------------------------------------------
# the stopping rule
# --------------------------------------------------------------------------------------------------


class SequentialTest:
    """A schedule plus one text's target: the per-look bound and the stopping rule of the module docstring.

    ``target_radius`` tokens at per-token destruction probability ``omega`` (``omega * d``); ``0`` asks only
    for a certified label. ``futility`` is the level of the upper bound of the futility rule (0: exact
    curtailment). :meth:`decide` is vectorized over the cumulative count, so the same rule drives
    :class:`SequentialEstimate`, simulations and the exact :meth:`operating_characteristics`.

    Raises :class:`ConfigError` for ``target_radius < 0``, ``omega`` outside ``[0, 1]`` or ``futility``
    outside ``[0, 1)``.
    """

    def __init__(self, schedule: LookSchedule, target_radius: int = 0, omega: float = 1.0, futility: float = 0.05) -> None:
        if not isinstance(schedule, LookSchedule):
            raise ConfigError(f"schedule must be a LookSchedule, got {schedule!r}")
        r = _as_int("target_radius", target_radius)
        w = _as_float("omega", omega)
        g = _as_float("futility", futility)
        if r < 0:
            raise ConfigError(f"target_radius must be >= 0, got {r}")
        if not 0.0 <= w <= 1.0:
            raise ConfigError(f"omega must lie in [0, 1], got {omega!r}")
        if not 0.0 <= g < 1.0:
            raise ConfigError(f"futility must lie in [0, 1), got {futility!r}")
        self.schedule, self.target_radius, self.omega, self.futility = schedule, r, w, g
        self._delta = 1.0 - w**r  # Eq. 17's Delta for the target (0.0**0 == 1.0)

    def clears(self, p_lower: np.ndarray | float) -> np.ndarray:
        """Does the bound certify the target radius? ``p - (1 - omega**r) > 0.5``, the float form of
        :func:`frs_ray.certify.bounds.robustness_condition` (so it agrees with ``certified_radius``)."""
        return np.asarray(p_lower, dtype=float) - self._delta > 0.5

    def bound(self, look: int, successes: np.ndarray | int) -> np.ndarray:
        """Look ``look``'s (0-based) lower bound on the selected class's probability, at level ``alphas[look]``."""
        s = self.schedule
        return cp_lower(successes, s.sizes[look], s.alphas[look])

    def _projected(self, look: int, k: np.ndarray) -> np.ndarray:
        # The last look's bound if the remaining votes came in at the upper bound U_j of the share.
        s = self.schedule
        n, m = s.sizes[look], s.n_max
        u = cp_upper(k, n, self.futility)
        return cp_lower(np.minimum(k + u * (m - n), m), m, s.alphas[-1])

    def decide(self, look: int, successes: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """(bound, code) at look ``look`` (0-based) for cumulative counts ``successes`` of the selected class
        among ``sizes[look]`` votes; code is :data:`CONTINUE`, :data:`TARGET`, :data:`FUTILE` or :data:`N_MAX`
        (the rule of the module docstring). Elementwise over ``successes``; no argument checks (see
        :class:`SequentialEstimate` for the checked, stateful interface)."""
        k = np.asarray(successes, dtype=float)
        p = self.bound(look, k)
        code = np.full(k.shape, CONTINUE, dtype=np.int8)
        last = look == self.schedule.looks - 1
        reached = self.clears(p)
        if last:
            code[...] = N_MAX
            code[reached] = TARGET
            return p, code
        proj = self._projected(look, k)
        target_futile = ~self.clears(proj)
        label_settled = (p > 0.5) | ~(proj > 0.5)  # certified already, or certifying looks unreachable too
        code[target_futile & label_settled] = FUTILE
        code[reached] = TARGET
        return p, code

    def operating_characteristics(self, p: float) -> "OperatingCharacteristics":
        """Exact probabilities of the procedure when the selected class's true share is ``p``.

        Dynamic programming over the looks: the distribution of the cumulative count among paths still running
        is convolved with each round's Binomial(round size, ``p``) pmf, and the mass that stops at each look
        is split by outcome. O(n_max^2) operations; meant for checks and for choosing defaults.
        """
        q = _as_float("p", p)
        if not 0.0 <= q <= 1.0:
            raise ConfigError(f"p must lie in [0, 1], got {p!r}")
        s = self.schedule
        running = np.ones(1)  # P(count = k and still running), k = 0..n_{j-1}
        certified = reached = false_bound = votes = 0.0
        stop_at = np.zeros(s.looks)
        for j in range(s.looks):
            m = s.round_size(j)
            running = np.convolve(running, binom.pmf(np.arange(m + 1), m, q))
            ks = np.arange(s.sizes[j] + 1)
            bound, code = self.decide(j, ks)
            stop = code != CONTINUE
            mass = np.where(stop, running, 0.0)
            stop_at[j] = mass.sum()
            certified += mass[bound > 0.5].sum()
            reached += mass[self.clears(bound)].sum()
            false_bound += mass[bound > q].sum()
            votes += stop_at[j] * s.sizes[j]
            running = np.where(stop, 0.0, running)
        return OperatingCharacteristics(
            q, float(certified), float(reached), float(false_bound), float(votes), tuple(float(x) for x in stop_at)
        )


@dataclass(frozen=True)
class OperatingCharacteristics:
    """Exact behaviour of a :class:`SequentialTest` at true share ``p`` (from ``operating_characteristics``)."""

    p: float
    certified: float  # P(final bound > 0.5): the label is certified
    target_reached: float  # P(final bound clears the target)
    false_bound: float  # P(final bound > p): a false certificate; <= alpha by the module's argument
    mean_votes: float  # expected estimation votes spent
    stop_at: tuple[float, ...]  # P(stopping at look j)


# --------------------------------------------------------------------------------------------------
# the state machine one text's estimation goes through
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SequentialResult:
    """One text's sequential estimation: the last look's bound and what it cost."""

    successes: int  # estimation votes for the selected class
    votes: int  # estimation votes spent (n_T)
    looks: int  # looks made (T)
    p_lower: float  # the bound of look T, at level alpha_look; P(p_lower > p_c) <= schedule.alpha overall
    alpha_look: float  # level of look T's bound (alpha_T)
    alpha_spent: float  # alpha_1 + ... + alpha_T: the budget the looks made so far were allotted
    certified: bool  # p_lower > 0.5
    target_reached: bool  # p_lower clears the target radius
    stop: str  # "target", "futile" or "n_max"


class SequentialEstimate:
    """State machine of one text's estimation votes: ask :meth:`next_round_size`, draw that many votes,
    pass the selected class's count to :meth:`update`; when :attr:`done`, read :meth:`result`.

    Built for batching: a caller holding many texts' states collects every unfinished state's next round
    into one voter call and feeds each its count. The schedule never depends on the votes, which is what the
    guarantee needs (module docstring).
    """

    def __init__(self, test: SequentialTest) -> None:
        if not isinstance(test, SequentialTest):
            raise ConfigError(f"test must be a SequentialTest, got {test!r}")
        self.test = test
        self._look = 0  # looks made
        self._successes = 0
        self._last: tuple[float, int] | None = None  # (bound, code) of the last look

    @property
    def done(self) -> bool:
        return self._last is not None and self._last[1] != CONTINUE

    @property
    def looks(self) -> int:
        """Looks made so far (the 0-based index of the next look)."""
        return self._look

    def next_round_size(self) -> int:
        """Votes the next look needs; 0 once done."""
        return 0 if self.done else self.test.schedule.round_size(self._look)

    def update(self, successes: int, trials: int) -> bool:
        """Add a round: ``successes`` votes for the selected class among ``trials`` new votes, where ``trials``
        must equal :meth:`next_round_size`. Returns :attr:`done`. Raises :class:`ConfigError` once done, for a
        round of the wrong size, or for ``successes`` outside ``[0, trials]``."""
        want = self.next_round_size()
        if want == 0:
            raise ConfigError("this estimation is finished; no more rounds are accepted")
        n = _as_int("trials", trials)
        k = _as_int("successes", successes)
        if n != want:
            raise ConfigError(f"look {self._look + 1} needs a round of exactly {want} votes, got {n}")
        if not 0 <= k <= n:
            raise ConfigError(f"successes must lie in [0, trials={n}], got {k}")
        self._successes += k
        bound, code = self.test.decide(self._look, self._successes)
        self._last = (float(bound), int(code))
        self._look += 1
        return self.done

    def result(self) -> SequentialResult:
        """The decision; raises :class:`ConfigError` before the procedure has stopped."""
        if not self.done:
            raise ConfigError("the estimation has not stopped yet; feed rounds until next_round_size() is 0")
        assert self._last is not None
        bound, code = self._last
        s, t = self.test.schedule, self._look
        return SequentialResult(
            successes=self._successes,
            votes=s.sizes[t - 1],
            looks=t,
            p_lower=bound,
            alpha_look=s.alphas[t - 1],
            alpha_spent=float(sum(s.alphas[:t])),
            certified=bound > 0.5,
            target_reached=bool(self.test.clears(bound)),
            stop=STOP_REASONS[code],
        )


def decision_thresholds(radius: int, omega: float) -> list[float]:
    """Every value the stopping rule compares a bound with: 0.5 (certify the label) and, when it is reachable
    (below 1), :func:`target_threshold` of the requested radius. Validity checks probe true shares around each."""
    out = [0.5]
    t = target_threshold(radius, omega)
    if radius > 0 and t < 1.0:
        out.append(t)
    return out


def run_sequential(test: SequentialTest, draw: Callable[[int], int]) -> SequentialResult:
    """Drive one :class:`SequentialEstimate` with ``draw(n)`` -> votes for the selected class among ``n``
    fresh votes (for a single text; batch many texts with :class:`SequentialEstimate` directly)."""
    est = SequentialEstimate(test)
    while not est.done:
        n = est.next_round_size()
        est.update(draw(n), n)
    return est.result()


def selected_class(select_counts: Sequence[int]) -> int:
    """The class CERTIFY bounds: argmax of the selection votes, ties to the smallest index (as
    :func:`frs_ray.certify.bounds.predict_and_bound`)."""
    c = [_as_int(f"select_counts[{i}]", x) for i, x in enumerate(select_counts)]
    if not c or sum(c) < 1 or min(c) < 0:
        raise ConfigError(f"select_counts must be non-negative and total >= 1, got {list(select_counts)}")
    return max(range(len(c)), key=lambda i: (c[i], -i))
