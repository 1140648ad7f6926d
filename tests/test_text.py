"""Tests of frs_ray.text: tokens with offsets, the four DL operations, DL distance, split points."""

from __future__ import annotations

import random
from collections import deque

import pytest

from frs_ray.text import OPERATIONS, apply_operation, normalized_dl_distance, render, split_points, tokenize
from frs_ray.text.segment import CLAUSE_WORDS, PUNCTUATION

# --------------------------------------------------------------------------------------------------
# Reference Damerau-Levenshtein implementations (independent of rapidfuzz)
# --------------------------------------------------------------------------------------------------


def unrestricted_dl(a, b) -> int:
    """True (unrestricted) Damerau-Levenshtein distance, Lowrance-Wagner algorithm with unit costs."""
    a, b = list(a), list(b)
    la, lb = len(a), len(b)
    inf = la + lb
    last_row: dict = {}
    d = [[0] * (lb + 2) for _ in range(la + 2)]
    d[0][0] = inf
    for i in range(la + 1):
        d[i + 1][0] = inf
        d[i + 1][1] = i
    for j in range(lb + 1):
        d[0][j + 1] = inf
        d[1][j + 1] = j
    for i in range(1, la + 1):
        last_match_col = 0
        for j in range(1, lb + 1):
            i1 = last_row.get(b[j - 1], 0)
            j1 = last_match_col
            cost = 0 if a[i - 1] == b[j - 1] else 1
            if cost == 0:
                last_match_col = j
            d[i + 1][j + 1] = min(
                d[i][j] + cost,  # substitution / match
                d[i + 1][j] + 1,  # insertion
                d[i][j + 1] + 1,  # deletion
                d[i1][j1] + (i - i1 - 1) + 1 + (j - j1 - 1),  # transposition
            )
        last_row[a[i - 1]] = i
    return d[la + 1][lb + 1]


def osa_distance(a, b) -> int:
    """Optimal string alignment (restricted DL): each substring edited at most once. NOT the same as DL."""
    a, b = list(a), list(b)
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def bfs_dl(a, b) -> int:
    """Brute force: fewest single edits (insert, delete, substitute, adjacent swap) turning a into b.

    This is the definition of the unrestricted DL distance; only usable on tiny inputs.
    """
    a, b = tuple(a), tuple(b)
    alphabet = sorted(set(a) | set(b)) or ["x"]
    max_len = max(len(a), len(b)) + 1
    seen = {a: 0}
    queue = deque([a])
    while queue:
        s = queue.popleft()
        dist = seen[s]
        if s == b:
            return dist
        nxt = []
        for i in range(len(s)):
            nxt.append(s[:i] + s[i + 1 :])
            for c in alphabet:
                if c != s[i]:
                    nxt.append(s[:i] + (c,) + s[i + 1 :])
            if i + 1 < len(s):
                nxt.append(s[:i] + (s[i + 1], s[i]) + s[i + 2 :])
        if len(s) < max_len:
            for i in range(len(s) + 1):
                for c in alphabet:
                    nxt.append(s[:i] + (c,) + s[i:])
        for t in nxt:
            if t not in seen:
                seen[t] = dist + 1
                queue.append(t)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------------
# tokenize
# --------------------------------------------------------------------------------------------------

TOKEN_TEXTS = [
    "It's a mn charming, journey.",
    "a gob of drivel so sickly sweet , even the eager consumers of moore 's pasteurized ditties will retch it up like rancid crème brûlée .",
    "  Naïve   café\tfood —\n well-made, isn’t it?!  ",
    "Ünïcödé 東京 タワー déjà-vu (really) [sic] \"quoted\" 'single' 42.5% x/y",
    "emoji 🙂 here; semi:colon... end",
    "",
    "   ",
    "cafe\u0301 combining",
]


@pytest.mark.parametrize("text", TOKEN_TEXTS)
def test_tokenize_offsets_are_exact_substrings(text):
    toks = tokenize(text)
    prev_end = 0
    for t in toks:
        assert text[t.start : t.end] == t.text
        assert t.text and not t.text.isspace()
        assert t.start >= prev_end  # ordered, non-overlapping
        prev_end = t.end
    # every non-whitespace character belongs to exactly one token; whitespace to none
    covered = [False] * len(text)
    for t in toks:
        for i in range(t.start, t.end):
            assert not covered[i]
            covered[i] = True
    for i, ch in enumerate(text):
        assert covered[i] == (not ch.isspace()), (i, ch)


def test_tokenize_expected_tokens():
    assert [t.text for t in tokenize("It's a mn charming, journey.")] == [
        "It's",
        "a",
        "mn",
        "charming",
        ",",
        "journey",
        ".",
    ]
    assert [t.text for t in tokenize("well-made crème brûlée isn’t bad!?")] == [
        "well-made",
        "crème",
        "brûlée",
        "isn’t",
        "bad",
        "!",
        "?",
    ]
    # SST-2 style detached clitic: apostrophe is punctuation, "s" a word
    assert [t.text for t in tokenize("moore 's ditties")] == ["moore", "'", "s", "ditties"]
    # a trailing hyphen/apostrophe is not part of the word
    assert [t.text for t in tokenize("rock' n- roll")] == ["rock", "'", "n", "-", "roll"]
    toks = tokenize("  héllo,  wörld ")
    assert [(t.text, t.start, t.end) for t in toks] == [("héllo", 2, 7), (",", 7, 8), ("wörld", 10, 15)]


def test_tokenize_empty_and_render():
    assert tokenize("") == []
    assert tokenize(" \t\n ") == []
    assert render(["a", ",", "b"]) == "a , b"
    assert render([]) == ""


# --------------------------------------------------------------------------------------------------
# apply_operation
# --------------------------------------------------------------------------------------------------

F = "<F>"


def test_apply_operation_expected_content():
    toks = ["a", "b", "c", "d"]
    assert apply_operation(toks, 1, "insertion", F) == ["a", F, "b", "c", "d"]
    assert apply_operation(toks, 0, "insertion", F) == [F, "a", "b", "c", "d"]
    assert apply_operation(toks, 3, "insertion", F) == ["a", "b", "c", F, "d"]
    assert apply_operation(toks, 1, "deletion", F) == ["a", "c", "d"]
    assert apply_operation(toks, 3, "deletion", F) == ["a", "b", "c"]
    assert apply_operation(toks, 2, "substitution", F) == ["a", "b", F, "d"]
    assert apply_operation(toks, 1, "transposition", F) == ["a", "c", "b", "d"]
    assert apply_operation(toks, 0, "transposition", F) == ["b", "a", "c", "d"]
    assert toks == ["a", "b", "c", "d"]  # input untouched


def test_transposition_at_last_index_swaps_with_left_neighbour():
    assert apply_operation(["a", "b", "c"], 2, "transposition", F) == ["a", "c", "b"]
    assert apply_operation(["a", "b"], 1, "transposition", F) == ["b", "a"]
    assert apply_operation(["a", "b"], 0, "transposition", F) == ["b", "a"]
    # one-token text: no neighbour, no-op
    assert apply_operation(["a"], 0, "transposition", F) == ["a"]


@pytest.mark.parametrize("op", OPERATIONS)
def test_each_operation_is_one_dl_unit(op):
    rng = random.Random(hash(op) % 1000)
    for _ in range(60):
        n = rng.randint(2 if op == "transposition" else 1, 9)
        toks = [f"w{i}" for i in rng.sample(range(50), n)]  # distinct, never equal to the filler
        idx = rng.randrange(n)
        out = apply_operation(toks, idx, op, F)
        expected_len = n + (op == "insertion") - (op == "deletion")
        assert len(out) == expected_len
        assert unrestricted_dl(toks, out) == 1
        assert normalized_dl_distance(toks, out) == pytest.approx(1.0 / max(n, len(out)), abs=1e-12)


def test_apply_operation_invalid_arguments():
    with pytest.raises(ValueError):
        apply_operation(["a", "b"], 0, "swap", F)
    with pytest.raises(ValueError):
        apply_operation(["a", "b"], 0, "", F)
    for idx in (-1, 2, 5):
        with pytest.raises(IndexError):
            apply_operation(["a", "b"], idx, "deletion", F)
    with pytest.raises(IndexError):
        apply_operation([], 0, "insertion", F)


# --------------------------------------------------------------------------------------------------
# normalized_dl_distance
# --------------------------------------------------------------------------------------------------


def test_reference_implementations_agree_with_brute_force():
    """Sanity check of the test's own reference DP against the BFS definition (incl. OSA != DL cases)."""
    rng = random.Random(0)
    cases = [(("c", "a"), ("a", "b", "c")), (("a", "b", "c"), ("c", "a")), ((), ("a",)), (("a",), ())]
    for _ in range(120):
        a = tuple(rng.choice("abc") for _ in range(rng.randint(0, 4)))
        b = tuple(rng.choice("abc") for _ in range(rng.randint(0, 4)))
        cases.append((a, b))
    for a, b in cases:
        assert unrestricted_dl(a, b) == bfs_dl(a, b), (a, b)


def test_known_case_where_osa_and_dl_differ():
    a, b = ["c", "a"], ["a", "b", "c"]
    assert osa_distance(a, b) == 3
    assert unrestricted_dl(a, b) == 2
    assert normalized_dl_distance(a, b) == pytest.approx(2 / 3)


def test_normalized_dl_distance_matches_reference_on_random_token_lists():
    rng = random.Random(1234)
    vocab = ["the", "cf", "film", "is", "good", ",", "[MASK]"]
    n_differ = 0
    for _ in range(400):
        a = [rng.choice(vocab[: rng.randint(2, 7)]) for _ in range(rng.randint(0, 7))]
        b = [rng.choice(vocab[: rng.randint(2, 7)]) for _ in range(rng.randint(0, 7))]
        d = unrestricted_dl(a, b)
        n_differ += d != osa_distance(a, b)
        expected = d / max(len(a), len(b)) if (a or b) else 0.0
        assert normalized_dl_distance(a, b) == pytest.approx(expected, abs=1e-12), (a, b)
        assert normalized_dl_distance(b, a) == pytest.approx(expected, abs=1e-12)
        assert 0.0 <= normalized_dl_distance(a, b) <= 1.0
    assert n_differ > 0  # the sample really exercised cases where OSA would be wrong


def test_normalized_dl_distance_edge_cases():
    assert normalized_dl_distance([], []) == 0.0
    assert normalized_dl_distance(["a"], []) == 1.0
    assert normalized_dl_distance(["a", "b"], ["a", "b"]) == 0.0
    # tokens are compared whole, not character by character
    assert normalized_dl_distance(["ab"], ["ba"]) == 1.0
    assert normalized_dl_distance(["good", "film"], ["film", "good"]) == pytest.approx(0.5)
    assert normalized_dl_distance(("x", "y"), ["x", "y"]) == 0.0


# --------------------------------------------------------------------------------------------------
# split_points
# --------------------------------------------------------------------------------------------------


def words(n, prefix="w"):
    return [f"{prefix}{i}" for i in range(n)]


def test_split_points_empty_for_short_segments():
    toks = words(5)
    assert split_points(toks, 2, 3) == []
    assert split_points(toks, 2, 2) == []
    assert split_points(["only"], 0, 1) == []


def test_split_points_fall_back_to_nearest_middle():
    toks = words(5)
    # middle 2.5: 2 and 3 tie (smaller first), then 1 and 4
    assert split_points(toks, 0, 5) == [2, 3, 1, 4]
    assert split_points(words(6), 0, 6) == [3, 2, 4, 1, 5]
    # inside a longer text, boundaries are global indices strictly inside the segment
    assert split_points(words(12), 3, 9) == [6, 5, 7, 4, 8]
    assert split_points(words(4), 1, 3) == [2]


def test_split_points_prefer_punctuation_in_middle_half():
    toks = words(12)
    toks[3] = ","  # boundaries 3 (before ",") and 4 (after ",") are linguistic; middle 6, quarter 3
    pts = split_points(toks, 0, 12)
    assert pts[:2] == [4, 3]
    assert pts[2] == 6  # then the rest, nearest the middle first
    assert sorted(pts) == list(range(1, 12))


def test_split_points_prefer_clause_words_case_insensitive():
    toks = "the acting was wooden But the script is sharp and funny".split()
    # boundary before "But" (k=4) and before "and" (k=9); middle 5.5, quarter 2.75 -> only k=4 qualifies
    pts = split_points(toks, 0, len(toks))
    assert pts[0] == 4
    assert pts[1] == 5  # non-linguistic fallback nearest the middle
    assert 9 in pts and pts.index(9) > 1


def test_split_points_ignore_linguistic_boundaries_outside_middle_half():
    toks = words(12)
    toks[1] = "."  # boundaries 1 and 2 are linguistic but far from the middle (6 +- 3)
    toks[10] = "because"  # boundary 10: |10 - 6| = 4 > 3
    pts = split_points(toks, 0, 12)
    assert pts[0] == 6
    assert pts == sorted(range(1, 12), key=lambda k: (abs(k - 6), k))


def test_split_points_properties_on_random_segments():
    rng = random.Random(7)
    pool = [f"w{i}" for i in range(10)] + [",", ".", "and", "which", "!", "Because"]
    for _ in range(300):
        toks = [rng.choice(pool) for _ in range(rng.randint(1, 20))]
        start = rng.randrange(len(toks))
        end = rng.randint(start, len(toks))
        pts = split_points(toks, start, end)
        if end - start < 2:
            assert pts == []
            continue
        assert sorted(pts) == list(range(start + 1, end))  # every boundary, each once, strictly inside
        middle, quarter = (start + end) / 2, (end - start) / 4

        def ling(k):
            return (toks[k - 1] in PUNCTUATION or toks[k] in PUNCTUATION or toks[k].lower() in CLAUSE_WORDS) and abs(
                k - middle
            ) <= quarter

        flags = [ling(k) for k in pts]
        n_ling = sum(flags)
        assert flags == [True] * n_ling + [False] * (len(pts) - n_ling)  # linguistic first
        for group in (pts[:n_ling], pts[n_ling:]):
            keys = [(abs(k - middle), k) for k in group]
            assert keys == sorted(keys)
