"""Sequential CERTIFY for a batch of texts: every text's next round joins one voter call.

The statistics are :mod:`frs_ray.certify.sequential`'s (alpha split over a fixed schedule of looks, so the reported
``p_lower`` exceeds the selected class's probability with probability at most alpha). This module connects them to
the smoothed classifier of :mod:`frs_ray.certify.smooth` through two callables only:

* ``vote_labels(jobs) -> labels``: the voters' labels on (voter k, randomized text) jobs (``FRSClassifier.vote_labels``
  or any backend that runs voters);
* ``draw(plan, look, count) -> jobs``: ``count`` more jobs for look ``look`` of one text (:func:`draw_round`).

Per batch: one voter call for every text's selection votes and first estimation round (the plans of
``FRSClassifier.prepare``, as in the fixed protocol), then one call per further look holding the next round of
every text still running (:func:`run_rounds`), so adaptive votes never serialize texts.

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
from .bounds import majority_vote
from .sequential import SequentialEstimate, SequentialResult, SequentialTest, selected_class
from .smooth import ASSUMPTIONS, Certificate, VotePlan, _radius, text_seed

Job = tuple[int, str]
"""One vote to run: (voter index k, randomized text)."""
VoteLabels = Callable[[Sequence[Job]], Sequence[int]]
DrawRound = Callable[[VotePlan, int, int], list[Job]]

__all__ = ["DrawRound", "Job", "VoteLabels", "certify_plans_sequential", "draw_round", "finalize_sequential",
           "run_rounds", "sequential_test"]


def sequential_test(plan: VotePlan, config: CertifyConfig) -> SequentialTest:
    """The text's stopping rule: ``config``'s schedule, and the target ``min(target_radius, cap)`` tokens of the
    ``target_kind`` radius at that radius's ``omega * d`` (cap: ``|T(x')|`` conditional, the text unconditional),
    exactly as :func:`frs_ray.certify.smooth._radius` computes the reported radius."""
    schedule = config.schedule()
    if schedule is None:
        raise ConfigError("sequential CERTIFY needs config.n_max (None is the fixed protocol)")
    L = plan.length_tokens
    if config.target_kind == "conditional":
        omega, cap = plan.omega_h, min(plan.span_tokens, L)
    else:
        omega, cap = plan.omega_l, L
    w = min(omega * config.randomize.destroy_fraction(), 1.0)
    return SequentialTest(schedule, min(config.target_radius or 0, cap), w, config.futility)


def draw_round(plan: VotePlan, look: int, count: int, config: CertifyConfig,
               randomizer: FuzzedRandomizer) -> list[Job]:
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


def run_rounds(estimates: Sequence[SequentialEstimate], chosen: Sequence[int], counts: list[list[int]],
               next_jobs: Callable[[int, int, int], list[Job]], vote_labels: VoteLabels) -> int:
    """Feed every unfinished estimate its next round, all texts' rounds in ONE ``vote_labels`` call per look,
    until all are done. ``next_jobs(i, look, n)`` gives text ``i``'s jobs; ``counts[i]`` (per-class estimation
    counts) is updated in place and ``chosen[i]``'s count feeds estimate ``i``. Returns the voter calls made."""
    calls = 0
    while True:
        batch: list[tuple[int, int]] = []  # (text index, round size), in job order
        jobs: list[Job] = []
        for i, est in enumerate(estimates):
            n = est.next_round_size()
            if n:
                new = next_jobs(i, est.looks, n)
                if len(new) != n:
                    raise ConfigError(f"text {i}: look {est.looks + 1} needs {n} jobs, the source gave {len(new)}")
                batch.append((i, n))
                jobs += new
        if not batch:
            return calls
        labels = list(vote_labels(jobs))
        calls += 1
        if len(labels) != len(jobs):
            raise ConfigError(f"vote_labels returned {len(labels)} labels for {len(jobs)} jobs")
        pos = 0
        for i, n in batch:
            for y in labels[pos : pos + n]:
                counts[i][int(y)] += 1
            estimates[i].update(sum(1 for y in labels[pos : pos + n] if int(y) == chosen[i]), n)
            pos += n


def finalize_sequential(plan: VotePlan, select: Sequence[int], estimate: Sequence[int], result: SequentialResult,
                        test: SequentialTest, config: CertifyConfig, label_names: Sequence[str],
                        seconds: dict[str, float] | None = None) -> Certificate:
    """The certificate of one text from its selection counts, all its estimation counts and the sequential
    result: label ``chosen`` when ``p_lower > 0.5``, both radii of Theorem 1 from the final look's ``p_lower``
    (every radius is a non-decreasing function of that one bound, so all hold together with prob. >= 1 - alpha)."""
    chosen = selected_class(select)
    label = chosen if result.certified else -1
    destroy = config.randomize.destroy_fraction()
    extra = ASSUMPTIONS["character"] if config.randomize.mutation_level == "character" else ""
    L = plan.length_tokens
    p = result.p_lower
    return Certificate(
        text=plan.text,
        label=label,
        label_name=label_names[label] if result.certified else "ABSTAIN",
        abstained=not result.certified,
        votes=[int(v) for v in estimate],
        select_votes=[int(v) for v in select],
        p_lower=p,
        radius={
            "conditional": _radius(label, p, plan.omega_h, destroy, min(plan.span_tokens, L), L,
                                   ASSUMPTIONS["conditional"] + extra),
            "unconditional": _radius(label, p, plan.omega_l, destroy, L, L, ASSUMPTIONS["unconditional"] + extra),
        },
        spans=plan.spans,
        length_tokens=L,
        omega_h=plan.omega_h,
        omega_l=plan.omega_l,
        queries={"fuzz": plan.fuzz_queries, "votes": len(plan.select) + result.votes},
        seconds={k: round(v, 5) for k, v in (seconds or {}).items()},
        prediction=majority_vote([int(a) + int(b) for a, b in zip(select, estimate)]),
        sequential={
            "votes": result.votes, "looks": result.looks, "alpha_look": result.alpha_look,
            "alpha_spent": result.alpha_spent, "alpha": test.schedule.alpha, "stop": result.stop,
            "target_radius": test.target_radius, "target_kind": config.target_kind,
            "target_reached": result.target_reached, "n_max": test.schedule.n_max,
        },
    )


def certify_plans_sequential(plans: Sequence[VotePlan], vote_labels: VoteLabels, draw: DrawRound,
                             config: CertifyConfig, label_names: Sequence[str],
                             seconds: dict[str, float] | None = None) -> list[Certificate]:
    """Sequential CERTIFY of a batch of plans: one voter call for all selection votes and first rounds, then
    one per further look with every running text's next round (:func:`run_rounds`); certificates in order.
    ``seconds`` (per-text timings so far) gains ``vote``: the voting time divided by the number of texts."""
    if not plans:
        return []
    t0 = time.perf_counter()
    n_classes = len(label_names)
    tests = [sequential_test(p, config) for p in plans]
    first = [list(p.select) + draw(p, 0, t.schedule.round_size(0)) for p, t in zip(plans, tests)]
    labels = list(vote_labels([job for js in first for job in js]))
    if len(labels) != sum(len(js) for js in first):
        raise ConfigError(f"vote_labels returned {len(labels)} labels for {sum(len(js) for js in first)} jobs")
    selects, counts, chosen, estimates = [], [], [], []
    pos = 0
    for p, t, js in zip(plans, tests, first):
        sel, est = [0] * n_classes, [0] * n_classes
        for j, y in enumerate(labels[pos : pos + len(js)]):
            (sel if j < len(p.select) else est)[int(y)] += 1
        pos += len(js)
        c = selected_class(sel)
        e = SequentialEstimate(t)
        e.update(est[c], len(js) - len(p.select))
        selects.append(sel)
        counts.append(est)
        chosen.append(c)
        estimates.append(e)
    run_rounds(estimates, chosen, counts, lambda i, look, n: draw(plans[i], look, n), vote_labels)
    per = dict(seconds or {})
    per["vote"] = (time.perf_counter() - t0) / len(plans)
    return [finalize_sequential(p, sel, est, e.result(), t, config, label_names, per)
            for p, t, sel, est, e in zip(plans, tests, selects, counts, estimates)]
