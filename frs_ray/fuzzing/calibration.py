"""Calibration of the transplant check (:class:`~frs_ray.fuzzing.transplant.TransplantSpanFilter`; an extension of
FRS named ``frs-transplant``, not the paper's method), on clean data only, and the check's builder.

- :func:`calibrate_transplant` (rule ``keep``): threshold(s) and m such that at most ``target_keep`` of clean
  texts keep a span (one threshold, or one per span-length stratum: :mod:`frs_ray.fuzzing.strata`).
- :func:`calibrate_ca_cost` (rule ``ca_cost``): the threshold whose kept spans cost at most ``max_ca_cost`` of
  clean accuracy against uniform randomization, on clean labelled texts.
- :func:`build_transplant_filter`: references and calibration texts from one clean dataset, then the check.

Nothing here reads triggered data: each function takes clean texts (and, for ``ca_cost``, their labels) and the
name of their source, and refuses a source inside a poisoned folder.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ConfigError
from ..text import tokenize
from .mcts import FuzzResult
from .strata import keep_rate, stratified_thresholds
from .transplant import POSITIONS, TransplantCalibration, TransplantSpanFilter

CALIBRATION_RULES = ("keep", "ca_cost")


def _texts_sha256(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8") + b"\n")
    return h.hexdigest()


def _require_clean(source: str) -> None:
    parts = {p.lower() for p in Path(str(source)).parts}
    if "poisoned" in parts or "triggered" in parts:
        raise ConfigError(f"transplant calibration reads clean data only; {source} is a poisoned/triggered dataset")


def calibrate_transplant(
    check: TransplantSpanFilter,
    fuzz: Callable[[list[str]], list[FuzzResult]],
    clean_texts: Sequence[str],
    source: str,
    num_spans: int = 1,
    target_keep: float = 0.05,
    m_grid: Sequence[int] = (4, 8, 16),
    max_threshold: float = 0.8,
    disjoint: bool = False,
) -> TransplantCalibration:
    """Choose ``check``'s threshold and m on clean texts only, and set them on ``check``.

    The function is given clean texts and nothing else (no labels, no trigger, no attack): ``fuzz`` is the centre
    model's MCTS (``FRSClassifier.fuzz``) and ``source`` names where the texts came from (a poisoned folder is
    refused). For every m of ``m_grid`` (each at most the filter's pool allows), the threshold is the smallest
    value that at most ``target_keep`` of the texts' best span scores exceed (so at most that share of clean texts
    keeps a span); m is the smallest whose threshold is <= ``max_threshold``, else the largest. With the check's
    ``length_strata``, one threshold per stratum (:func:`~frs_ray.fuzzing.strata.stratified_thresholds`, the same
    bound on the clean keep rate), and m the smallest whose largest threshold is <= ``max_threshold``. One centre-model
    call scores all the texts' spans with the largest m (smaller m reuse its first references).
    """
    _require_clean(source)
    if not 0 <= target_keep < 1:
        raise ConfigError(f"transplant: target_keep must be in [0, 1), got {target_keep}")
    grid = sorted({int(m) for m in m_grid})
    if not grid or grid[0] < 1:
        raise ConfigError(f"transplant: m_grid must hold integers >= 1, got {list(m_grid)}")
    texts = [t for t in clean_texts if tokenize(t)]
    if len(texts) < 20:
        raise ConfigError(f"transplant: calibration needs at least 20 clean texts, got {len(texts)}")
    available = min(len(v) for v in check._pool.values())
    grid = [m for m in grid if m <= available] or [available]
    fuzzed = fuzz(texts)
    items = [([t.text for t in fr.tokens], fr.vulnerable(num_spans, disjoint), int(np.argmax(fr.reference))) for fr in fuzzed]
    if check.grow == 0:  # one call with the largest m; smaller m read its first references
        scored, n_q = check.score_spans(items, m=grid[-1])
        joint, joint_cost = check.score_joint(items, m=grid[-1])
        scored_by_m = {m: scored for m in grid}
        joint_by_m = {m: joint for m in grid}
        items_by_m = {m: items for m in grid}
        n_q += sum(joint_cost)
    else:  # the grown spans depend on m: score them as the check will, once per m
        scored_by_m, joint_by_m, items_by_m, n_q = {}, {}, {}, 0
        for m in grid:
            items_by_m[m], scored_by_m[m], cost = check.score_grown(items, m)
            joint_by_m[m], joint_cost = check.score_joint(items_by_m[m], m)
            n_q += sum(cost) + sum(joint_cost)
    by_m: dict[int, dict[str, Any]] = {}
    n = len(texts)
    k = int(math.floor(target_keep * n))
    chosen = None
    n_strata = len(check.length_strata) + 1
    for m in grid:
        if check.length_strata:  # one threshold per length stratum (frs_ray/fuzzing/strata.py)
            per_text = [
                check.stratum_scores(w, sps, per, j, m)
                for (w, sps, _), per, j in zip(items_by_m[m], scored_by_m[m], joint_by_m[m])
            ]
            thrs = stratified_thresholds(per_text, n_strata, target_keep)  # unrounded: the bound holds as used
            thr, keep = max(thrs), keep_rate(per_text, thrs)
            by_m[m] = {
                "threshold": thr,
                "clean_keep_rate": keep,
                "thresholds": thrs,
                "stratum_texts": [sum(1 for d in per_text if b in d) for b in range(n_strata)],
            }
        else:
            best = np.array([check.text_score(per, j, m) for per, j in zip(scored_by_m[m], joint_by_m[m])])
            desc = np.sort(best)[::-1]
            thr = float(desc[k]) if k < n else float(desc[-1])
            keep = float(np.mean(best > thr))
            by_m[m] = {"threshold": round(thr, 6), "clean_keep_rate": keep}
        if chosen is None and by_m[m]["threshold"] <= max_threshold:
            chosen = m
    chosen = chosen if chosen is not None else grid[-1]
    cal = TransplantCalibration(
        threshold=by_m[chosen]["threshold"],
        m=chosen,
        statistic=check.statistic,
        target_keep=target_keep,
        clean_keep_rate=by_m[chosen]["clean_keep_rate"],
        n_texts=n,
        source=str(source),
        texts_sha256=_texts_sha256(texts),
        by_m=by_m,
        queries=n_q + sum(fr.queries for fr in fuzzed),
        length_strata=list(check.length_strata),
        thresholds=by_m[chosen].get("thresholds"),
        stratum_texts=by_m[chosen].get("stratum_texts"),
    )
    check.threshold, check.m, check.calibration = cal.threshold, cal.m, cal
    if cal.thresholds is not None:
        check.set_thresholds(cal.thresholds)
    return cal


class _KeepAll:
    """A span filter that keeps every span (FRS's randomization; grown as ``check`` grows them, if given) or none
    (uniform randomization)."""

    uses_reference = True

    def __init__(self, keep: bool, check: "TransplantSpanFilter | None" = None) -> None:
        self.keep, self.check = keep, check

    def __call__(self, batch, references=None):
        if not self.keep:
            return [[] for _ in batch]
        if self.check is None or self.check.grow == 0 or references is None:
            return [list(spans) for _, spans in batch]
        items, _, _ = self.check.score_grown([(list(w), list(s), int(np.argmax(p))) for (w, s), p in zip(batch, references)])
        return [spans for _, spans, _ in items]


def calibrate_ca_cost(
    check: TransplantSpanFilter,
    clf,
    clean_texts: Sequence[str],
    clean_labels: Sequence[int],
    source: str,
    max_cost: float = 0.01,
) -> TransplantCalibration:
    """Choose ``check``'s threshold by the clean accuracy its kept spans cost, on clean labelled texts only.

    Each calibration text is certified twice by ``clf`` (the smoothed classifier the check will serve): with its
    top span kept (FRS's randomization, omega_H) and with no span (uniform randomization, omega_M); the two runs use
    the same voters and draws, so under the check at threshold t the text's vote is the first where its span score
    exceeds t and the second elsewhere. The CA cost of t is the accuracy of all-uniform minus the accuracy under
    the check. The threshold is the smallest candidate (the texts' own scores) from which every higher one costs at
    most ``max_cost``: the check keeps as many spans as it can while its keeps cost at most that much clean
    accuracy. Nothing but clean texts and their labels is read (a poisoned source is refused); m is the filter's.
    Cost: one fuzzing and one span-scoring call over the texts, and two certifications of each text (counted in
    ``queries``). With more than one span per text (``fuzzing.num_spans``) a text counts as kept when its best
    span passes, and the kept run keeps all its top spans: an approximation of a check that may keep a subset."""
    _require_clean(source)
    if not 0 <= max_cost < 1:
        raise ConfigError(f"transplant: max_ca_cost must be in [0, 1), got {max_cost}")
    texts = [t for t in clean_texts if tokenize(t)]
    if len(texts) != len(clean_texts) or len(clean_labels) != len(texts):
        raise ConfigError("transplant: CA-cost calibration needs one label per non-empty clean text")
    if len(texts) < 20:
        raise ConfigError(f"transplant: calibration needs at least 20 clean texts, got {len(texts)}")
    y = np.asarray(clean_labels)
    saved = clf.span_filter
    try:
        clf.span_filter = _KeepAll(True, check)
        kept = clf.certify(texts, validate=False)
        clf.span_filter = _KeepAll(False)
        dropped = clf.certify(texts, validate=False)
    finally:
        clf.span_filter = saved
    fuzzed = clf.fuzz(texts)
    n_spans = clf.config.fuzzing.num_spans
    items = [
        ([t.text for t in fr.tokens], fr.vulnerable(n_spans, clf.config.fuzzing.disjoint_spans), int(np.argmax(fr.reference)))
        for fr in fuzzed
    ]
    grown, scored, cost = check.score_grown(items)
    joint, joint_cost = check.score_joint(grown)
    n_q = sum(cost) + sum(joint_cost)
    best = np.array([check.text_score(per, j) for per, j in zip(scored, joint)])
    v_keep = np.array([c.vote_label for c in kept])
    v_drop = np.array([c.vote_label for c in dropped])
    base = float(np.mean(v_drop == y))
    candidates = sorted({float(b) for b in best if math.isfinite(b)}, reverse=True)
    thr = candidates[0] if candidates else math.inf
    curve = {}
    for t in candidates:  # from the top down; stop at the first threshold whose keeps cost too much
        cost = base - float(np.mean(np.where(best > t, v_keep, v_drop) == y))
        curve[round(t, 6)] = {"ca_cost": round(cost, 6), "clean_keep_rate": float(np.mean(best > t))}
        if cost > max_cost + 1e-12:
            break
        thr = t
    cal = TransplantCalibration(
        threshold=round(thr, 6),
        m=check.m,
        statistic=check.statistic,
        target_keep=float(np.mean(best > thr)),
        clean_keep_rate=float(np.mean(best > thr)),
        n_texts=len(texts),
        source=str(source),
        texts_sha256=_texts_sha256(texts),
        by_m={check.m: {"threshold": round(thr, 6), "clean_keep_rate": float(np.mean(best > thr))}},
        queries=n_q + sum(fr.queries for fr in fuzzed) + sum(int(sum(c.queries.values())) for c in kept + dropped),
        rule="ca_cost",
        max_ca_cost=max_cost,
        ca_uniform=base,
        ca_cost=curve.get(round(thr, 6), {}).get("ca_cost", 0.0),
        ca_curve=curve,
    )
    check.threshold, check.calibration = cal.threshold, cal
    return cal


def split_clean(texts: Sequence[str], n_references: int, n_calibration: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Two disjoint seeded samples of ``texts``: the reference pool and the calibration texts."""
    order = np.random.default_rng([seed, 7919]).permutation(len(texts))
    refs = [texts[i] for i in order[:n_references]]
    cal = [texts[i] for i in order[n_references : n_references + n_calibration]]
    return refs, cal


def clean_data_for(train_source: str | None, spec: str | None = None):
    """The clean data a transplant check is built from: ``spec`` (a dataset name or file, its dev split), else the
    ``dev.tsv`` beside the (clean) training file ``train_source`` of the victim's checkpoint."""
    from ..data import load_dataset

    if spec is not None:
        return load_dataset(spec, "dev")
    dev = Path(str(train_source)).parent / "dev.tsv" if train_source else None
    if dev is None or not dev.is_file():
        raise ConfigError(
            f"transplant: no clean dev split beside the checkpoint's training data ({train_source}); "
            "name clean data for the references and the calibration (e.g. --span-check-data sst2)"
        )
    return load_dataset(str(dev), "dev")


def build_transplant_filter(
    clf,
    clean,
    m: int | None = None,
    threshold: float | None = None,
    statistic: str = "shift",
    positions: Sequence[str] = POSITIONS,
    target_keep: float = 0.05,
    m_grid: Sequence[int] = (4, 8, 16),
    max_threshold: float = 0.8,
    n_references: int = 200,
    n_calibration: int = 100,
    references: Sequence[str] | str | None = None,
    keep_checks: bool = True,
    seed: int | None = None,
    rule: str = "keep",
    max_ca_cost: float = 0.01,
    grow: int = 0,
    min_gain: float = 0.01,
    combine: str = "each",
    length_strata: Sequence[int] = (),
) -> TransplantSpanFilter:
    """The transplant check for an :class:`~frs_ray.certify.smooth.FRSClassifier`, calibrated on ``clean``.

    ``clean``: a clean :class:`~frs_ray.data.TextDataset` (default use: the task's dev split). The reference pool
    is a seeded sample of ``n_references`` of its texts, or ``references`` (texts, or a path read with
    :func:`frs_ray.data.read_text_lines`); the calibration texts are ``n_calibration`` others. ``threshold``
    given: used as it is with ``m`` (default 16), no calibration; left None: calibrated with m from ``m_grid``, or
    the given ``m`` only (see :func:`calibrate_transplant`); with ``rule="ca_cost"`` the threshold is then chosen
    again, by the clean accuracy the kept spans cost on the calibration texts (:func:`calibrate_ca_cost`; needs
    ``clf``'s voters). ``grow`` / ``min_gain``: each span grows by up to ``grow`` tokens while each token raises
    its score by more than ``min_gain`` (:meth:`TransplantSpanFilter.score_grown`), in the calibration as in use.
    ``combine="joint"``: all of a text's spans are also transplanted together (see the module docstring).
    ``length_strata``: one calibrated threshold per span-length stratum (:mod:`frs_ray.fuzzing.strata`; needs the
    ``keep`` rule and no given ``threshold``)."""
    from ..data import read_text_lines

    if rule not in CALIBRATION_RULES:
        raise ConfigError(f"transplant: calibration rule must be one of {', '.join(CALIBRATION_RULES)}, got {rule!r}")
    if tuple(length_strata) and (threshold is not None or rule != "keep"):
        raise ConfigError(
            "transplant: length_strata calibrates one threshold per span-length stratum with the 'keep' rule; "
            "it takes no given threshold and no 'ca_cost' calibration"
        )

    seed = clf.config.seed if seed is None else seed
    _require_clean(clean.source)
    ref_source = "given texts"
    if isinstance(references, (str, Path)):
        ref_source = str(references)
        references = read_text_lines(references)
    if references is None:
        refs, cal = split_clean(clean.texts, n_references, n_calibration, seed)
        ref_source = f"{n_references} seeded texts of {clean.source} (sha256 {clean.sha256[:12]})"
    else:
        refs = list(references)
        ref_set = set(refs)
        _, cal = split_clean([t for t in clean.texts if t not in ref_set], 0, n_calibration, seed)
    grid = (m,) if m is not None else tuple(m_grid)
    if threshold is not None and m is None:  # a given threshold is used with the default m, not calibrated
        grid = (16,)
    check = TransplantSpanFilter(
        clf.backend.predict_proba,
        refs,
        m=min(grid),
        threshold=0.0 if threshold is None else threshold,
        statistic=statistic,
        positions=positions,
        seed=seed,
        keep_checks=keep_checks,
        reference_source=ref_source,
        grow=grow,
        min_gain=min_gain,
        combine=combine,
        length_strata=length_strata,
    )
    if threshold is None:
        fz = clf.config.fuzzing
        calibrate_transplant(
            check, clf.fuzz, cal, clean.source, fz.num_spans, target_keep, grid, max_threshold, fz.disjoint_spans
        )
        if rule == "ca_cost":
            label_of = dict(zip(clean.texts, clean.labels))
            calibrate_ca_cost(check, clf, cal, [label_of[t] for t in cal], clean.source, max_ca_cost)
    return check


__all__ = [
    "CALIBRATION_RULES",
    "build_transplant_filter",
    "calibrate_ca_cost",
    "calibrate_transplant",
    "clean_data_for",
    "split_clean",
]
