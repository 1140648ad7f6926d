"""Span growth by transplant gain (frs_ray/fuzzing/growth.py): the search on fixed score landscapes (table-driven),
its bad input, and the offsets of a grown span. The real check on a real backdoored MiniLM is in
tests/test_transplant.py (``grow``)."""

from __future__ import annotations

import pytest

from frs_ray.errors import ConfigError
from frs_ray.fuzzing import Span
from frs_ray.fuzzing.growth import extensions, grow_by_transplant_gain, on_tokens
from frs_ray.text import tokenize

WORDS = "a b c d e f g h i j".split()


def _span(a: int, b: int) -> Span:
    return Span(a, b, 0, 0, " ".join(WORDS[a:b]), 1.0, 1)


def trigger_landscape(lo: int, hi: int, per_piece: float = 0.15, per_other: float = 0.001):
    """A score that rises with each token of [lo, hi) the span covers and falls slightly with each other token."""

    def value(a: int, b: int) -> float:
        inside = max(0, min(b, hi) - max(a, lo))
        return 0.1 + per_piece * inside - per_other * ((b - a) - inside)

    return value


def scorer(value, calls: list):
    def score(asked):
        calls.append(sum(len(spans) for _, spans, _ in asked))
        return [[(value(sp.token_start, sp.token_end), None) for sp in spans] for _, spans, _ in asked], [
            10 * len(spans) for _, spans, _ in asked
        ]

    return score


@pytest.mark.parametrize(
    "start, lo, hi, max_tokens, min_gain, expect, n_calls",
    [
        ((5, 6), 3, 8, 8, 0.01, (3, 8), 5),  # a piece in the middle grows to the whole trigger, both ways
        ((3, 4), 3, 8, 8, 0.01, (3, 8), 5),  # from the trigger's first token: right only
        ((7, 8), 3, 8, 8, 0.01, (3, 8), 5),  # from its last token: left only
        ((5, 6), 3, 8, 2, 0.01, (3, 6), 2),  # max_tokens caps the growth (both ties go left)
        ((5, 6), 3, 8, 0, 0.01, (5, 6), 0),  # no growth, no call
        ((5, 6), 5, 6, 8, 0.01, (5, 6), 1),  # a one-token trigger: neither neighbour adds anything
        ((5, 6), 3, 8, 8, 0.2, (5, 6), 1),  # each token adds 0.15: not more than min_gain 0.2
        ((0, 1), 0, 10, 20, 0.01, (0, 10), 9),  # stops at the text's edges (nothing left to ask)
    ],
)
def test_growth_finds_the_extent_of_the_rising_score(start, lo, hi, max_tokens, min_gain, expect, n_calls):
    calls: list = []
    value = trigger_landscape(lo, hi)
    sp = _span(*start)
    out, best, q = grow_by_transplant_gain(scorer(value, calls), [(WORDS, sp, 1, (value(*start), None))], max_tokens, min_gain)
    assert (out[0].token_start, out[0].token_end) == expect
    assert best[0][0] == pytest.approx(value(*expect))
    assert len(calls) == n_calls  # one scorer call per step while the span still grows
    assert q[0] == 10 * sum(calls)  # the scorer's per-text sequences, added up
    if expect == start:
        assert out[0] is sp  # not grown: the very span MCTS found
    else:
        assert out[0].text == " ".join(WORDS[expect[0] : expect[1]]) and out[0].start == -1  # offsets: on_tokens


def test_tie_goes_left_and_texts_share_each_step():
    """Equal gains on both sides: the left extension; two texts growing are scored in one call per step."""
    calls: list = []
    flat = lambda a, b: 0.1 + 0.1 * (b - a)  # noqa: E731  every token adds 0.1 on either side
    items = [(WORDS, _span(5, 6), 0, (flat(5, 6), None)), (WORDS, _span(2, 3), 1, (flat(2, 3), None))]
    out, _, _ = grow_by_transplant_gain(scorer(flat, calls), items, 1)
    assert [(s.token_start, s.token_end) for s in out] == [(4, 6), (1, 3)]
    assert calls == [4]  # one call: 2 extensions of each of the 2 texts


def test_extensions_stay_inside_the_text():
    assert [(s.token_start, s.token_end) for s in extensions(_span(0, 2), 10)] == [(0, 3)]
    assert [(s.token_start, s.token_end) for s in extensions(_span(8, 10), 10)] == [(7, 10)]
    assert extensions(_span(0, 10), 10) == []


@pytest.mark.parametrize(
    "max_tokens, min_gain, match",
    [
        (-1, 0.01, "max_tokens"),
        (True, 0.01, "max_tokens"),
        (1.5, 0.01, "max_tokens"),
        (2, -0.1, "min_gain"),
        (2, float("nan"), "min_gain"),
    ],
)
def test_bad_growth_parameters_are_refused(max_tokens, min_gain, match):
    with pytest.raises(ConfigError, match=match):
        grow_by_transplant_gain(scorer(trigger_landscape(0, 1), []), [], max_tokens, min_gain)


def test_a_grown_span_gets_the_offsets_of_its_tokens():
    text = "the plot ,  i watch this 3d movie ."
    toks = tokenize(text)
    words = [t.text for t in toks]
    i = words.index("3d")
    piece = Span(i, i + 1, toks[i].start, toks[i].end, "3d", 1.0, 1)
    assert on_tokens(piece, toks, text) is piece  # already right: unchanged
    grown = on_tokens(Span(i - 3, i + 2, -1, -1, "", 1.0, 1), toks, text)
    assert text[grown.start : grown.end] == grown.text == "i watch this 3d movie"
