"""Grow a vulnerable span while it behaves more like a trigger (the transplant check's ``grow``; an extension of
FRS used by ``frs-transplant``, not the paper's method).

Why. With a small budget MCTS's top span (Eq. 6-9) is often one piece of a longer trigger: "3d" of AddSent's
trigger sentence "i watch this 3d movie". Randomizing that piece leaves the rest of the sentence to fire the
backdoor, and a piece may transplant too weakly to pass the check at all (``docs/results/transplant_notes.md``).

What (:func:`grow_by_transplant_gain`). A span's score is the transplant check's statistic (the mean rise of
P(y) it causes in references of other labels, or their flip share). From MCTS's span [a, b), both one-token
extensions [a-1, b) and [a, b+1) are scored, and the better one is taken when it raises the score by more than
``min_gain``; growth stops when neither does, or after ``max_tokens`` tokens. The span kept or dropped is the
grown one, with its score. Ties between the two extensions go to the left one.

Why it finds a trigger's extent and not a clause. The pieces of a trigger were learned together: each one added
makes the transplanted span send more references to the target label. Words around a sentiment word add little
that they did not already have in the references (their own sentiment is already there or is the reference's),
so a clean span grows little and its score stays low. The threshold is calibrated on clean texts with the same
growth, so whatever growth does to clean spans is inside the calibrated keep rate.

Soundness. Growth is a deterministic function of x' (the references are fixed, the centre model has no randomness,
ties are broken by a fixed rule), so the check stays a fixed function of x' and the certificate's argument holds
unchanged. The grown span is what the certificate lists and what its conditional radius assumes holds the trigger.

Cost. Per span and step: 2 extensions (fewer at the text's edges) of ``len(positions) * m`` centre-model
sequences each; all spans of a batch still growing share each step's one call. At most
``2 * max_tokens * len(positions) * m`` sequences per span on top of the check's own.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ConfigError
from ..text import render
from .mcts import Span

# (words, spans, y) per text -> per text: per span (its score, anything the caller wants back with it), and the
# centre-model sequences scoring that text's spans took
ScoreSpans = Callable[[Sequence[tuple[list[str], list[Span], int]]], tuple[list[list[tuple[float, Any]]], list[int]]]


def extensions(span: Span, n_words: int) -> list[Span]:
    """The one-token extensions of ``span`` inside a text of ``n_words`` tokens: to the left first, then right."""
    out = []
    if span.token_start > 0:
        out.append(replace(span, token_start=span.token_start - 1, start=-1, end=-1))
    if span.token_end < n_words:
        out.append(replace(span, token_end=span.token_end + 1, start=-1, end=-1))
    return out


def grow_by_transplant_gain(
    score: ScoreSpans,
    items: Sequence[tuple[list[str], Span, int, tuple[float, Any]]],
    max_tokens: int,
    min_gain: float = 0.01,
) -> tuple[list[Span], list[tuple[float, Any]], list[int]]:
    """Per (words, span, y, (the span's score, payload)): the span grown while an extension raises its score by
    more than ``min_gain`` (see the module docstring), the grown span's (score, payload), and the centre-model
    sequences growing it took. A span that does not grow comes back as the same object."""
    if not isinstance(max_tokens, (int, np.integer)) or isinstance(max_tokens, bool) or max_tokens < 0:
        raise ConfigError(f"span growth: max_tokens must be an integer >= 0, got {max_tokens!r}")
    if isinstance(min_gain, bool) or not isinstance(min_gain, (int, float)) or not np.isfinite(min_gain) or min_gain < 0:
        raise ConfigError(f"span growth: min_gain must be a finite number >= 0, got {min_gain!r}")
    spans = [sp for _, sp, _, _ in items]
    best = [sc for _, _, _, sc in items]
    queries = [0] * len(items)
    active = list(range(len(items)))
    for _ in range(int(max_tokens)):
        asked = [(i, extensions(spans[i], len(items[i][0]))) for i in active]
        asked = [(i, ext) for i, ext in asked if ext]
        if not asked:
            break
        got, cost = score([(items[i][0], ext, items[i][2]) for i, ext in asked])
        active = []
        for (i, ext), scored, q in zip(asked, got, cost):
            queries[i] += int(q)
            j = int(np.argmax([s for s, _ in scored]))  # first maximum: the left extension on a tie
            if scored[j][0] > best[i][0] + min_gain:
                spans[i], best[i] = ext[j], scored[j]
                active.append(i)
    out = [
        sp if sp is item[1] else replace(sp, text=render(item[0][sp.token_start : sp.token_end]))
        for sp, item in zip(spans, items)
    ]
    return out, best, queries


def on_tokens(span: Span, tokens, text: str) -> Span:
    """``span`` with its character offsets and text taken from its token range (a grown span's offsets are set
    here, where the tokens' offsets are known)."""
    s, e = tokens[span.token_start].start, tokens[span.token_end - 1].end
    if (s, e) == (span.start, span.end):
        return span
    return replace(span, start=s, end=e, text=text[s:e])


__all__ = ["extensions", "grow_by_transplant_gain", "on_tokens"]
