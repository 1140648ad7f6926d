"""Pareto front of the trials and the selection rule of the best configuration."""

from __future__ import annotations

import math
from typing import Any, Sequence

from .settings import OBJECTIVES


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return float("nan")
    return f


def pareto_front(rows: Sequence[dict[str, Any]], objectives: Sequence[tuple[str, str]] = OBJECTIVES) -> list[bool]:
    """For each row, whether no other row is at least as good in every objective and better in one.

    ``objectives``: (key, "max" | "min"). A missing or NaN value counts as the worst possible.
    """
    for _, sense in objectives:
        if sense not in ("max", "min"):
            raise ValueError(f"objective sense must be 'max' or 'min', got {sense!r}")

    def score(row):
        out = []
        for key, sense in objectives:
            v = _num(row.get(key))
            v = -math.inf if math.isnan(v) else (v if sense == "max" else -v)
            out.append(v)
        return out

    scores = [score(r) for r in rows]
    front = []
    for i, a in enumerate(scores):
        dominated = any(
            all(bj >= aj for aj, bj in zip(a, b)) and any(bj > aj for aj, bj in zip(a, b)) for j, b in enumerate(scores) if j != i
        )
        front.append(not dominated)
    return front


def select_best(rows: Sequence[dict[str, Any]]) -> int | None:
    """Index of the chosen configuration: highest CA - ASR; ties: higher CA, larger avg_radius_all, fewer queries."""
    best, best_key = None, None
    for i, r in enumerate(rows):
        ca, asr = _num(r.get("ca")), _num(r.get("asr"))
        if math.isnan(ca) or math.isnan(asr):
            continue
        rad = _num(r.get("avg_radius_all"))
        key = (round(ca - asr, 9), ca, -math.inf if math.isnan(rad) else rad, -_num(r.get("queries_per_input") or 0))
        if best_key is None or key > best_key:
            best, best_key = i, key
    return best
