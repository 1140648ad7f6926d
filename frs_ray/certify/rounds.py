"""Sequential CERTIFY for a batch of texts: every text's next round joins one voter call.

The statistics are :mod:`frs_ray.certify.sequential`'s (alpha split over a fixed schedule of looks, so the reported
``p_lower`` exceeds the selected class's probability with probability at most alpha). This module connects them to
the smoothed classifier of :mod:`frs_ray.certify.smooth` through two callables only:

* ``vote_labels(jobs) -> labels``: the voters' labels on (voter k, randomized text) jobs (``FRSClassifier.vote_labels``
  or any backend that runs voters);
* ``draw(plan, look, count) -> jobs``: ``count`` more jobs for look ``look`` of one text (:func:`draw_round`).

Per batch (:class:`SequentialBatch`): one voter call for every text's selection votes and first estimation round
(the plans of ``FRSClassifier.prepare``, as in the fixed protocol), then one call per further look holding the
next round of every text still running, so adaptive votes never serialize texts.

Reproducibility: round ``look >= 1`` of a text is drawn from its own generator seeded by ``(seed, sha256 of the
text, 8, look)`` (:func:`draw_round`), round 0 is the plan's estimation jobs (seeded as in the fixed protocol); a
text's certificate depends only on (text, checkpoint, config), not on the batch, its order or its neighbours'
stopping. Rounds before the last have sizes set by ``n_estimate`` and ``round_growth`` only, so runs with different
``n_max`` share the votes of their common looks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from ..config import CertifyConfig
from ..errors import ConfigError
from ..fuzzing import FuzzedRandomizer
from ..text import render
from .certificate import ABSTAIN, Certificate
from .sequential import LookSchedule, SequentialEstimate, SequentialResult, SequentialTest, selected_class
from .smooth import VotePlan, build_certificate, text_seed

Job = tuple[int, str]
"""One vote to run: (voter index k, randomized text)."""
VoteLabels = Callable[[Sequence[Job]], Sequence[int]]
DrawRound = Callable[[VotePlan, int, int], list[Job]]

__all__ = [
    "DrawRound",
    "Job",
    "SequentialBatch",
    "VoteLabels",
    "certify_plans_sequential",
    "draw_round",
    "finalize_sequential",
    "sequential_test",
]


def sequential_test(plan: VotePlan, config: CertifyConfig) -> SequentialTest:
    """The text's stopping rule: ``config``'s schedule, and the target ``min(target_radius, cap)`` tokens of the
    ``target_kind`` radius at that radius's ``omega * d`` (cap: ``|T(x')|`` conditional, the text unconditional),
    exactly as :func:`frs_ray.certify.smooth._radius` computes the reported radius."""
    schedule = LookSchedule.of(config)
    if schedule is None:
        raise ConfigError("sequential CERTIFY needs config.n_max (None is the fixed protocol)")
    L = plan.length_tokens
    w_cond, w_uncond = config.randomize.destroy_probabilities(plan.omega_h, plan.omega_l, plan.span_tokens, L)
    w, cap = (w_cond, min(plan.span_tokens, L)) if config.target_kind == "conditional" else (w_uncond, L)
    return SequentialTest(schedule, min(config.target_radius or 0, cap), w, config.futility)


def draw_round(plan: VotePlan, look: int, count: int, config: CertifyConfig, randomizer: FuzzedRandomizer) -> list[Job]:
    """``count`` jobs of look ``look`` of ``plan``'s text: look 0 is the plan's estimation jobs; later looks draw
    (voter k uniform in 0..K-1, a fuzzed randomization of the plan's words with its T(x') mask), i.i.d. as the
    plan's own votes, from a generator seeded by ``(config.seed, text, 8, look)``."""
    if look == 0:
        if count != len(plan.estimate):
            raise ConfigError(f"the first round has the plan's {len(plan.estimate)} estimation votes, not {count}")
        return list(plan.estimate)
    if plan.words is None or plan.in_span is None:
        raise ConfigError("this VotePlan carries no words / in_span (made before sequential CERTIFY): re-run prepare")
    rng = np.random.default_rng(text_seed(config.seed, plan.text) + [8, int(look)])
    mask = np.asarray(plan.in_span, dtype=bool)
    jobs = []
    for _ in range(count):
        k = int(rng.integers(config.k))
        jobs.append((k, render(randomizer.randomize(plan.words, mask, rng).tokens)))
    return jobs


def finalize_sequential(
    plan: VotePlan,
    select: Sequence[int],
    estimate: Sequence[int],
    result: SequentialResult,
    test: SequentialTest,
    config: CertifyConfig,
    label_names: Sequence[str],
    seconds: dict[str, float] | None = None,
) -> Certificate:
    """The certificate of one text from its selection counts, all its estimation counts and the sequential
    result: label ``chosen`` when ``p_lower > 0.5``, both radii of Theorem 1 from the final look's ``p_lower``
    (every radius is a non-decreasing function of that one bound, so all hold together with prob. >= 1 - alpha)."""
    chosen = selected_class(select)
    return build_certificate(
        plan,
        chosen if result.certified else ABSTAIN,
        result.p_lower,
        select,
        estimate,
        len(plan.select) + result.votes,
        config,
        label_names,
        seconds,
        sequential={
            "votes": result.votes,
            "looks": result.looks,
            "alpha_look": result.alpha_look,
            "alpha_spent": result.alpha_spent,
            "alpha": test.schedule.alpha,
            "stop": result.stop,
            "target_radius": test.target_radius,
            "target_kind": config.target_kind,
            "target_reached": result.target_reached,
            "n_max": test.schedule.n_max,
        },
    )


class SequentialBatch:
    """Sequential CERTIFY of a batch of plans as a state machine over voter calls.

    Ask :meth:`pending_jobs` for the next voter call's jobs, run them, hand the labels (in job order) to
    :meth:`deliver`; repeat until :attr:`done`, then read :meth:`certificates`. The first call holds every text's
    selection votes and first estimation round; each later call holds the next round of every text still
    running. The caller decides how calls are run: synchronously (:func:`certify_plans_sequential`) or awaited
    through a batcher that merges them with other requests' calls (the service's ``serve.batch`` voter path), so
    a request waiting for its next round joins the next voter call with everyone else's.
    """

    def __init__(self, plans: Sequence[VotePlan], draw: DrawRound, config: CertifyConfig, label_names: Sequence[str]) -> None:
        self.plans, self.draw, self.config = list(plans), draw, config
        self.label_names = list(label_names)
        self.tests = [sequential_test(p, config) for p in self.plans]
        self.select: list[list[int]] | None = None  # per text: selection counts (after the first call)
        self.counts: list[list[int]] = [[0] * len(self.label_names) for _ in self.plans]  # estimation counts
        self.chosen: list[int] = []
        self.estimates: list[SequentialEstimate] = []
        self._pending: list[tuple[int, int, int]] | None = None  # (text, n_select of this call, round size)
        self._jobs: list[Job] = []

    @property
    def done(self) -> bool:
        return self.select is not None and all(e.done for e in self.estimates)

    def pending_jobs(self) -> list[Job]:
        """The next voter call's jobs ([] when done); the same list until :meth:`deliver` is called."""
        if self._pending is not None:
            return list(self._jobs)
        self._pending, self._jobs = [], []
        if self.select is None:
            for i, (p, t) in enumerate(zip(self.plans, self.tests)):
                first = self.draw(p, 0, t.schedule.round_size(0))
                self._check(i, 0, first, t.schedule.round_size(0))
                self._pending.append((i, len(p.select), len(first)))
                self._jobs += list(p.select) + first
        else:
            for i, e in enumerate(self.estimates):
                n = e.next_round_size()
                if n:
                    new = self.draw(self.plans[i], e.looks, n)
                    self._check(i, e.looks, new, n)
                    self._pending.append((i, 0, n))
                    self._jobs += new
        return list(self._jobs)

    @staticmethod
    def _check(i: int, look: int, jobs: list[Job], n: int) -> None:
        if len(jobs) != n:
            raise ConfigError(f"text {i}: look {look + 1} needs {n} jobs, the source gave {len(jobs)}")

    def deliver(self, labels: Sequence[int]) -> None:
        """Labels of :meth:`pending_jobs`, in order; updates every text's counts and sequential estimate."""
        if self._pending is None:
            self.pending_jobs()
        assert self._pending is not None
        labels = [int(y) for y in labels]
        if len(labels) != len(self._jobs):
            raise ConfigError(f"vote_labels returned {len(labels)} labels for {len(self._jobs)} jobs")
        first = self.select is None
        if first:
            self.select = [[0] * len(self.label_names) for _ in self.plans]
        pos = 0
        for i, n_sel, n in self._pending:
            if first:
                for y in labels[pos : pos + n_sel]:
                    self.select[i][y] += 1
                self.chosen.append(selected_class(self.select[i]))
                self.estimates.append(SequentialEstimate(self.tests[i]))
            round_labels = labels[pos + n_sel : pos + n_sel + n]
            for y in round_labels:
                self.counts[i][y] += 1
            self.estimates[i].update(sum(1 for y in round_labels if y == self.chosen[i]), n)
            pos += n_sel + n
        self._pending, self._jobs = None, []

    def certificates(self, seconds: dict[str, float] | None = None) -> list[Certificate]:
        """One certificate per plan, in order; raises :class:`ConfigError` before :attr:`done`."""
        if not self.done:
            raise ConfigError("the batch has rounds left; deliver labels until done")
        assert self.select is not None
        return [
            finalize_sequential(p, sel, est, e.result(), t, self.config, self.label_names, seconds)
            for p, t, sel, est, e in zip(self.plans, self.tests, self.select, self.counts, self.estimates)
        ]


def certify_plans_sequential(
    plans: Sequence[VotePlan],
    vote_labels: VoteLabels,
    draw: DrawRound,
    config: CertifyConfig,
    label_names: Sequence[str],
    seconds: dict[str, float] | None = None,
) -> list[Certificate]:
    """Run a :class:`SequentialBatch` with a synchronous ``vote_labels``; certificates in plan order.
    ``seconds`` (per-text timings so far) gains ``vote``: the voting time divided by the number of texts."""
    if not plans:
        return []
    t0 = time.perf_counter()
    batch = SequentialBatch(plans, draw, config, label_names)
    while not batch.done:
        batch.deliver(vote_labels(batch.pending_jobs()))
    per = dict(seconds or {})
    per["vote"] = (time.perf_counter() - t0) / len(plans)
    return batch.certificates(per)
