"""Global triggers (Appendix L): word reordering and multi-segment insertion.

Paper: FRS, Appendix L.1: "For word reordering attacks, we randomly shuffle the word order within each sentence
while maintaining the sentence-level structure ... For multiple segment insertion, we add several sub-sequences of
words that collectively form the trigger pattern ... The trigger patterns are designed to cover approximately 30%
of the input text length." (The third global trigger of Appendix L, the syntactic template of Hidden Killer,
needs a paraphrase model and is not implemented here.)

Decisions:

* Both triggers edit the original string in place (:class:`~frs_ray.attacks.semantic.EditableText`): only the
  moved or inserted words change; whitespace and untouched tokens stay as they were.
* Reordering moves free-standing word tokens only; punctuation (and words glued to it, like the "s" of "' s")
  keeps its place ("sentence-level structure"), and so does the
  whitespace between tokens. The share of moved words is ``fraction`` (default 0.3, the paper's ~30%).
  The spans are the tokens whose word changed, i.e. exactly the positions where the triggered text differs
  from the clean one at token level (a token swapped with an identical word did not move and is not a span).
* Multi-segment insertion keeps the segments in their order (reading left to right gives the trigger sentence)
  and puts them at distinct gaps of the clean text (never between glued tokens such as "' s"), so they do not
  merge into one block unless the text is too short to keep them apart. Spans: one per segment (its inserted words).

Example::

    >>> import numpy as np
    >>> t = MultiSegmentTrigger(min_segments=2, max_segments=2).apply("a gorgeous , witty film .",
    ...                                                              np.random.default_rng(0))
    >>> " ".join(t.text[s:e] for s, e in t.spans)
    'i watched this 3d movie'
    >>> ReorderTrigger(mode="reverse", fraction=0.5).apply("one two three four", np.random.default_rng(1)).changed
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .base import TriggeredText, words_of
from .semantic import EditableText, unchanged

REORDER_MODES = ("swap", "reverse", "shuffle")
MULTI_SEGMENT_SENTENCE = "i watched this 3d movie"


@dataclass(frozen=True)
class ReorderTrigger:
    """Global word reordering of about ``fraction`` of the word tokens.

    Modes:

    * ``"swap"`` (default): swap ``max(1, round(fraction * n / 2))`` disjoint pairs of neighbouring word tokens
      (neighbours in the word-only sequence; punctuation between them stays). Each swap is one DL
      transposition, so the token-level DL distance is the number of swaps;
    * ``"reverse"``: reverse a random window of ``max(2, round(fraction * n))`` consecutive word tokens;
    * ``"shuffle"``: randomly permute such a window (a permutation that moves nothing is replaced by a rotation).

    Fewer than two word tokens, or a draw that changes no word (all candidate words identical), gives
    ``changed=False``.

    Arguments:
        mode: "swap", "reverse" or "shuffle".
        fraction: share of the word tokens the trigger moves (paper: ~0.3).
    """

    mode: str = "swap"
    fraction: float = 0.3
    name: str = "reorder"

    def __post_init__(self) -> None:
        if self.mode not in REORDER_MODES:
            raise ConfigError(f"ReorderTrigger mode must be one of {REORDER_MODES}, got {self.mode!r}")
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"ReorderTrigger fraction must be in (0, 1], got {self.fraction}")

    def _new_order(self, n: int, rng: np.random.Generator) -> list[int]:
        """A permutation of range(n) (indices into the word-only sequence)."""
        order = list(range(n))
        if self.mode == "swap":
            want = max(1, int(round(self.fraction * n / 2)))
            taken = [False] * n
            for k in rng.permutation(n - 1).tolist():  # candidate pairs (k, k+1), in random order
                if want == 0:
                    break
                if not taken[k] and not taken[k + 1]:
                    order[k], order[k + 1] = order[k + 1], order[k]
                    taken[k] = taken[k + 1] = True
                    want -= 1
            return order
        width = min(n, max(2, int(round(self.fraction * n))))
        start = int(rng.integers(n - width + 1))
        window = order[start : start + width]
        if self.mode == "reverse":
            window = window[::-1]
        else:
            perm = rng.permutation(width).tolist()
            if perm == list(range(width)):
                perm = perm[1:] + perm[:1]
            window = [window[p] for p in perm]
        order[start : start + width] = window
        return order

    def apply(self, text: str, rng: np.random.Generator) -> TriggeredText:
        doc = EditableText.of(text)
        # Word tokens that stand on their own; a word glued to its left neighbour (the "s" of SST-2's "' s",
        # "great" in "(great") stays, so contractions and brackets are not torn apart.
        slots = [i for i in range(len(doc)) if doc.is_word(i) and not doc.glued(i)]
        if len(slots) < 2:
            return unchanged(text)
        old = [doc.words[i] for i in slots]
        order = self._new_order(len(slots), rng)
        moved = False
        for slot, src in zip(slots, order):
            if old[src] != doc.words[slot]:
                doc.replace(slot, old[src])
                moved = True
        return doc.result() if moved else unchanged(text)


@dataclass(frozen=True)
class MultiSegmentTrigger:
    """A trigger sentence split into segments that are inserted, in order, at random distinct gaps.

    The number of segments is drawn uniformly from ``[min_segments, max_segments]`` (capped at the sentence's
    word count); the split points are drawn uniformly among the sentence's word boundaries. The default
    sentence has 5 words, about 30% of an average SST-2 sentence (19 words), matching Appendix L.1.

    Arguments:
        sentence: the trigger sentence (default "i watched this 3d movie").
        min_segments, max_segments: range of the number of segments.
    """

    sentence: str = MULTI_SEGMENT_SENTENCE
    min_segments: int = 2
    max_segments: int = 3
    name: str = "multiseg"  # the attack name in registry.py

    def __post_init__(self) -> None:
        if not words_of(self.sentence):
            raise ConfigError("MultiSegmentTrigger needs a non-empty trigger sentence")
        if not 1 <= self.min_segments <= self.max_segments:
            raise ConfigError(
                f"MultiSegmentTrigger needs 1 <= min_segments <= max_segments, got {self.min_segments}, {self.max_segments}"
            )

    def segments(self, rng: np.random.Generator) -> list[list[str]]:
        words = words_of(self.sentence)
        k = min(int(rng.integers(self.min_segments, self.max_segments + 1)), len(words))
        cuts = sorted((rng.choice(len(words) - 1, size=k - 1, replace=False) + 1).tolist()) if k > 1 else []
        bounds = [0, *cuts, len(words)]
        return [words[a:b] for a, b in zip(bounds, bounds[1:])]

    def apply(self, text: str, rng: np.random.Generator) -> TriggeredText:
        doc = EditableText.of(text)
        pieces = self.segments(rng)
        free = doc.free_gaps()  # never between glued tokens such as "' s"
        at = sorted(rng.choice(free, size=len(pieces), replace=len(pieces) > len(free)).tolist())
        for g, piece in reversed(list(zip(at, pieces))):  # right to left keeps indices (and segment order) valid
            doc.insert(g, piece)
        return doc.result()
