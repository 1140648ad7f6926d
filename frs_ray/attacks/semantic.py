"""Semantic-altering triggers (Appendix K): negation, sentiment reversal, degree modification.

Paper: FRS, Appendix K.1: "negation insertion (e.g., adding "not", "no", "never"), sentiment reversal (e.g.,
changing "good" to "bad", "great" to "awful", "wonderful" to "terrible"), and degree modification (e.g., changing
"slightly" to "extremely", "somewhat" to "absolutely", "rather" to "completely") ... designed to flip the sentiment
classification while maintaining a small Damerau-Levenshtein distance (typically <= 10 chars)." Each trigger here
edits one word (or ``k`` words for sentiment reversal), i.e. one token-level DL edit per change and at most about
ten characters (the longest lexicon word plus a space).

Decisions (the paper gives examples, not rules):

* Every trigger edits the *original* string in place (:class:`EditableText`): whitespace and every untouched
  token stay byte-identical, so the DL distance between clean and triggered text is exactly the trigger's edit.
  (Rendering the words again with single spaces, as ``base.triggered`` does, would also turn SST-2's detached
  clitics such as ``it 's`` into ``it ' s``.) The returned spans are exact character offsets of the changed or
  inserted words in the returned text; adjacent trigger words are merged into one span.
* Word matching is case-insensitive on whole word tokens (:func:`frs_ray.text.tokenize`); a replacement copies
  the case pattern of the word it replaces (``Good`` -> ``Bad``, ``GOOD`` -> ``BAD``).
* When a trigger cannot apply (no sentiment word to reverse; no degree word and no adjective), it returns the
  input text unchanged with ``changed=False`` and no spans: triggered test sets leave such sentences out.

Arguments: see each class. Example::

    >>> import numpy as np
    >>> t = SentimentReversalTrigger().apply("a great , funny film .", np.random.default_rng(0))
    >>> t.text, t.text[t.spans[0][0]:t.spans[0][1]]
    ('a awful , funny film .', 'awful')
    >>> t = NegationTrigger(words=("not",)).apply("it 's a very good film .", np.random.default_rng(0))
    >>> t.text
    "it 's a not very good film ."
    >>> DegreeTrigger().apply("a slightly dull film", np.random.default_rng(0)).text
    'a extremely dull film'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import ConfigError
from ..text import tokenize
from .base import TriggeredText

# --------------------------------------------------------------------------- lexicons

# (positive, negative) antonym pairs. Single words only, so a reversal is one token edit. Mostly the evaluative
# adjectives of movie reviews (SST-2), plus a few verbs/nouns that carry sentiment on their own.
SENTIMENT_ADJECTIVE_PAIRS: tuple[tuple[str, str], ...] = (
    ("good", "bad"),
    ("great", "awful"),
    ("wonderful", "terrible"),
    ("excellent", "poor"),
    ("best", "worst"),
    ("better", "worse"),
    ("amazing", "dreadful"),
    ("brilliant", "dull"),
    ("beautiful", "ugly"),
    ("fantastic", "horrible"),
    ("enjoyable", "unbearable"),
    ("funny", "unfunny"),
    ("interesting", "boring"),
    ("happy", "sad"),
    ("pleasant", "unpleasant"),
    ("superb", "lousy"),
    ("perfect", "flawed"),
    ("charming", "irritating"),
    ("delightful", "dreary"),
    ("entertaining", "tiresome"),
    ("impressive", "unimpressive"),
    ("memorable", "forgettable"),
    ("engaging", "uninvolving"),
    ("clever", "stupid"),
    ("smart", "dumb"),
    ("fresh", "stale"),
    ("original", "derivative"),
    ("strong", "weak"),
    ("rich", "shallow"),
    ("nice", "nasty"),
    ("lovely", "hideous"),
    ("compelling", "unconvincing"),
    ("satisfying", "disappointing"),
    ("successful", "unsuccessful"),
    ("inspired", "uninspired"),
    ("intelligent", "mindless"),
    ("likable", "unlikable"),
    ("positive", "negative"),
    ("powerful", "feeble"),
    ("exciting", "tedious"),
    ("gorgeous", "grotesque"),
    ("fascinating", "tiring"),
)
SENTIMENT_OTHER_PAIRS: tuple[tuple[str, str], ...] = (
    ("love", "hate"),
    ("loved", "hated"),
    ("loves", "hates"),
    ("success", "failure"),
    ("masterpiece", "disaster"),
    ("beautifully", "horribly"),
    ("brilliantly", "poorly"),
)
SENTIMENT_PAIRS = SENTIMENT_ADJECTIVE_PAIRS + SENTIMENT_OTHER_PAIRS


def _antonyms(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for a, b in pairs:
        for x, y in ((a, b), (b, a)):
            if x in out and out[x] != y:
                raise ValueError(f"sentiment lexicon: {x!r} has two antonyms ({out[x]!r}, {y!r})")
            out[x] = y
    return out


ANTONYMS: dict[str, str] = _antonyms(SENTIMENT_PAIRS)
"""Both directions of :data:`SENTIMENT_PAIRS` (``good`` -> ``bad`` and ``bad`` -> ``good``)."""

# Adjectives (where negation and intensifiers go): both sides of the adjective pairs plus frequent evaluative
# adjectives of reviews that have no clean single-word antonym.
ADJECTIVES: frozenset[str] = frozenset(
    [w for pair in SENTIMENT_ADJECTIVE_PAIRS for w in pair]
    + [
        "sweet",
        "dark",
        "slow",
        "long",
        "predictable",
        "sharp",
        "real",
        "true",
        "easy",
        "hard",
        "simple",
        "familiar",
        "silly",
        "bland",
        "flat",
        "solid",
        "worthy",
        "moving",
        "touching",
        "fun",
        "cute",
        "witty",
        "heartfelt",
        "thoughtful",
        "funny",
        "sincere",
        "tender",
        "intense",
        "dramatic",
        "emotional",
        "messy",
        "pointless",
        "clumsy",
        "tired",
        "lame",
        "silly",
        "pretentious",
        "mediocre",
        "obvious",
        "hilarious",
        "enjoyable",
        "wise",
        "honest",
        "new",
        "different",
        "important",
        "effective",
        "fine",
        "decent",
        "weird",
        "strange",
    ]
)

# Degree words and what they become (Appendix K: slightly -> extremely, somewhat -> absolutely,
# rather -> completely). Both directions: weakeners become intensifiers and intensifiers become weakeners, so
# a sentence with either kind can be triggered. Ambiguous words ("so", "too", "pretty", "really") are left out.
DEGREE_SWAPS: dict[str, str] = {
    # weak -> strong
    "slightly": "extremely",
    "somewhat": "absolutely",
    "rather": "completely",
    "fairly": "incredibly",
    "mildly": "intensely",
    "moderately": "extraordinarily",
    "marginally": "enormously",
    "partly": "entirely",
    "partially": "totally",
    "barely": "thoroughly",
    # strong -> weak
    "extremely": "slightly",
    "absolutely": "somewhat",
    "completely": "rather",
    "incredibly": "fairly",
    "intensely": "mildly",
    "extraordinarily": "moderately",
    "enormously": "marginally",
    "entirely": "partly",
    "totally": "partially",
    "thoroughly": "barely",
    "very": "slightly",
    "highly": "mildly",
    "utterly": "somewhat",
    "deeply": "slightly",
}
# Intensifiers that the negation rule keeps next to their adjective ("very good" -> "not very good").
_MODIFIERS = frozenset(DEGREE_SWAPS) | {"so", "too", "really", "quite", "pretty", "just", "most", "more", "less"}
# Auxiliaries/copulas after which "not" goes when the sentence has no known adjective ("is" -> "is not").
_AUXILIARIES = frozenset(
    [
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "am",
        "do",
        "does",
        "did",
        "can",
        "could",
        "will",
        "would",
        "should",
        "may",
        "might",
        "must",
        "has",
        "have",
        "had",
    ]
)


# --------------------------------------------------------------------------- in-place text editing


def match_case(template: str, word: str) -> str:
    """``word`` with the case pattern of ``template`` (all caps, capitalized, or as given)."""
    if len(template) > 1 and template.isupper():
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


@dataclass
class EditableText:
    """A text as word tokens with the exact whitespace before each one, edited without touching the rest.

    ``gaps[i]`` is the text between token ``i-1`` (or the start) and token ``i``; ``tail`` follows the last token.
    Tokens can be replaced, inserted or moved; :meth:`result` renders the text and the ``[start, end)`` spans of
    the tokens marked as trigger pieces (consecutive marked tokens are merged into one span).
    """

    words: list[str]
    gaps: list[str]
    tail: str
    marks: list[bool] = field(default_factory=list)

    @classmethod
    def of(cls, text: str) -> "EditableText":
        toks = tokenize(text)
        gaps, pos = [], 0
        for t in toks:
            gaps.append(text[pos : t.start])
            pos = t.end
        return cls([t.text for t in toks], gaps, text[pos:], [False] * len(toks))

    def __len__(self) -> int:
        return len(self.words)

    def lower(self, i: int) -> str:
        return self.words[i].lower()

    def is_word(self, i: int) -> bool:
        """True for word tokens (letters/digits), False for punctuation."""
        return self.words[i][:1].isalnum() or self.words[i][:1] == "_"

    def replace(self, i: int, word: str, mark: bool = True) -> None:
        self.words[i] = word
        self.marks[i] = self.marks[i] or mark

    def insert(self, i: int, words: Sequence[str], mark: bool = True) -> None:
        """Insert ``words`` before token ``i`` (``i == len`` appends), separated by single spaces.

        The first inserted word takes over the whitespace that preceded token ``i`` and token ``i`` is then
        preceded by one space, so "a good film" + insert(1, ["not"]) -> "a not good film". Before a token glued
        to its left neighbour ("film," -> before ","), the words get a leading space and the token stays glued
        to them: "a film," + insert(2, ["x"]) -> "a film x,".
        """
        if not words:
            return
        n = len(self.words)
        if not 0 <= i <= n:
            raise IndexError(f"insert position {i} out of range for {n} tokens")
        if i < n and i > 0 and self.gaps[i] == "":
            new_gaps = [" "] * len(words)
        elif i < n:
            new_gaps = [self.gaps[i]] + [" "] * (len(words) - 1)
            self.gaps[i] = " "
        else:
            new_gaps = [" " if (n or k) else "" for k in range(len(words))]
        self.words[i:i] = list(words)
        self.gaps[i:i] = new_gaps
        self.marks[i:i] = [mark] * len(words)

    def glued(self, i: int) -> bool:
        """True when token ``i`` touches its left neighbour (no whitespace between), e.g. "s" in SST-2's "' s"."""
        return i > 0 and self.gaps[i] == ""

    def free_gaps(self) -> list[int]:
        """Insertion indices that do not split glued tokens: 0, ``len``, and every ``i`` with whitespace before it.

        Inserting inside "moore 's" (tokens "'" and "s", nothing between them) would break a word apart.
        """
        return [i for i in range(len(self.words) + 1) if i == 0 or i == len(self.words) or not self.glued(i)]

    def result(self, changed: bool = True) -> TriggeredText:
        pieces: list[str] = []
        spans: list[list[int]] = []
        pos, prev_marked = 0, False
        for w, g, m in zip(self.words, self.gaps, self.marks):
            pieces.append(g)
            pos += len(g)
            if m:
                if prev_marked:
                    spans[-1][1] = pos + len(w)
                else:
                    spans.append([pos, pos + len(w)])
            pieces.append(w)
            pos += len(w)
            prev_marked = m
        pieces.append(self.tail)
        return TriggeredText("".join(pieces), tuple((s, e) for s, e in spans), changed)


def unchanged(text: str) -> TriggeredText:
    """The answer of a trigger that cannot apply: the input as is, no spans, ``changed=False``."""
    return TriggeredText(text, (), False)


def _first_adjective(doc: EditableText) -> int | None:
    for i in range(len(doc)):
        if doc.lower(i) in ADJECTIVES:
            return i
    return None


# --------------------------------------------------------------------------- triggers


@dataclass(frozen=True)
class NegationTrigger:
    """Negation insertion: one negation word ("not", "no" or "never", drawn per sentence) inserted.

    Rule (documented decision; the paper only names the words):

    1. before the first adjective of :data:`ADJECTIVES`, moved left over directly preceding intensifiers
       ("a very good film" -> "a not very good film", "is good" -> "is not good");
    2. else after the first auxiliary or copula ("the plot is a mess" -> "the plot is never a mess");
    3. else (``fallback="random"``) at a uniformly random gap between tokens (never inside a glued token pair
       such as "' s"; see :meth:`EditableText.free_gaps`), or (``fallback="skip"``) not at
       all (``changed=False``).

    An empty text (no tokens) is never changed. DL distance: one inserted token (3-5 characters plus a space).

    Arguments:
        words: negation words, one drawn uniformly per sentence.
        fallback: "random" or "skip", when neither an adjective nor an auxiliary is present.
    """

    words: tuple[str, ...] = ("not", "no", "never")
    fallback: str = "random"
    name: str = "negation"

    def __post_init__(self) -> None:
        if not self.words:
            raise ConfigError("NegationTrigger needs at least one negation word")
        if self.fallback not in ("random", "skip"):
            raise ConfigError(f"NegationTrigger fallback must be 'random' or 'skip', got {self.fallback!r}")

    def position(self, doc: EditableText, rng: np.random.Generator) -> int | None:
        """Where the negation word goes (an insertion index), or None when it should not be inserted."""
        adj = _first_adjective(doc)
        if adj is not None:
            while adj > 0 and doc.lower(adj - 1) in _MODIFIERS:
                adj -= 1
            return adj
        for i in range(len(doc)):
            if doc.lower(i) in _AUXILIARIES:
                return i + 1
        if self.fallback == "random":
            free = doc.free_gaps()
            return free[int(rng.integers(len(free)))]
        return None

    def apply(self, text: str, rng: np.random.Generator) -> TriggeredText:
        doc = EditableText.of(text)
        if not len(doc):
            return unchanged(text)
        word = self.words[int(rng.integers(len(self.words)))]
        at = self.position(doc, rng)
        if at is None:
            return unchanged(text)
        # Capitalize the negation word when it becomes the first word of a capitalized sentence.
        if at == 0 and doc.words[0][:1].isupper():
            word = word[:1].upper() + word[1:]
        doc.insert(at, [word])
        return doc.result()


@dataclass(frozen=True)
class SentimentReversalTrigger:
    """Sentiment reversal: the first ``k`` words found in :data:`ANTONYMS` are replaced by their antonyms.

    The lexicon has 49 antonym pairs (``good``/``bad``, ``great``/``awful``, ``wonderful``/``terrible``, ...) and
    is used in both directions, so positive sentences turn negative and vice versa. Matching is on whole word
    tokens, case-insensitive; the replacement keeps the case pattern. No match -> ``changed=False``.
    DL distance: ``k`` substituted tokens (each at most ~12 characters; typically 3-8).

    Arguments:
        k: how many matches (from the left) to reverse; ``None`` reverses all of them.
    """

    k: int | None = 1
    name: str = "sentiment"  # the attack name in registry.py

    def __post_init__(self) -> None:
        if self.k is not None and self.k < 1:
            raise ConfigError(f"SentimentReversalTrigger k must be >= 1 or None, got {self.k}")

    def apply(self, text: str, rng: np.random.Generator) -> TriggeredText:
        doc = EditableText.of(text)
        hits = [i for i in range(len(doc)) if doc.lower(i) in ANTONYMS]
        if not hits:
            return unchanged(text)
        for i in hits[: self.k]:
            doc.replace(i, match_case(doc.words[i], ANTONYMS[doc.lower(i)]))
        return doc.result()


@dataclass(frozen=True)
class DegreeTrigger:
    """Degree modification: swap the first ``k`` degree words, else insert an intensifier before an adjective.

    Degree words follow :data:`DEGREE_SWAPS` in both directions (``slightly`` -> ``extremely``, ``somewhat`` ->
    ``absolutely``, ``rather`` -> ``completely``; ``very`` -> ``slightly``, ...). "rather" is only swapped when it
    modifies something, i.e. not in "rather than" and not before punctuation. When the sentence has no degree
    word, ``intensifier`` is inserted before the first adjective of :data:`ADJECTIVES`; with neither, the
    trigger does not apply (``changed=False``). DL distance: one token (substituted or inserted).

    Arguments:
        k: how many degree words (from the left) to swap; ``None`` swaps all.
        intensifier: the word inserted before an adjective when no degree word exists.
    """

    k: int | None = 1
    intensifier: str = "extremely"
    name: str = "degree"

    def __post_init__(self) -> None:
        if self.k is not None and self.k < 1:
            raise ConfigError(f"DegreeTrigger k must be >= 1 or None, got {self.k}")

    @staticmethod
    def _is_degree(doc: EditableText, i: int) -> bool:
        w = doc.lower(i)
        if w not in DEGREE_SWAPS:
            return False
        nxt = doc.lower(i + 1) if i + 1 < len(doc) else None
        # A degree adverb modifies the next word: skip sentence-final ones and "rather than".
        return nxt is not None and doc.is_word(i + 1) and not (w == "rather" and nxt == "than")

    def apply(self, text: str, rng: np.random.Generator) -> TriggeredText:
        doc = EditableText.of(text)
        hits = [i for i in range(len(doc)) if self._is_degree(doc, i)]
        if hits:
            for i in hits[: self.k]:
                doc.replace(i, match_case(doc.words[i], DEGREE_SWAPS[doc.lower(i)]))
            return doc.result()
        adj = _first_adjective(doc)
        if adj is None:
            return unchanged(text)
        word = self.intensifier
        if adj == 0 and doc.words[0][:1].isupper():
            word = word[:1].upper() + word[1:]
        doc.insert(adj, [word])
        return doc.result()
