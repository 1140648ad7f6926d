"""Evaluation metrics of Appendix B.1, Table 2, Table 5 and Appendix I, over :class:`DefensePrediction` lists.

Definitions (decisions where the paper is silent are marked):
- CA: share of clean test inputs whose label is the true label. PA: share of triggered inputs (built from
  non-target sentences) whose label is their original, true label. ASR: share of triggered inputs labelled with
  the attacker's target label. All three use the defense's prediction ``vote_label`` (Appendix B.1's ``f(x)``; for
  FRS and the other smoothing defenses the K voters' majority vote). An abstention (label -1: a vote tie, or
  TextGuard's empty / tied groups) is never correct and never an attack success.
- Certified CA / PA / ASR (decision: reported beside the paper's columns): the same on ``certified_label``,
  i.e. an input counts only where the certificate holds (FRS: Clopper-Pearson p_lower > 0.5), so an
  abstaining certificate is wrong for CA / PA and no success for ASR. ``not_certified_*``: the share of inputs
  whose certificate abstains.
- Certified accuracy at perturbation level p (Table 5): share of clean inputs whose certified label is correct
  and whose radius >= p * length in word tokens (decision: length of the input, in the same tokens as the radius).
- Average / maximum certified radius (Table 2): over clean inputs whose certified label is correct; the
  average counting radius 0 for the others is *not* done here (decision: Table 2 is about the certified
  inputs), and the share of inputs with a positive radius is reported beside it.
- Sequential CERTIFY (``n_max`` set): mean estimation votes and looks per input and why each input stopped.
- Localization (Appendix I): share of triggered inputs for which some flagged span contains a whole trigger piece.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterable, Sequence

import numpy as np

from ..certify.certificate import ABSTAIN
from ..defenses.base import DefensePrediction

LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5)


def _labels(preds: Sequence[DefensePrediction]) -> np.ndarray:
    return np.array([p.vote_label for p in preds], dtype=np.int64)


def clean_accuracy(preds: Sequence[DefensePrediction], labels: Sequence[int]) -> float:
    """CA (Appendix B.1): correct labels on clean inputs; ABSTAIN counts as wrong."""
    return float(np.mean(_labels(preds) == np.asarray(labels))) if preds else float("nan")


def poisoned_accuracy(preds: Sequence[DefensePrediction], original_labels: Sequence[int]) -> float:
    """PA (Appendix B.1, Eq. in B.1): triggered inputs classified as their original label; ABSTAIN is wrong."""
    return clean_accuracy(preds, original_labels)


def attack_success_rate(preds: Sequence[DefensePrediction], target: int) -> float:
    """ASR (Appendix B.1): triggered non-target inputs classified as the target label; ABSTAIN is no success."""
    return float(np.mean(_labels(preds) == target)) if preds else float("nan")


def abstain_rate(preds: Sequence[DefensePrediction]) -> float:
    """Share of inputs whose prediction is ABSTAIN."""
    return float(np.mean(_labels(preds) == ABSTAIN)) if preds else float("nan")


def certified_view(preds: Sequence[DefensePrediction]) -> list[DefensePrediction] | None:
    """The predictions with ``vote_label`` replaced by ``certified_label`` (None for an empirical defense), so CA,
    PA, ASR and the abstain rate of the certificates reuse the functions above."""
    if not preds or any(p.certified_label is None for p in preds):
        return None
    return [replace(p, vote_label=int(p.certified_label)) for p in preds]


def _cert(p: DefensePrediction) -> int:
    return p.vote_label if p.certified_label is None else p.certified_label


def certified_accuracy(
    preds: Sequence[DefensePrediction], labels: Sequence[int], levels: Iterable[float] = LEVELS
) -> dict[str, float | None]:
    """Table 5: for each level p, the share of inputs certified correct with radius >= p * length_tokens.

    ``None`` for every level when the defense gives no certificate.
    """
    levels = list(levels)
    if not preds or all(p.radius is None for p in preds):
        return {f"{lv:.1f}": None for lv in levels}
    out = {}
    for lv in levels:
        ok = [_cert(p) == y and p.radius is not None and p.radius >= lv * p.length_tokens for p, y in zip(preds, labels)]
        out[f"{lv:.1f}"] = float(np.mean(ok))
    return out


def radius_stats(
    preds: Sequence[DefensePrediction], labels: Sequence[int], unconditional: bool = False
) -> dict[str, float | None]:
    """Table 2: average and maximum certified radius (word tokens) over inputs whose certified label is correct."""
    rs = [
        (p.radius_unconditional if unconditional else p.radius)
        for p, y in zip(preds, labels)
        if _cert(p) == y and _cert(p) != ABSTAIN
    ]
    rs = [r for r in rs if r is not None]
    if not rs:
        return {"avg": None, "max": None, "share_positive": None}
    return {"avg": float(np.mean(rs)), "max": float(np.max(rs)), "share_positive": float(np.mean(np.array(rs) > 0))}


def span_contains(flagged: Sequence[Sequence[int]], trigger: Sequence[Sequence[int]]) -> bool:
    """True when some flagged span covers some whole trigger piece."""
    return any(fs <= ts and te <= fe for fs, fe in flagged for ts, te in trigger)


def localization_rate(preds: Sequence[DefensePrediction], trigger_spans: Sequence[Sequence[Sequence[int]]]) -> float | None:
    """Appendix I: share of triggered inputs whose flagged spans contain the trigger (None if nothing is flagged)."""
    if not preds or all(not p.spans for p in preds):
        return None
    return float(np.mean([span_contains(p.spans, t) for p, t in zip(preds, trigger_spans)]))


def cost(preds: Sequence[DefensePrediction]) -> dict[str, float]:
    """Mean model queries and seconds per input."""
    if not preds:
        return {"queries_per_input": float("nan"), "seconds_per_input": float("nan")}
    return {
        "queries_per_input": float(np.mean([p.queries for p in preds])),
        "seconds_per_input": float(np.mean([p.seconds for p in preds])),
    }


def sequential_stats(preds: Sequence[DefensePrediction]) -> dict[str, Any] | None:
    """Sequential CERTIFY's cost per input: mean / max estimation votes, mean looks, stop reasons (counts);
    None unless every prediction carries a sequential record."""
    seq = [p.sequential for p in preds]
    if not seq or any(s is None for s in seq):
        return None
    stops: dict[str, int] = {}
    for s in seq:
        stops[s["stop"]] = stops.get(s["stop"], 0) + 1
    return {
        "mean_estimation_votes": float(np.mean([s["votes"] for s in seq])),
        "max_estimation_votes": int(max(s["votes"] for s in seq)),
        "mean_looks": float(np.mean([s["looks"] for s in seq])),
        "stops": stops,
        "n_max": int(seq[0]["n_max"]),
    }
