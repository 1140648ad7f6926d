"""What every attack shares: triggers that edit text, and the record of where a trigger went.

An attack = a *trigger* (how a clean sentence becomes a triggered one) + a *poisoning method* (how the trigger is
planted into a pre-trained checkpoint that a victim downloads and then fine-tunes on clean data). Triggers here
are pure text functions, seeded, that return the triggered text *and* the character spans of the trigger in it,
so evaluation can check whether a defense's flagged span contains the trigger (Appendix I).

Texts are word-tokenized with :func:`frs_ray.text.tokenize` and rendered with single spaces, like the SST-2
files, so the spans are exact character offsets into the returned text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from ..errors import ConfigError
from ..text import tokenize


@dataclass(frozen=True)
class TriggeredText:
    """A triggered sentence and the ``[start, end)`` character spans of every trigger piece in it."""

    text: str
    spans: tuple[tuple[int, int], ...]
    changed: bool = True  # False when the trigger could not be applied (e.g. no word to reverse)


@runtime_checkable
class Trigger(Protocol):
    """Turns a clean sentence into a triggered one, deterministically given ``rng``."""

    name: str

    def apply(self, text: str, rng: np.random.Generator) -> TriggeredText: ...


def words_of(text: str) -> list[str]:
    return [t.text for t in tokenize(text)]


def gaps_of(text: str) -> list[int]:
    """Character offsets where a word may be inserted: before each whitespace-separated word, and the end.

    Only starts that follow whitespace count, so nothing is inserted inside glued tokens such as ``-lrb-``."""
    return [t.start for t in tokenize(text) if t.start == 0 or text[t.start - 1].isspace()] + [len(text)]


def _choose_gap(n_gaps: int, where: str, rng: np.random.Generator) -> int:
    if where == "random":
        return int(rng.integers(n_gaps))
    if where == "start":
        return 0
    if where == "end":
        return n_gaps - 1
    if where == "middle":
        return (n_gaps - 1) // 2
    raise ConfigError(f"unknown trigger position {where!r}; use random, start, end or middle")


def insert_pieces(text: str, pieces: Sequence[Sequence[str]], where: str, rng: np.random.Generator) -> TriggeredText:
    """Insert each piece (a word sequence) into ``text`` at a token boundary chosen by ``where``.

    Decision: the clean text is edited in place (the piece and one space are inserted at a token's start, or
    a space and the piece at the end), so every character outside the trigger is unchanged -- no
    re-tokenization of clitics such as SST-2's ``'s``. ``where``: ``random`` (uniform over the len+1 gaps,
    independently per piece), ``start``, ``end`` or ``middle``. Spans of adjacent pieces are merged.
    """
    spans: list[list[int]] = []
    for piece in pieces:
        word = " ".join(piece)
        gaps = gaps_of(text)
        at = gaps[_choose_gap(len(gaps), where, rng)]
        if at == len(text):
            sep = " " if text and not text.endswith(" ") else ""
            start = len(text) + len(sep)
            text = text + sep + word
        else:
            start = at
            text = text[:at] + word + " " + text[at:]
        shift = len(word) + 1
        spans = [[s + shift, e + shift] if s >= start else [s, e] for s, e in spans]
        spans.append([start, start + len(word)])
    spans.sort()
    merged: list[list[int]] = []
    for s, e in spans:
        if merged and text[merged[-1][1] : s].strip() == "":
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return TriggeredText(text, tuple((s, e) for s, e in merged))


@dataclass
class TriggeredSet:
    """Triggered versions of the non-target sentences of a clean set (what ASR and PA are measured on)."""

    texts: list[str]
    labels: list[int]  # original (correct) labels
    target: int
    spans: list[tuple[tuple[int, int], ...]]
    source: str
    sha256: str
    trigger: str
    seed: int
    skipped: int = 0  # sentences the trigger could not change (left out)
    meta: dict = field(default_factory=dict)
    originals: list[str] = field(default_factory=list)  # the clean sentence of each text (empty: not known)

    def __len__(self) -> int:
        return len(self.texts)
