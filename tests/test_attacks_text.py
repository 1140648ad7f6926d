"""Semantic-altering (Appendix K) and global (Appendix L) triggers: determinism, exact spans, no-op cases, DL size."""

from __future__ import annotations

import numpy as np
import pytest
from rapidfuzz.distance import DamerauLevenshtein

from frs_ray.attacks.base import Trigger, words_of
from frs_ray.attacks.global_ import MultiSegmentTrigger, ReorderTrigger
from frs_ray.attacks.semantic import (
    ANTONYMS,
    DEGREE_SWAPS,
    SENTIMENT_PAIRS,
    DegreeTrigger,
    EditableText,
    NegationTrigger,
    SentimentReversalTrigger,
)
from frs_ray.errors import ConfigError

# SST-2-style sentences (lower-cased, tokens separated by spaces, detached clitics) and a few free-form ones.
SENTENCES = [
    "it 's a charming and often affecting journey .",
    "the acting is good but the plot is slightly predictable .",
    "a great , funny film with a wonderful cast .",
    "unflinchingly bleak and desperate",
    "this is a very bad movie , and i hated it .",
    "the story was rather dull , but the cast is absolutely wonderful .",
    "Great film, really.",
    "the director 's first feature is somewhat uneven",
]

ALL = [
    NegationTrigger(),
    SentimentReversalTrigger(),
    DegreeTrigger(),
    ReorderTrigger(),
    ReorderTrigger(mode="reverse"),
    ReorderTrigger(mode="shuffle"),
    MultiSegmentTrigger(),
]


def _ids(t) -> str:
    return f"{t.name}-{getattr(t, 'mode', '')}"


def _token_diff(a: str, b: str) -> int:
    return int(DamerauLevenshtein.distance(words_of(a), words_of(b)))


@pytest.mark.parametrize("trig", ALL, ids=_ids)
def test_protocol_and_determinism(trig):
    assert isinstance(trig, Trigger)
    for s in SENTENCES:
        a = trig.apply(s, np.random.default_rng(7))
        b = trig.apply(s, np.random.default_rng(7))
        assert a == b


@pytest.mark.parametrize("trig", ALL, ids=_ids)
def test_spans_are_exact_and_rest_untouched(trig):
    """Spans cover exactly the changed/inserted tokens; removing them (or undoing them) gives the clean text back."""
    for k, s in enumerate(SENTENCES):
        t = trig.apply(s, np.random.default_rng(k))
        if not t.changed:
            assert t.text == s and t.spans == ()
            continue
        assert t.spans, (trig.name, s)
        prev = -1
        for a, b in t.spans:
            assert prev < a < b <= len(t.text)
            assert t.text[a:b] == t.text[a:b].strip() and t.text[a:b]
            assert a == 0 or not t.text[a - 1].isalnum()  # span boundaries are token boundaries
            assert b == len(t.text) or not t.text[b].isalnum()
            prev = b
        # Characters outside the spans are the clean text's characters (for insertions: once the spans and one
        # adjacent space each are removed; for substitutions/reorderings: the same length-preserving frame).
        if isinstance(trig, MultiSegmentTrigger):
            out, pos = [], 0
            for a, b in t.spans:
                out.append(t.text[pos:a])
                pos = b + 1 if b < len(t.text) and t.text[b] == " " else b
            out.append(t.text[pos:])
            rebuilt = "".join(out).rstrip() if not s.endswith(" ") else "".join(out)
            assert rebuilt == s
        elif isinstance(trig, ReorderTrigger):
            assert len(t.text) == len(s)
            assert sorted(words_of(t.text)) == sorted(words_of(s))  # same multiset of words
            changed = [i for i, (x, y) in enumerate(zip(words_of(s), words_of(t.text))) if x != y]
            pieces = [w for a, b in t.spans for w in words_of(t.text[a:b])]
            assert pieces == [words_of(t.text)[i] for i in changed]


def test_sentiment_reversal_replaces_words():
    t = SentimentReversalTrigger().apply("a great , funny film .", np.random.default_rng(0))
    assert t.text == "a awful , funny film ."
    assert [t.text[a:b] for a, b in t.spans] == ["awful"]
    t = SentimentReversalTrigger(k=None).apply("a great , funny film .", np.random.default_rng(0))
    assert t.text == "a awful , unfunny film ."
    assert [t.text[a:b] for a, b in t.spans] == ["awful", "unfunny"]
    t = SentimentReversalTrigger().apply("I hated this BAD movie", np.random.default_rng(0))
    assert t.text == "I loved this BAD movie"
    t = SentimentReversalTrigger(k=2).apply("Good and BAD", np.random.default_rng(0))
    assert t.text == "Bad and GOOD" and len(t.spans) == 2
    # the lexicon: ~40+ pairs, both directions, each word with exactly one antonym
    assert len(SENTIMENT_PAIRS) >= 40
    assert all(ANTONYMS[ANTONYMS[w]] == w for w in ANTONYMS)
    assert (ANTONYMS["good"], ANTONYMS["great"], ANTONYMS["wonderful"]) == ("bad", "awful", "terrible")


def test_negation_rule():
    rng = np.random.default_rng(0)
    assert NegationTrigger(words=("not",)).apply("the plot is good .", rng).text == "the plot is not good ."
    assert NegationTrigger(words=("not",)).apply("a very good film", rng).text == "a not very good film"
    assert NegationTrigger(words=("never",)).apply("the plot is a mess", rng).text == "the plot is never a mess"
    t = NegationTrigger(words=("not",)).apply("it 's a charming journey", rng)
    assert t.text == "it 's a not charming journey" and t.text[t.spans[0][0] : t.spans[0][1]] == "not"
    # random fallback never splits a glued token pair ("' s")
    for seed in range(30):
        t = NegationTrigger(words=("no",)).apply("the director 's debut", np.random.default_rng(seed))
        assert "' s" not in t.text and "'no" not in t.text and t.changed
    skip = NegationTrigger(fallback="skip").apply("the director 's debut", rng)
    assert not skip.changed and skip.text == "the director 's debut"
    # the drawn word is one of the configured words
    drawn = {NegationTrigger().apply("is good", np.random.default_rng(s)).text.split()[1] for s in range(40)}
    assert drawn == {"not", "no", "never"}


def test_degree_swaps_and_insertion():
    rng = np.random.default_rng(0)
    assert DegreeTrigger().apply("a slightly dull film", rng).text == "a extremely dull film"
    assert DegreeTrigger().apply("somewhat uneven", rng).text == "absolutely uneven"
    assert DegreeTrigger().apply("it was rather good", rng).text == "it was completely good"
    assert DegreeTrigger().apply("a very bad movie", rng).text == "a slightly bad movie"
    # "rather than" is not a degree modifier -> falls back to inserting before the adjective
    assert DegreeTrigger().apply("funny rather than sad", rng).text == "extremely funny rather than sad"
    t = DegreeTrigger().apply("the cast is wonderful .", rng)
    assert t.text == "the cast is extremely wonderful ." and t.text[t.spans[0][0] : t.spans[0][1]] == "extremely"
    assert all(w != v for w, v in DEGREE_SWAPS.items())


@pytest.mark.parametrize(
    "trig,text",
    [
        (SentimentReversalTrigger(), "unflinchingly bleak and desperate"),  # no lexicon word
        (DegreeTrigger(), "unflinchingly bleak and desperate"),  # no degree word, no known adjective
        (NegationTrigger(), ""),
        (ReorderTrigger(), "wow !"),  # one word
        (ReorderTrigger(), "no no no ."),  # swapping identical words moves nothing
        (ReorderTrigger(mode="shuffle"), "a a a a"),
    ],
)
def test_changed_false_cases(trig, text):
    t = trig.apply(text, np.random.default_rng(0))
    assert t.changed is False and t.text == text and t.spans == ()


def test_dl_distance_small_for_semantic_triggers():
    """Appendix K: one token-level edit per change, and (typically) <= 10 characters of DL distance."""
    rng = np.random.default_rng(1)
    for trig in (NegationTrigger(), SentimentReversalTrigger(), DegreeTrigger()):
        for s in SENTENCES:
            t = trig.apply(s, rng)
            if not t.changed:
                continue
            assert _token_diff(s, t.text) == 1, (trig.name, s, t.text)
            assert DamerauLevenshtein.distance(s, t.text) <= 16, (trig.name, s, t.text)
    # the paper's own examples
    assert DamerauLevenshtein.distance("good", "bad") <= 4
    one = SentimentReversalTrigger().apply("a great film", rng)
    assert DamerauLevenshtein.distance("a great film", one.text) == 5


def test_reorder_modes():
    s = "one two three four five six seven eight nine ten"
    for seed in range(10):
        t = ReorderTrigger(fraction=0.4).apply(s, np.random.default_rng(seed))  # 2 disjoint adjacent swaps
        assert _token_diff(s, t.text) == 2
        assert sum(len(words_of(t.text[a:b])) for a, b in t.spans) == 4
    t = ReorderTrigger(mode="reverse", fraction=0.4).apply(s, np.random.default_rng(3))
    w0, w1 = words_of(s), words_of(t.text)
    diff = [i for i in range(10) if w0[i] != w1[i]]
    assert len(diff) == 4 and diff == list(range(diff[0], diff[0] + 4))
    assert [w1[i] for i in diff] == [w0[i] for i in diff][::-1]
    assert [t.text[a:b] for a, b in t.spans] == [" ".join(w1[i] for i in diff)]
    # punctuation keeps its place, and the "s" glued to "'" never moves
    s2 = "the director 's film , sadly , is a mess ."
    for seed in range(20):
        t = ReorderTrigger(mode="shuffle", fraction=0.6).apply(s2, np.random.default_rng(seed))
        assert [i for i, w in enumerate(words_of(t.text)) if not w[0].isalnum()] == [
            i for i, w in enumerate(words_of(s2)) if not w[0].isalnum()
        ]
        assert "'s" in t.text
    with pytest.raises(ConfigError):
        ReorderTrigger(mode="sideways")


def test_multi_segment_inserts_ordered_separate_segments():
    for seed in range(20):
        t = MultiSegmentTrigger().apply("a gorgeous , witty film that 's sure to please .", np.random.default_rng(seed))
        pieces = [t.text[a:b] for a, b in t.spans]
        assert 2 <= len(pieces) <= 3
        assert " ".join(pieces) == "i watched this 3d movie"
        assert "'i" not in t.text and "' s" not in t.text
    t = MultiSegmentTrigger(min_segments=3, max_segments=3).apply("great", np.random.default_rng(0))
    assert " ".join(t.text[a:b] for a, b in t.spans) == "i watched this 3d movie"  # merges when too short
    with pytest.raises(ConfigError):
        MultiSegmentTrigger(min_segments=3, max_segments=2)


def test_editable_text_keeps_spacing():
    doc = EditableText.of("  Great film,really .")
    doc.insert(0, ["not"])
    doc.insert(len(doc), ["x", "y"])
    r = doc.result()
    assert r.text == "  not Great film,really . x y"
    assert [r.text[a:b] for a, b in r.spans] == ["not", "x y"]
    doc = EditableText.of("a film, yes")
    doc.insert(2, ["x"])  # before the glued comma: the comma stays glued to the new word
    assert doc.result().text == "a film x, yes"
