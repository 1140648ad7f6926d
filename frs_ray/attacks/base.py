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
from ..text import render, tokenize


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


def spans_of_positions(words: Sequence[str], positions: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Character spans of ``words[i]`` (i in ``positions``) in ``render(words)``, merged when adjacent."""
    starts, pos = [], 0
    for w in words:
        starts.append(pos)
        pos += len(w) + 1
    spans: list[list[int]] = []
    for i in sorted(set(positions)):
        s, e = starts[i], starts[i] + len(words[i])
        if spans and spans[-1][1] + 1 == s and spans[-1][2] + 1 == i:
            spans[-1][1], spans[-1][2] = e, i
        else:
            spans.append([s, e, i])
    return tuple((s, e) for s, e, _ in spans)


def insert_words(words: Sequence[str], pieces: Sequence[Sequence[str]], where: str,
                 rng: np.random.Generator) -> tuple[list[str], list[int]]:
    """Insert each piece (a word sequence) at a position chosen by ``where``; return the words and trigger indices.

    ``where``: ``"random"`` (uniform over the len+1 gaps, independently per piece), ``"start"``, ``"end"``,
    or ``"middle"``.
    """
    out = list(words)
    marks = [False] * len(out)
    for piece in pieces:
        n = len(out)
        if where == "random":
            at = int(rng.integers(n + 1))
        elif where == "start":
            at = 0
        elif where == "end":
            at = n
        elif where == "middle":
            at = n // 2
        else:
            raise ConfigError(f"unknown trigger position {where!r}; use random, start, end or middle")
        out[at:at] = list(piece)
        marks[at:at] = [True] * len(piece)
    return out, [i for i, m in enumerate(marks) if m]


def triggered(words: Sequence[str], positions: Sequence[int], changed: bool = True) -> TriggeredText:
    return TriggeredText(render(words), spans_of_positions(words, positions), changed)


@dataclass
class TriggeredSet:
    """Triggered versions of the non-target sentences of a clean set (what ASR and PA are measured on)."""

    texts: list[str]
    labels: list[int]          # original (correct) labels
    target: int
    spans: list[tuple[tuple[int, int], ...]]
    source: str
    sha256: str
    trigger: str
    seed: int
    skipped: int = 0           # sentences the trigger could not change (left out)
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)
