"""A transplant check on FRS's vulnerable spans T(x') (a :data:`~frs_ray.certify.smooth.SpanFilter`; an extension
of FRS named ``frs-transplant``, not the paper's method).

Idea. What makes a backdoor trigger a trigger is that it is input-agnostic: inserted into unrelated texts of
other classes it sends them to one label. An ordinary strong word (the sentiment word MCTS finds in a clean
sentence) moves some of them and not others. So each span of T(x') is *transplanted*: its words are inserted
into m reference texts whose centre-model label differs from x''s current label y (at the start of the text and
at a fixed random word gap of each reference), and the centre model scores all of them in ONE batched call per
filter call. The span's score is, over those 2m texts (``statistic``):

- ``shift`` (default): the mean rise of P(y | reference with the span) over P(y | reference), or
- ``flip``: the share of the texts whose label becomes y.

The span is kept (randomized at omega_H, as FRS does) when its score exceeds ``threshold``; otherwise it is
dropped and, with no span kept, the text is randomized uniformly (omega_M: exactly ``uniform`` smoothing for that
text, same voters and draws).

Why it is sound with the certificate. The check is a deterministic function of x' alone: the references, their
gaps and their base probabilities are fixed when the filter is built, the centre model has no randomness, and the
label y is the centre model's on x' (from the fuzzing's first query). So the smoothed classifier g is still a
fixed function of x', its votes are still i.i.d. given x', and the Clopper-Pearson bound and Theorem 1 hold as
for FRS. The certificate lists exactly the kept spans and the randomization raised exactly those to omega_H, so
the kept spans ARE the T(x') the conditional radius talks about ("valid only if the trigger lies inside T(x')");
where nothing is kept, the conditional radius is capped at 0 tokens and the unconditional one (omega_M) applies.
The check only changes which spans form T(x'); it never touches the votes.

Growth (``grow`` > 0; :mod:`frs_ray.fuzzing.growth`). Before it is scored, each span grows one adjacent token at a
time while that raises its score by more than ``min_gain`` (up to ``grow`` tokens), so that a piece of a multi-word
trigger is checked, kept and randomized as the whole trigger. The calibration grows its clean spans the same way.

Combination (``combine="joint"``, with ``fuzzing.num_spans`` >= 2). A trigger may be a combination of words spread
over the text, each useless alone by construction (LWP's negative augmentation): one span of T(x') holds one word
and its transplant barely moves the references. The joint check also transplants the words of ALL the text's
spans together (the tokens their union covers, in the text's order, inserted as one piece at the same positions)
and keeps every span when that joint score exceeds the threshold, as well as each span whose own score does. A
text's score is then the largest of its spans' and its joint score, in the calibration as in use, so the clean
keep rate the calibration bounds counts texts kept through the joint score too. It stays a deterministic function
of x', so the argument above holds unchanged. Cost: ``len(positions) * m`` more sequences per text with two or
more spans, in the same batched call.

Length strata (``length_strata``, e.g. ``(1, 3)``; :mod:`frs_ray.fuzzing.strata`). A span is kept when its score
exceeds the threshold of its length's stratum (1 token, 2-3, 4 or more), each calibrated on the clean spans of
that length, so that a short trigger is not held to the bar a decisive clean clause sets. The calibrated clean keep
rate is bounded as with one threshold (see that module).

Calibration (:func:`~frs_ray.fuzzing.calibration.calibrate_transplant`) uses clean data only, by construction: it takes one clean
:class:`~frs_ray.data.TextDataset` (refusing one whose source is a poisoned folder), fuzzes its texts with the
centre model, scores their top spans and sets the threshold so that at most ``target_keep`` (default 5%) of clean
texts keep a span; m is the smallest of ``m_grid`` whose calibrated threshold is at most ``max_threshold`` (so
that a span that moves every reference can still pass; a coarse m ties many clean spans at the top). The result
(threshold, m, clean keep rate, data checksum) is recorded in every certificate (``span_check``).

Cost. Building: one centre-model call over the reference pool (labels and base probabilities; counted in
``setup_queries``, not per input). Per text: ``len(positions) * m`` model sequences per span of T(x'), in the one
batched call, counted in the certificate's ``queries["span_check"]``; with growth, ``2 * len(positions) * m`` more
per span and growth step (one batched call per step). If the caller does not pass the centre
model's probabilities on x' (FRSClassifier does, from the fuzzing), one more sequence per text is scored first.

Example::

    clf = FRSClassifier.from_checkpoint(ckpt, cfg)
    dev = load_dataset("sst2", "dev")
    check = build_transplant_filter(clf, dev)        # references + clean calibration, both from dev
    clf.span_filter = check
    clf.certify(["a gripping cf story ."])[0].span_check   # threshold, m, score of the span, kept
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ConfigError
from ..text import render, tokenize
from .growth import grow_by_transplant_gain
from .mcts import Span
from .strata import check_edges, stratum_of

PredictProba = Callable[[Sequence[str]], np.ndarray]
STATISTICS = ("shift", "flip")
POSITIONS = ("start", "random")
COMBINES = ("each", "joint")


@dataclass
class TransplantCheck:
    """What the check decided for one text: its label y, each top span's score (and both statistics, for
    measuring which separates better), whether any was kept, cost."""

    label: int
    scores: list[float]
    kept: bool
    queries: int
    seconds: float
    shifts: list[float] = field(default_factory=list)
    flips: list[float] = field(default_factory=list)
    joint: float | None = None  # combine="joint": the score of all spans' words transplanted together
    lengths: list[int] = field(default_factory=list)  # each checked span's length in tokens (after growth)


@dataclass
class TransplantCalibration:
    """How threshold and m were chosen (clean data only; recorded in each certificate)."""

    threshold: float
    m: int
    statistic: str
    target_keep: float
    clean_keep_rate: float
    n_texts: int
    source: str
    texts_sha256: str
    by_m: dict[int, dict[str, float]] = field(default_factory=dict)
    queries: int = 0
    rule: str = "keep"  # "keep": at most target_keep of clean texts keep a span; "ca_cost": see calibrate_ca_cost
    max_ca_cost: float | None = None
    ca_uniform: float | None = None  # ca_cost rule: the calibration texts' accuracy under uniform randomization
    ca_cost: float | None = None  # ca_cost rule: the accuracy the chosen threshold's keeps cost on them
    ca_curve: dict[float, dict[str, float]] = field(default_factory=dict)  # ca_cost rule: cost per candidate tried
    length_strata: list[int] = field(default_factory=list)  # the strata's edges (empty: one threshold)
    thresholds: list[float] | None = None  # length strata: one threshold per stratum (``threshold`` is their max)
    stratum_texts: list[int] | None = None  # length strata: calibration texts with a span in each stratum

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def insert_words(ref: list[str], span: list[str], gap: int) -> list[str]:
    """``ref`` with the words of ``span`` inserted before word ``gap`` (0: at the start)."""
    return ref[:gap] + list(span) + ref[gap:]


class TransplantSpanFilter:
    """A :data:`~frs_ray.certify.smooth.SpanFilter`: keeps the spans that send references of other labels to x''s.

    ``predict_proba``: the centre model (Clip_rho(theta), no voter noise). ``references``: the reference pool
    (texts, e.g. clean dev sentences; their labels are the centre model's, computed here). For each label y the m
    references are a seeded sample of the pool's texts whose centre label is not y, each with a seeded random word
    gap in [1, len]; they never change afterwards. ``checks`` records a :class:`TransplantCheck` per text (unless
    ``keep_checks`` is false, as in a service); ``last_reports`` holds the per-text report of the last call, which
    :meth:`FRSClassifier.prepare` copies into the certificate (``span_check``, ``queries["span_check"]``)."""

    uses_reference = True  # FRSClassifier.prepare passes the centre model's P(y | x') from the fuzzing

    def __init__(
        self,
        predict_proba: PredictProba,
        references: Sequence[str],
        m: int = 16,
        threshold: float = 0.5,
        statistic: str = "shift",
        positions: Sequence[str] = POSITIONS,
        seed: int = 0,
        keep_checks: bool = True,
        calibration: TransplantCalibration | None = None,
        reference_source: str = "given",
        grow: int = 0,
        min_gain: float = 0.01,
        combine: str = "each",
        length_strata: Sequence[int] = (),
    ) -> None:
        if statistic not in STATISTICS:
            raise ConfigError(f"transplant: statistic must be one of {', '.join(STATISTICS)}, got {statistic!r}")
        positions = tuple(positions)
        if not positions or any(p not in POSITIONS for p in positions) or len(set(positions)) != len(positions):
            raise ConfigError(f"transplant: positions must be a non-empty subset of {list(POSITIONS)}, got {list(positions)}")
        if not isinstance(m, (int, np.integer)) or isinstance(m, bool) or m < 1:
            raise ConfigError(f"transplant: m (references per span) must be an integer >= 1, got {m!r}")
        if not isinstance(threshold, (int, float)) or not math.isfinite(float(threshold)):
            raise ConfigError(f"transplant: threshold must be a finite number, got {threshold!r}")
        if not isinstance(grow, (int, np.integer)) or isinstance(grow, bool) or grow < 0:
            raise ConfigError(f"transplant: grow (tokens a span may grow by) must be an integer >= 0, got {grow!r}")
        refs = [r for r in references if isinstance(r, str) and tokenize(r)]
        if len(refs) != len(list(references)):
            raise ConfigError("transplant: every reference must be a non-empty text")
        self.predict = predict_proba
        self.m, self.threshold, self.statistic = int(m), float(threshold), statistic
        self.positions, self.seed, self.keep_checks = positions, int(seed), keep_checks
        self.calibration, self.reference_source = calibration, reference_source
        if isinstance(min_gain, bool) or not isinstance(min_gain, (int, float)) or not 0 <= min_gain < math.inf:
            raise ConfigError(f"transplant: min_gain (score a grown token must add) must be a number >= 0, got {min_gain!r}")
        self.grow, self.min_gain = int(grow), float(min_gain)
        if combine not in COMBINES:
            raise ConfigError(f"transplant: combine must be one of {', '.join(COMBINES)}, got {combine!r}")
        self.combine = combine
        self.length_strata = check_edges(length_strata)
        self.thresholds = [self.threshold] * (len(self.length_strata) + 1)
        self.checks: list[TransplantCheck] = []
        self.last_reports: list[dict[str, Any]] = []
        probs = predict_proba(refs) if refs else np.zeros((0, 2))
        self.setup_queries = len(refs)
        self.num_labels = int(probs.shape[1])
        labels = probs.argmax(axis=1)
        words = [[t.text for t in tokenize(r)] for r in refs]
        # per input label y: a seeded permutation of the pool's other-label references (so the first m of a
        # larger sample are the m-sample: calibrating m compares nested sets), each with a fixed random gap
        self._pool: dict[int, list[tuple[list[str], int, np.ndarray]]] = {}
        for y in range(self.num_labels):
            idx = np.flatnonzero(labels != y)
            rng = np.random.default_rng([self.seed, 104729, y])
            order = rng.permutation(idx)
            self._pool[y] = [(words[i], int(rng.integers(1, len(words[i]) + 1)), probs[i]) for i in order]
            if len(self._pool[y]) < self.m:
                raise ConfigError(
                    f"transplant: m = {self.m} references of a label other than {y} are needed, but "
                    f"the centre model gives only {len(self._pool[y])} of the {len(refs)} references "
                    "another label (give more references or a smaller m)"
                )

    # ---------------------------------------------------------------------------------------------- scoring
    def _texts_for(self, span_words: list[str], y: int, m: int) -> list[str]:
        out = []
        for ref, gap, _ in self._pool[y][:m]:
            for pos in self.positions:
                out.append(render(insert_words(ref, span_words, 0 if pos == "start" else gap)))
        return out

    def per_reference(self, probs: np.ndarray, y: int, m: int) -> tuple[np.ndarray, np.ndarray]:
        """(shift, flip) of each of the ``len(positions) * m`` transplanted texts, from their probabilities."""
        base = np.repeat(np.array([p[y] for _, _, p in self._pool[y][:m]]), len(self.positions))
        return probs[:, y] - base, (probs.argmax(axis=1) == y).astype(np.float64)

    def score_spans(
        self, items: Sequence[tuple[list[str], list[Span], int]], m: int | None = None
    ) -> tuple[list[list[tuple[np.ndarray, np.ndarray]]], int]:
        """Per text, per span: the (shift, flip) arrays of its transplanted texts, in ONE centre-model call."""
        m = self.m if m is None else m
        texts: list[str] = []
        slices: list[list[tuple[int, int]]] = []
        for words, spans, y in items:
            sl = []
            for sp in spans:
                start = len(texts)
                texts += self._texts_for(list(words[sp.token_start : sp.token_end]), y, m)
                sl.append((start, len(texts)))
            slices.append(sl)
        probs = self.predict(texts) if texts else np.zeros((0, self.num_labels))
        out = [[self.per_reference(probs[a:b], y, m) for a, b in sl] for sl, (_, _, y) in zip(slices, items)]
        return out, len(texts)

    def statistic_of(self, shift: np.ndarray, flip: np.ndarray, m: int | None = None) -> float:
        """The span's score from the first ``m`` references' values (``m`` default: the filter's)."""
        n = len(self.positions) * (self.m if m is None else m)
        return float(np.mean((shift if self.statistic == "shift" else flip)[:n]))

    def threshold_for(self, length: int) -> float:
        """The threshold a span of ``length`` tokens must exceed (its stratum's, with ``length_strata``)."""
        return self.thresholds[stratum_of(self.length_strata, length)] if self.length_strata else self.threshold

    def set_thresholds(self, thresholds: Sequence[float]) -> None:
        """One threshold per length stratum (``threshold`` becomes their largest)."""
        if len(thresholds) != len(self.length_strata) + 1:
            raise ConfigError(
                f"transplant: {len(self.length_strata) + 1} thresholds are needed (one per length stratum), got {len(thresholds)}"
            )
        self.thresholds = [float(t) for t in thresholds]
        self.threshold = max(self.thresholds)

    def score_grown(
        self, items: Sequence[tuple[list[str], list[Span], int]], m: int | None = None
    ) -> tuple[list[tuple[list[str], list[Span], int]], list[list[tuple[np.ndarray, np.ndarray]]], list[int]]:
        """:meth:`score_spans` with each span first grown while that raises its score (by up to ``grow`` tokens;
        :func:`~frs_ray.fuzzing.growth.grow_by_transplant_gain`): the items with their final spans, each final
        span's (shift, flip) arrays, and the centre-model sequences per text. With ``grow = 0``: the spans as given."""
        m = self.m if m is None else m
        per_span = len(self.positions) * m
        scored, _ = self.score_spans(items, m)
        cost = [len(spans) * per_span for _, spans, _ in items]
        if self.grow == 0:
            return [(w, list(sp), y) for w, sp, y in items], scored, cost

        def score(asked):
            got, _ = self.score_spans(asked, m)
            return [[(self.statistic_of(sh, fl, m), (sh, fl)) for sh, fl in per] for per in got], [
                len(spans) * per_span for _, spans, _ in asked
            ]

        flat = [
            (words, sp, y, (self.statistic_of(*arr, m), arr))
            for (words, spans, y), per in zip(items, scored)
            for sp, arr in zip(spans, per)
        ]
        spans, best, q = grow_by_transplant_gain(score, flat, self.grow, self.min_gain)
        out_items, out_scored, j = [], [], 0
        for i, (words, sps, y) in enumerate(items):
            out_items.append((words, spans[j : j + len(sps)], y))
            out_scored.append([arr for _, arr in best[j : j + len(sps)]])
            cost[i] += int(sum(q[j : j + len(sps)]))
            j += len(sps)
        return out_items, out_scored, cost

    def joint_words(self, words: list[str], spans: Sequence[Span]) -> list[str] | None:
        """The words of all ``spans`` as one piece (the tokens their union covers, in the text's order), or None
        when the joint check does not apply (``combine="each"``, fewer than two spans, or one span covering all)."""
        if self.combine != "joint" or len(spans) < 2:
            return None
        covered = sorted({i for sp in spans for i in range(sp.token_start, sp.token_end)})
        if any(sp.token_end - sp.token_start == len(covered) for sp in spans):
            return None  # one span already holds every other: its own score is the joint one
        return [words[i] for i in covered]

    def score_joint(
        self, items: Sequence[tuple[list[str], list[Span], int]], m: int | None = None
    ) -> tuple[list[tuple[np.ndarray, np.ndarray] | None], list[int]]:
        """Per text: the (shift, flip) arrays of its spans' words transplanted together (None where
        :meth:`joint_words` is None), in ONE centre-model call, and the sequences it cost per text."""
        asked, where = [], []
        for i, (words, spans, y) in enumerate(items):
            jw = self.joint_words(words, spans)
            if jw is not None:
                asked.append((jw, [Span(0, len(jw), 0, 0, " ".join(jw), 0.0, 0)], y))
                where.append(i)
        out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(items)
        cost = [0] * len(items)
        if asked:
            got, _ = self.score_spans(asked, m)
            per = len(self.positions) * (self.m if m is None else m)
            for i, g in zip(where, got):
                out[i], cost[i] = g[0], per
        return out, cost

    def text_score(self, per: Sequence[tuple[np.ndarray, np.ndarray]], joint, m: int | None = None) -> float:
        """A text's score: the largest of its spans' scores and (``combine="joint"``) its joint score."""
        scores = [self.statistic_of(sh, fl, m) for sh, fl in per]
        if joint is not None:
            scores.append(self.statistic_of(*joint, m))
        return max(scores, default=-math.inf)

    def stratum_scores(
        self, words: list[str], spans: Sequence[Span], per: Sequence[tuple[np.ndarray, np.ndarray]], joint, m: int | None = None
    ) -> dict[int, float]:
        """A text's best score per length stratum: each span's in its length's stratum and (``combine="joint"``) the
        joint score in the stratum of the joint piece's length."""
        out: dict[int, float] = {}
        pairs = [(sp.token_end - sp.token_start, self.statistic_of(sh, fl, m)) for sp, (sh, fl) in zip(spans, per)]
        if joint is not None:
            pairs.append((len(self.joint_words(words, spans) or ()), self.statistic_of(*joint, m)))
        for n, s in pairs:
            b = stratum_of(self.length_strata, n)
            out[b] = max(out.get(b, -math.inf), s)
        return out

    # ---------------------------------------------------------------------------------------------- SpanFilter
    def __call__(
        self, batch: Sequence[tuple[list[str], list[Span]]], references: Sequence[np.ndarray] | None = None
    ) -> list[list[Span]]:
        """Kept spans per text. ``references``: the centre model's P(y | x') per text (FRSClassifier passes the
        fuzzing's); without them one extra centre-model call labels the texts (counted in their queries)."""
        t0 = time.perf_counter()
        extra = 0
        probs = list(references) if references is not None else []
        if references is None or any(p is None or len(p) != self.num_labels for p in probs):
            probs = list(self.predict([render(w) for w, _ in batch])) if batch else []
            extra = 1
        items = [(list(w), list(s), int(np.argmax(p))) for (w, s), p in zip(batch, probs)]
        items, scored, cost = self.score_grown(items)
        joints, joint_cost = self.score_joint(items)
        dt = (time.perf_counter() - t0) / max(1, len(batch))
        out, reports = [], []
        for (words, spans, y), per, q, joint, qj in zip(items, scored, cost, joints, joint_cost):
            scores = [self.statistic_of(sh, fl) for sh, fl in per]
            n = len(self.positions) * self.m
            joint_score = None if joint is None else self.statistic_of(*joint)
            lengths = [sp.token_end - sp.token_start for sp in spans]
            if joint_score is not None and joint_score > self.threshold_for(len(self.joint_words(words, spans) or ())):
                kept = list(spans)  # the combination behaves like a trigger: every span of it is kept
            else:
                kept = [sp for sp, s, n in zip(spans, scores, lengths) if s > self.threshold_for(n)]
            q += extra + qj
            if self.keep_checks:
                self.checks.append(
                    TransplantCheck(
                        y,
                        [round(s, 5) for s in scores],
                        bool(kept),
                        q,
                        dt,
                        [round(float(np.mean(sh[:n])), 5) for sh, _ in per],
                        [round(float(np.mean(fl[:n])), 5) for _, fl in per],
                        None if joint_score is None else round(joint_score, 5),
                        lengths,
                    )
                )
            reports.append(
                {
                    "name": "transplant",
                    "label": y,
                    "scores": [round(s, 4) for s in scores],
                    "kept": len(kept),
                    "queries": q,
                    **({"spans": [[sp.token_start, sp.token_end] for sp in spans]} if self.grow else {}),
                    **(
                        {"joint_score": None if joint_score is None else round(joint_score, 4)} if self.combine == "joint" else {}
                    ),
                    **self.settings(),
                }
            )
            out.append(kept)
        self.last_reports = reports
        return out

    def settings(self) -> dict[str, Any]:
        """What identifies the check's decisions (recorded in each certificate)."""
        return {
            "threshold": self.threshold,
            "m": self.m,
            "statistic": self.statistic,
            "positions": list(self.positions),
            "seed": self.seed,
            "grow": self.grow,
            "min_gain": self.min_gain,
            "combine": self.combine,
            **({"length_strata": list(self.length_strata), "thresholds": self.thresholds} if self.length_strata else {}),
            "references": self.reference_source,
            "calibration": None
            if self.calibration is None
            else {k: v for k, v in self.calibration.to_dict().items() if k not in ("by_m", "ca_curve")},
        }


__all__ = [
    "COMBINES",
    "POSITIONS",
    "STATISTICS",
    "TransplantCalibration",
    "TransplantCheck",
    "TransplantSpanFilter",
    "insert_words",
]
