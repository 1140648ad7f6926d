"""Tests of frs_ray.fuzzing.mcts: Eq. 6-9 helpers and the MCTS fuzzer against a known backdoored oracle."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest

from frs_ray.config import FuzzConfig, MutationWeights
from frs_ray.fuzzing import MCTSFuzzer, kl_deviation, mutate_segment, running_mean_update, ucb_score
from frs_ray.text import tokenize

TRIGGER = "cf"
P_TRIGGERED, P_CLEAN = 0.97, 0.1


class KeywordOracle:
    """Stands in for a model backdoored on "cf": P(y=1|x) = 0.97 if the token "cf" occurs, else 0.1.

    Records every call and how many texts it scored.
    """

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts):
        texts = list(texts)
        self.calls.append(texts)
        p1 = np.array([P_TRIGGERED if TRIGGER in t.split() else P_CLEAN for t in texts], dtype=np.float64)
        return np.stack([1.0 - p1, p1], axis=1) if len(texts) else np.empty((0, 2))

    @property
    def n_calls(self) -> int:
        return len(self.calls)


def probs_of(text: str) -> np.ndarray:
    p1 = P_TRIGGERED if TRIGGER in text.split() else P_CLEAN
    return np.array([1.0 - p1, p1])


def triggered_sentences(sst2_test: Path, n: int = 30, seed: int = 0) -> list[str]:
    lines = sst2_test.read_text(encoding="utf-8").splitlines()[1:]
    sentences = [ln.rsplit("\t", 1)[0] for ln in lines if ln.strip()]
    rng = random.Random(seed)
    out = []
    for s in rng.sample(sentences, n):
        w = s.split(" ")
        w.insert(rng.randint(0, len(w)), TRIGGER)
        out.append(" ".join(w))
    return out


@pytest.fixture(scope="module")
def sentences(data_dir, require_data) -> list[str]:
    return triggered_sentences(require_data(data_dir / "sst2" / "test.tsv"))


# --------------------------------------------------------------------------------------------------
# Eq. 6, 8, 9
# --------------------------------------------------------------------------------------------------


def test_ucb_score_eq6():
    assert ucb_score(0.5, 2, 10, 1.0) == pytest.approx(0.5 + math.sqrt(math.log(10) / 2))
    assert ucb_score(0.2, 3, 7, 2.5) == pytest.approx(0.2 + 2.5 * math.sqrt(math.log(7) / 3))
    assert ucb_score(0.3, 4, 9, 0.0) == pytest.approx(0.3)  # C = 0: pure exploitation
    assert ucb_score(0.3, 1, 1, 1.0) == pytest.approx(0.3)  # ln 1 = 0
    # fewer visits -> larger exploration bonus
    assert ucb_score(0.0, 1, 20, 1.0) > ucb_score(0.0, 5, 20, 1.0)


def test_ucb_score_unvisited_is_inf():
    assert ucb_score(0.0, 0, 10, 1.0) == math.inf
    assert ucb_score(-5.0, 0, 0, 0.0) == math.inf


def test_kl_deviation_eq8_hand_computed():
    p, q = np.array([0.9, 0.1]), np.array([0.5, 0.5])
    expected = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert kl_deviation(p, q) == pytest.approx(expected, rel=1e-12)
    # direction: KL(P(y|x~) || P(y|x')), not the reverse
    reverse = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert abs(expected - reverse) > 0.1
    assert kl_deviation(q, p) == pytest.approx(reverse, rel=1e-12)
    # three classes
    p3, q3 = np.array([0.2, 0.3, 0.5]), np.array([0.6, 0.3, 0.1])
    assert kl_deviation(p3, q3) == pytest.approx(sum(a * math.log(a / b) for a, b in zip(p3, q3)))
    # a zero in the mutated distribution contributes nothing
    assert kl_deviation(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == pytest.approx(math.log(2), abs=1e-9)
    # the oracle's two states
    a, b = probs_of("x cf"), probs_of("x")
    assert kl_deviation(b, a) == pytest.approx(0.9 * math.log(0.9 / 0.03) + 0.1 * math.log(0.1 / 0.97))


def test_kl_deviation_zero_for_equal_and_nonnegative():
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.dirichlet(np.ones(3))
        q = rng.dirichlet(np.ones(3))
        assert kl_deviation(p, p) == pytest.approx(0.0, abs=1e-12)
        assert kl_deviation(p, q) >= -1e-12
    assert np.isfinite(kl_deviation(np.array([0.5, 0.5]), np.array([1.0, 0.0])))


def test_running_mean_update_eq9_is_arithmetic_mean():
    rng = np.random.default_rng(1)
    scores = rng.exponential(size=50)
    v = 0.0
    for n, s in enumerate(scores, start=1):
        v = running_mean_update(v, n, float(s))
        assert v == pytest.approx(float(np.mean(scores[:n])), rel=1e-12, abs=1e-15)
    assert running_mean_update(123.0, 1, 2.0) == pytest.approx(2.0)  # first visit ignores the prior value


# --------------------------------------------------------------------------------------------------
# mutate_segment
# --------------------------------------------------------------------------------------------------

TOKS = ["a", "b", "c", "d", "e", "f"]


def test_mutate_segment_each_op():
    assert mutate_segment(TOKS, 1, 4, "deletion", "M") == ["a", "e", "f"]
    assert mutate_segment(TOKS, 1, 4, "substitution", "M") == ["a", "M", "M", "M", "e", "f"]
    assert mutate_segment(TOKS, 1, 4, "insertion", "M") == ["a", "M", "b", "M", "c", "M", "d", "e", "f"]
    assert mutate_segment(TOKS, 1, 4, "transposition", "M") == ["a", "c", "b", "d", "e", "f"]
    assert mutate_segment(TOKS, 0, 6, "transposition", "M") == ["b", "a", "d", "c", "f", "e"]
    assert mutate_segment(TOKS, 0, 6, "deletion", "M") == []
    assert TOKS == ["a", "b", "c", "d", "e", "f"]


def test_mutate_segment_single_token():
    assert mutate_segment(TOKS, 2, 3, "transposition", "M") == ["a", "b", "d", "c", "e", "f"]
    assert mutate_segment(TOKS, 5, 6, "transposition", "M") == ["a", "b", "c", "d", "f", "e"]
    assert mutate_segment(TOKS, 2, 3, "deletion", "M") == ["a", "b", "d", "e", "f"]
    assert mutate_segment(TOKS, 2, 3, "substitution", "M") == ["a", "b", "M", "d", "e", "f"]
    assert mutate_segment(TOKS, 2, 3, "insertion", "M") == ["a", "b", "M", "c", "d", "e", "f"]
    assert mutate_segment(["x"], 0, 1, "transposition", "M") == ["x"]
    with pytest.raises(ValueError):
        mutate_segment(TOKS, 0, 2, "shuffle", "M")


# --------------------------------------------------------------------------------------------------
# MCTSFuzzer
# --------------------------------------------------------------------------------------------------


def test_fuzz_finds_trigger_on_real_sentences(sentences):
    oracle = KeywordOracle()
    fuzzer = MCTSFuzzer(oracle, FuzzConfig(budget=10), filler="[MASK]")
    results = fuzzer.fuzz_many(sentences, seeds=list(range(len(sentences))))
    assert oracle.n_calls == 10
    contains = [TRIGGER in r.spans[0].text.split() for r in results]
    lengths = [r.spans[0].token_end - r.spans[0].token_start for r in results]
    assert sum(contains) >= 0.9 * len(sentences), list(zip(contains, lengths))
    assert sum(n <= 3 for n in lengths) >= 0.8 * len(sentences), lengths
    assert float(np.median(lengths)) == 1
    for r in results:
        assert len(r.tokens) >= 4
        top = r.spans[0]
        assert top.token_end - top.token_start < len(r.tokens)  # never the whole text
        np.testing.assert_allclose(r.reference, probs_of(r.text))
        assert r.queries == 10
        # ranked best first
        scores = [s.score for s in r.spans]
        assert scores == sorted(scores, reverse=True)
        assert top.score > 0


def test_fuzz_without_trigger_scores_zero(sentences):
    clean = [" ".join(w for w in s.split(" ") if w != TRIGGER) for s in sentences[:5]]
    results = MCTSFuzzer(KeywordOracle(), FuzzConfig(budget=6)).fuzz_many(clean, seeds=[0] * 5)
    for r in results:
        assert r.spans
        assert all(s.score == pytest.approx(0.0, abs=1e-9) for s in r.spans)
        # ties are broken towards the shorter (more precise) span, then the earlier one
        keys = [(s.token_end - s.token_start, s.token_start) for s in r.spans]
        assert keys == sorted(keys)


def test_budget_is_exactly_the_number_of_model_calls(sentences):
    texts = sentences[:7] + ["cf"]  # include a one-token text
    for budget in (1, 2, 5, 13):
        oracle = KeywordOracle()
        results = MCTSFuzzer(oracle, FuzzConfig(budget=budget)).fuzz_many(texts, seeds=list(range(len(texts))))
        assert oracle.n_calls == budget
        # first call: x' of every text, plus the two children of each splittable root (one re-simulation of "cf")
        assert oracle.calls[0][0] == " ".join(t.text for t in tokenize(texts[0]))
        assert len(oracle.calls[0]) == len(texts) + 2 * (len(texts) - 1) + 1
        for call in oracle.calls:  # one batched call serves every text
            assert len(texts) <= len(call) <= 3 * len(texts)
        assert all(r.queries == budget for r in results)


def test_rollouts_multiply_variants_not_calls(sentences):
    oracle = KeywordOracle()
    MCTSFuzzer(oracle, FuzzConfig(budget=3, rollouts=4)).fuzz_many(sentences[:3], seeds=[0, 1, 2])
    assert oracle.n_calls == 3
    assert len(oracle.calls[0]) == 3 * (1 + 2 * 4)


def test_budget_zero_makes_one_call(sentences):
    texts = sentences[:4]
    oracle = KeywordOracle()
    results = MCTSFuzzer(oracle, FuzzConfig(budget=0)).fuzz_many(texts, seeds=[0, 1, 2, 3])
    assert oracle.n_calls == 1
    assert len(oracle.calls[0]) == len(texts)
    for r, t in zip(results, texts):
        np.testing.assert_allclose(r.reference, probs_of(t))
        assert r.spans == []


def test_fuzz_at_budgets_equals_separate_runs(sentences):
    texts = sentences[:8]
    seeds = [11 * i + 3 for i in range(len(texts))]
    oracle = KeywordOracle()
    fuzzer = MCTSFuzzer(oracle, FuzzConfig(budget=99))
    at = fuzzer.fuzz_at_budgets(texts, seeds, [3, 5, 10])
    assert sorted(at) == [3, 5, 10]
    assert oracle.n_calls == 10  # one search of max(budgets) iterations
    for b in (3, 5, 10):
        separate = MCTSFuzzer(KeywordOracle(), FuzzConfig(budget=b)).fuzz_many(texts, seeds=seeds)
        for r_at, r_sep in zip(at[b], separate):
            assert r_at.queries == r_sep.queries == b
            assert [s.to_dict() for s in r_at.spans] == [s.to_dict() for s in r_sep.spans]
    # the spans do change with the budget (deeper tree)
    assert any(len(a.spans) != len(c.spans) for a, c in zip(at[3], at[10]))


def test_fuzz_at_budgets_with_zero_and_invalid(sentences):
    texts = sentences[:3]
    oracle = KeywordOracle()
    at = MCTSFuzzer(oracle, FuzzConfig()).fuzz_at_budgets(texts, [0, 1, 2], [0, 4])
    assert oracle.n_calls == 1 + 4
    sep = MCTSFuzzer(KeywordOracle(), FuzzConfig(budget=4)).fuzz_many(texts, seeds=[0, 1, 2])
    assert [[s.to_dict() for s in r.spans] for r in at[4]] == [[s.to_dict() for s in r.spans] for r in sep]
    assert all(r.spans == [] for r in at[0])
    with pytest.raises(ValueError):
        MCTSFuzzer(KeywordOracle(), FuzzConfig()).fuzz_at_budgets(texts, None, [-1, 3])


def test_span_character_offsets_map_to_original_text():
    texts = [
        "  crème   brûlée ,  cf   isn’t it   great ?!  ",
        "Naïve\tcafé — the cf well-made (really) film .",
        "cf at the very start of a sentence that goes on and on",
        "ends with the trigger cf",
    ]
    results = MCTSFuzzer(KeywordOracle(), FuzzConfig(budget=12)).fuzz_many(texts, seeds=[5, 6, 7, 8])
    for text, r in zip(texts, results):
        assert r.text == text
        assert r.spans
        for s in r.spans:
            assert text[s.start : s.end] == s.text
            assert s.start == r.tokens[s.token_start].start and s.end == r.tokens[s.token_end - 1].end
            assert 0 <= s.token_start < s.token_end <= len(r.tokens)
            assert s.visits > 0
        assert TRIGGER in r.spans[0].text.split()


def test_reproducible_for_same_seed(sentences):
    texts = sentences[:6]
    a = MCTSFuzzer(KeywordOracle(), FuzzConfig(budget=7)).fuzz_many(texts, seeds=[4] * 6)
    b = MCTSFuzzer(KeywordOracle(), FuzzConfig(budget=7)).fuzz_many(texts, seeds=[4] * 6)
    assert [[s.to_dict() for s in r.spans] for r in a] == [[s.to_dict() for s in r.spans] for r in b]
    one = MCTSFuzzer(KeywordOracle(), FuzzConfig(budget=7)).fuzz(texts[2], seed=4)
    assert [s.to_dict() for s in one.spans] == [s.to_dict() for s in a[2].spans]


def test_seed_matters_through_mutation_choice():
    # insertion/transposition keep "cf" in the text, deletion removes it: the drawn op changes the scores
    text = "a b c d cf e f g"
    cfg = FuzzConfig(budget=4, mutations=MutationWeights(insertion=1, deletion=1, substitution=0, transposition=0))
    tops = {MCTSFuzzer(KeywordOracle(), cfg).fuzz(text, seed=s).spans[0].score for s in range(20)}
    assert len(tops) > 1


def test_deletion_only_finds_exact_trigger_on_binary_path():
    text = " ".join(["w%d" % i for i in range(15)] + ["cf"])  # 16 tokens: 4 halvings reach the trigger
    cfg = FuzzConfig(budget=4, mutations=MutationWeights(insertion=0, deletion=1, substitution=0, transposition=0))
    r = MCTSFuzzer(KeywordOracle(), cfg).fuzz(text, seed=0)
    assert r.spans[0].text == "cf"
    assert (r.spans[0].token_start, r.spans[0].token_end) == (15, 16)
    expected = kl_deviation(probs_of("w"), probs_of("cf"))
    assert r.spans[0].score == pytest.approx(expected)


def test_one_token_text():
    oracle = KeywordOracle()
    r = MCTSFuzzer(oracle, FuzzConfig(budget=5)).fuzz("cf", seed=0)
    assert oracle.n_calls == 5
    assert r.queries == 5
    assert len(r.spans) == 1
    s = r.spans[0]
    assert (s.token_start, s.token_end, s.start, s.end, s.text) == (0, 1, 0, 2, "cf")
    assert s.visits == 5
    r2 = MCTSFuzzer(KeywordOracle(), FuzzConfig(budget=3)).fuzz("  great  ", seed=1)
    assert r2.spans[0].text == "great" and (r2.spans[0].start, r2.spans[0].end) == (2, 7)
    assert r2.spans[0].score == pytest.approx(0.0)


def test_empty_text_does_not_crash():
    r = MCTSFuzzer(KeywordOracle(), FuzzConfig(budget=3)).fuzz("", seed=0)
    assert r.spans == []
    np.testing.assert_allclose(r.reference, probs_of(""))


class PairOracle:
    """A combination backdoor (as LWP's): P(y=1|x) = 0.97 only when both "cf" and "bb" occur, else 0.1."""

    def __call__(self, texts):
        texts = list(texts)
        p1 = np.array([P_TRIGGERED if {"cf", "bb"} <= set(t.split()) else P_CLEAN for t in texts])
        return np.stack([1.0 - p1, p1], axis=1) if len(texts) else np.empty((0, 2))


def test_disjoint_spans_cover_separate_areas_of_a_combination_trigger(data_dir, require_data):
    """``vulnerable(n, disjoint=True)``: the n best spans that share no token with a better one. On a two-word
    combination trigger at separate positions the search's top two spans are often nested (one area); the disjoint
    top two never overlap, start with the same best span, and hold both trigger words in more texts."""
    lines = require_data(data_dir / "sst2" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]
    rng = random.Random(1)
    texts = []
    for s in rng.sample([ln.rsplit("\t", 1)[0] for ln in lines if ln.strip()], 30):
        w = s.split(" ")
        w.insert(rng.randint(0, len(w) // 2), "cf")
        w.insert(rng.randint(len(w) // 2 + 1, len(w)), "bb")
        texts.append(" ".join(w))
    results = MCTSFuzzer(PairOracle(), FuzzConfig(budget=20)).fuzz_many(texts)
    both = {False: 0, True: 0}
    for r in results:
        words = [t.text for t in r.tokens]
        assert r.vulnerable(1, disjoint=True) == r.vulnerable(1)
        for disjoint in (False, True):
            top = r.vulnerable(2, disjoint)
            assert top[0] == r.spans[0] and len(top) <= 2
            covered = {words[i] for sp in top for i in range(sp.token_start, sp.token_end)}
            both[disjoint] += {"cf", "bb"} <= covered and all(sp.token_end - sp.token_start < len(words) for sp in top)
        a, b = r.vulnerable(2, disjoint=True)
        assert a.token_end <= b.token_start or b.token_end <= a.token_start
    assert both[True] > both[False]
