"""Tests of frs_ray.fuzzing.randomize: omega allocation (Eq. 11), FTR draws (Eq. 12-14), config checks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from pydantic import ValidationError

from frs_ray.config import MutationWeights, RandomizeConfig, build
from frs_ray.errors import ConfigError
from frs_ray.fuzzing import FuzzedRandomizer, allocate_omegas, apply_mutations, bernoulli_draws, token_weights
from frs_ray.text import normalized_dl_distance

SUBST_ONLY = MutationWeights(insertion=0, deletion=0, substitution=1, transposition=0)
DELETE_ONLY = MutationWeights(insertion=0, deletion=1, substitution=0, transposition=0)
FILLER = "<F>"


def distinct_tokens(n: int) -> list[str]:
    return [f"t{i}" for i in range(n)]


# --------------------------------------------------------------------------------------------------
# allocate_omegas
# --------------------------------------------------------------------------------------------------


def test_allocate_omegas_keeps_expected_mutation_count():
    n_clamped = n_free = 0
    for length, omega_m, omega_h in itertools.product(
        (1, 2, 3, 7, 20, 64), (0.0, 0.05, 0.15, 0.3, 0.5, 1.0), (0.0, 0.15, 0.5, 0.9, 1.0)
    ):
        if omega_h < omega_m:
            continue
        for span in range(0, length + 1):
            wh, wl = allocate_omegas(length, span, omega_m, omega_h)
            assert span * wh + (length - span) * wl == pytest.approx(length * omega_m, abs=1e-12)
            assert 0.0 <= wl <= omega_m + 1e-12 <= wh + 2e-12
            assert wh <= 1.0 + 1e-12
            if span in (0, length):
                assert (wh, wl) == (omega_m, omega_m)
            elif span * omega_h > length * omega_m:
                n_clamped += 1
                assert wl == 0.0
                assert wh == pytest.approx(length * omega_m / span)
                assert wh <= omega_h
            else:
                n_free += 1
                assert wh == omega_h
                assert wl == pytest.approx((length * omega_m - span * omega_h) / (length - span))
    assert n_clamped > 50 and n_free > 50


def test_allocate_omegas_examples():
    assert allocate_omegas(20, 4, 0.2, 0.8) == pytest.approx((0.8, 0.05))
    assert allocate_omegas(10, 5, 0.2, 0.9) == pytest.approx((0.4, 0.0))  # |T| omega_H > L omega_M
    assert allocate_omegas(10, 0, 0.15, 0.9) == (0.15, 0.15)
    assert allocate_omegas(10, 10, 0.15, 0.9) == (0.15, 0.15)
    assert allocate_omegas(0, 0, 0.15, 0.9) == (0.15, 0.15)


@pytest.mark.parametrize(
    "args",
    [
        (10, 2, -0.1, 0.9),
        (10, 2, 1.1, 1.0),
        (10, 2, 0.1, 1.5),
        (10, 2, 0.1, -0.2),
        (10, 2, 0.5, 0.4),  # omega_h < omega_m
        (10, 11, 0.1, 0.9),  # more span tokens than tokens
        (10, -1, 0.1, 0.9),
    ],
)
def test_allocate_omegas_rejects_bad_values(args):
    with pytest.raises(ConfigError):
        allocate_omegas(*args)


def test_token_weights_and_bernoulli():
    w = token_weights(4, [0, 1, 1, 0], 0.9, 0.1)
    np.testing.assert_array_equal(w, [0.1, 0.9, 0.9, 0.1])
    assert token_weights(0, [], 0.9, 0.1).shape == (0,)
    rng = np.random.default_rng(0)
    assert not bernoulli_draws(np.zeros(50), rng).any()
    assert bernoulli_draws(np.ones(50), rng).all()


def test_apply_mutations_right_to_left():
    rng = np.random.default_rng(0)
    toks = distinct_tokens(6)
    ops, probs = ["deletion"], np.array([1.0])
    out = apply_mutations(toks, np.array([1, 0, 1, 0, 0, 1], bool), ops, probs, rng, FILLER)
    assert out == ["t1", "t3", "t4"]
    out = apply_mutations(toks, np.array([1, 0, 0, 1, 0, 0], bool), ["insertion"], probs, rng, FILLER)
    assert out == [FILLER, "t0", "t1", "t2", FILLER, "t3", "t4", "t5"]


# --------------------------------------------------------------------------------------------------
# FuzzedRandomizer
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_distance", [0.1, 0.2, 0.35, 0.5])
def test_every_output_within_distance_bound(max_distance):
    cfg = RandomizeConfig(omega_m=0.3, omega_h=0.95, max_distance=max_distance, max_redraws=20)
    rnd = FuzzedRandomizer(cfg, filler=FILLER)
    rng = np.random.default_rng(int(max_distance * 100))
    n_mutated = n_fallback = 0
    for i in range(400):
        length = int(rng.integers(1, 25))
        toks = [f"w{int(j)}" for j in rng.integers(0, 6, size=length)]  # repeated tokens on purpose
        in_span = rng.random(length) < 0.3
        r = rnd.randomize(toks, in_span, rng)
        d = normalized_dl_distance(toks, r.tokens)
        assert d <= max_distance + 1e-12
        assert 0 <= r.redraws <= cfg.max_redraws
        if r.fallback:
            n_fallback += 1
            assert r.tokens == toks and r.redraws == cfg.max_redraws
        else:
            assert r.redraws < cfg.max_redraws
        n_mutated += d > 0
        wh, wl = allocate_omegas(length, int(in_span.sum()), cfg.omega_m, cfg.omega_h)
        assert (r.omega_h, r.omega_l) == pytest.approx((wh, wl))
    assert n_mutated > 40  # the bound is met by real mutations, not only by fallbacks


def test_distance_bound_is_inclusive():
    # L=4, one span token: omega_H=1, omega_L=0 -> exactly one substitution -> distance exactly 0.25
    toks = distinct_tokens(4)
    span = [False, True, False, False]
    at = FuzzedRandomizer(RandomizeConfig(omega_m=0.25, omega_h=1.0, max_distance=0.25, mutations=SUBST_ONLY), FILLER)
    below = FuzzedRandomizer(
        RandomizeConfig(omega_m=0.25, omega_h=1.0, max_distance=0.24, max_redraws=5, mutations=SUBST_ONLY), FILLER
    )
    rng = np.random.default_rng(0)
    for _ in range(20):
        r = at.randomize(toks, span, rng)
        assert r.tokens == ["t0", FILLER, "t2", "t3"]
        assert (r.redraws, r.fallback) == (0, False)
        r = below.randomize(toks, span, rng)
        assert r.tokens == toks and r.fallback and r.redraws == 5


def test_max_distance_zero_returns_input():
    toks = distinct_tokens(8)
    span = [False] * 3 + [True] * 2 + [False] * 3
    # every token mutated, substitution only: no draw can be accepted
    rnd = FuzzedRandomizer(
        RandomizeConfig(omega_m=1.0, omega_h=1.0, max_distance=0.0, max_redraws=7, mutations=SUBST_ONLY), FILLER
    )
    r = rnd.randomize(toks, span, np.random.default_rng(0))
    assert r.tokens == toks and r.fallback is True and r.redraws == 7
    # default mutation set, moderate omega: the output is still exactly the input
    rnd = FuzzedRandomizer(RandomizeConfig(omega_m=0.3, omega_h=0.9, max_distance=0.0, max_redraws=10), FILLER)
    rng = np.random.default_rng(1)
    fallbacks = 0
    for _ in range(100):
        r = rnd.randomize(toks, span, rng)
        assert r.tokens == toks
        fallbacks += r.fallback
    assert fallbacks > 50


def test_zero_omega_never_mutates():
    rnd = FuzzedRandomizer(RandomizeConfig(omega_m=0.0, omega_h=0.0, max_distance=1.0), FILLER)
    rng = np.random.default_rng(0)
    for _ in range(20):
        r = rnd.randomize(distinct_tokens(10), [True] * 3 + [False] * 7, rng)
        assert r.tokens == distinct_tokens(10) and not r.fallback and r.redraws == 0


def _mutation_frequencies(mutations, length, span, omega_m, omega_h, n, seed):
    rnd = FuzzedRandomizer(RandomizeConfig(omega_m=omega_m, omega_h=omega_h, max_distance=1.0, mutations=mutations), FILLER)
    toks = distinct_tokens(length)
    in_span = [span[0] <= i < span[1] for i in range(length)]
    rng = np.random.default_rng(seed)
    hits = np.zeros(length)
    for _ in range(n):
        r = rnd.randomize(toks, in_span, rng)
        assert not r.fallback and r.redraws == 0  # Lambda = 1 accepts every draw
        if mutations is SUBST_ONLY:
            assert len(r.tokens) == length
            hits += np.array([t == FILLER for t in r.tokens])
        else:
            kept = set(r.tokens)
            hits += np.array([t not in kept for t in toks])
    return hits / n, np.array(in_span), r.omega_h, r.omega_l


def _check_frequencies(freq, in_span, wh, wl, n):
    for mask, w in ((in_span, wh), (~in_span, wl)):
        pooled = freq[mask].mean()
        se = math.sqrt(max(w * (1 - w), 1e-12) / (n * mask.sum()))
        assert abs(pooled - w) <= 5 * se + 1e-9, (pooled, w)
        se1 = math.sqrt(max(w * (1 - w), 1e-12) / n)
        assert np.all(np.abs(freq[mask] - w) <= 5 * se1 + 1e-9), (freq[mask], w)


def test_mutation_frequency_inside_vs_outside_substitution():
    n = 3000
    freq, in_span, wh, wl = _mutation_frequencies(SUBST_ONLY, 20, (5, 9), 0.2, 0.8, n, seed=0)
    assert (wh, wl) == pytest.approx((0.8, 0.05))
    _check_frequencies(freq, in_span, wh, wl, n)
    # overall mutation rate is omega_M
    assert freq.mean() == pytest.approx(0.2, abs=5 * math.sqrt(0.2 * 0.8 / (20 * n)))


def test_mutation_frequency_inside_vs_outside_deletion_clamped():
    # |T| omega_H = 4.5 > L omega_M = 2: omega_L = 0 and omega_H lowered to 0.4
    n = 3000
    freq, in_span, wh, wl = _mutation_frequencies(DELETE_ONLY, 10, (2, 7), 0.2, 0.9, n, seed=1)
    assert (wh, wl) == pytest.approx((0.4, 0.0))
    assert np.all(freq[~in_span] == 0.0)
    _check_frequencies(freq, in_span, wh, wl, n)


def test_same_seed_same_outputs():
    rnd = FuzzedRandomizer(RandomizeConfig(omega_m=0.3, omega_h=0.9, max_distance=0.4), FILLER)
    toks = "the film is a cf charming and often affecting journey .".split()
    span = [t == "cf" for t in toks]

    def run(seed):
        rng = np.random.default_rng(seed)
        return [rnd.randomize(toks, span, rng) for _ in range(50)]

    a, b, c = run(3), run(3), run(4)
    assert a == b
    assert [r.tokens for r in a] != [r.tokens for r in c]
    assert len({tuple(r.tokens) for r in a}) > 5


# --------------------------------------------------------------------------------------------------
# RandomizeConfig validation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"omega_m": -0.01},
        {"omega_m": 1.01, "omega_h": 1.0},
        {"omega_h": 1.5},
        {"omega_h": -0.1},
        {"max_distance": 1.1},
        {"max_distance": -0.1},
        {"omega_m": 0.5, "omega_h": 0.4},
        {"max_redraws": 0},
        {"omega": 0.2},  # unknown field
        {"lambda_": 0.3},
        {"mutations": {"insertion": 0, "deletion": 0, "substitution": 0, "transposition": 0}},
        {"mutations": {"deletion": -1}},
        {"mutations": {"swap": 1}},
    ],
)
def test_randomize_config_rejects(kwargs):
    with pytest.raises(ValidationError):
        RandomizeConfig(**kwargs)
    with pytest.raises(ConfigError):
        build(RandomizeConfig, kwargs)


def test_randomize_config_accepts_bounds_and_is_frozen():
    cfg = RandomizeConfig(omega_m=0.0, omega_h=1.0, max_distance=0.0)
    assert cfg.omega_m == 0.0 and cfg.max_distance == 0.0
    assert RandomizeConfig(omega_m=0.4, omega_h=0.4, max_distance=1.0).omega_h == 0.4
    with pytest.raises(ValidationError):
        cfg.omega_m = 0.5  # type: ignore[misc]
    with pytest.raises(ConfigError, match="unknown field"):
        build(RandomizeConfig, {"omegam": 0.1})


# --- character-level mutations (RandomizeConfig.mutation_level = "character") --------------------------------

from rapidfuzz.distance import DamerauLevenshtein  # noqa: E402

from frs_ray.text.edits import apply_char_operation  # noqa: E402

CHAR_OPS = ("insertion", "deletion", "substitution", "transposition")


@pytest.mark.parametrize("op", CHAR_OPS)
@pytest.mark.parametrize("token", ["cf", "lacks", "a", "aa", ",", "n't", "Great"])
def test_char_operation_is_one_character_edit_that_changes_the_spelling(op, token):
    rng = np.random.default_rng(3)
    for _ in range(50):
        new = apply_char_operation(token, op, rng)
        assert new != token
        assert DamerauLevenshtein.distance(token, new) == 1
        if op == "insertion":
            assert len(new) == len(token) + 1
        elif op == "deletion":
            assert len(new) == len(token) - 1
        else:
            assert len(new) == len(token)


def test_char_transposition_without_distinct_neighbours_substitutes():
    rng = np.random.default_rng(0)
    assert {len(apply_char_operation(t, "transposition", rng)) for t in ("a", "aa", "zzz")} == {1, 2, 3}
    assert apply_char_operation("ab", "transposition", rng) == "ba"
    with pytest.raises(ValueError, match="unknown mutation operation"):
        apply_char_operation("ab", "swap", rng)


def test_apply_mutations_character_level_edits_only_drawn_tokens():
    tokens = ["the", "story", "lacks", "cf", "punch", "."]
    draws = np.array([0, 0, 1, 1, 0, 0], dtype=bool)
    ops, probs = list(CHAR_OPS), np.full(4, 0.25)
    for seed in range(30):
        out = apply_mutations(tokens, draws, ops, probs, np.random.default_rng(seed), "[MASK]", "character")
        assert "[MASK]" not in out and "cf" not in out and "lacks" not in out
        kept = [t for t in out if t in ("the", "story", "punch", ".")]
        assert kept == ["the", "story", "punch", "."]
    # a one-character token that loses its character is dropped, not left as an empty token
    out = apply_mutations(
        ["a", "b"], np.array([1, 0], dtype=bool), ["deletion"], np.ones(1), np.random.default_rng(0), "[MASK]", "character"
    )
    assert out == ["b"]
    with pytest.raises(ValueError, match="unknown mutation level"):
        apply_mutations(tokens, draws, ops, probs, np.random.default_rng(0), "[MASK]", "word")


def test_character_level_randomizer_is_reproducible_and_counts_every_edit_as_destroying():
    cfg = build(RandomizeConfig, {"omega_m": 0.3, "omega_h": 0.9, "mutation_level": "character"})
    assert cfg.destroy_fraction() == 1.0
    assert build(RandomizeConfig, {}).destroy_fraction() == MutationWeights().destroy_fraction()
    rnd = FuzzedRandomizer(cfg)
    tokens, span = ["it", "'s", "a", "mn", "film", "."], [0, 0, 0, 1, 0, 0]
    a = [rnd.randomize(tokens, span, np.random.default_rng(s)).tokens for s in range(20)]
    b = [rnd.randomize(tokens, span, np.random.default_rng(s)).tokens for s in range(20)]
    assert a == b
    assert sum("mn" not in x for x in a) >= 12  # omega_H = 0.9 in T(x'): the trigger's spelling changes in most draws
    assert all("[MASK]" not in x for x in a)
    with pytest.raises(ConfigError, match="mutation_level"):
        build(RandomizeConfig, {"mutation_level": "word"})


def test_character_level_certificate_counts_every_mutation_and_states_its_assumption():
    from frs_ray.certify.smooth import VotePlan, finalize_certificate
    from frs_ray.config import CertifyConfig

    plan = VotePlan(
        text="it 's a mn film .",
        length_tokens=6,
        span_tokens=1,
        omega_h=0.9,
        omega_l=0.2,
        spans=[],
        fuzz_queries=0,
        select=[],
        estimate=[],
    )
    token = finalize_certificate(plan, [0, 200], [0, 200], CertifyConfig(k=200), ["neg", "pos"])
    char = finalize_certificate(
        plan, [0, 200], [0, 200], build(CertifyConfig, {"k": 200, "randomize": {"mutation_level": "character"}}), ["neg", "pos"]
    )
    destroy = MutationWeights().destroy_fraction()
    assert token.radius["unconditional"].omega == pytest.approx(0.2 * destroy)
    assert char.radius["unconditional"].omega == pytest.approx(0.2)  # every character edit changes the spelling
    assert char.radius["unconditional"].tokens >= token.radius["unconditional"].tokens
    for kind in ("conditional", "unconditional"):
        assert "spelling changed" in char.radius[kind].assumes
        assert "spelling" not in token.radius[kind].assumes


# --------------------------------------------------------------------------------------------------
# span_mutations: the mutation set inside T(x') (an extension)
# --------------------------------------------------------------------------------------------------

DESTROY_ONLY = {"insertion": 0, "deletion": 0.5, "substitution": 0.5, "transposition": 0}


def test_apply_mutations_span_probs_apply_inside_the_span_only():
    toks = distinct_tokens(6)
    span = [False, True, True, False, False, False]
    draws = np.ones(6, bool)
    out = apply_mutations(
        toks,
        draws,
        ["deletion", "insertion"],
        np.array([0.0, 1.0]),
        np.random.default_rng(0),
        FILLER,
        span=span,
        span_probs=np.array([1.0, 0.0]),
    )
    assert out == [FILLER, "t0", FILLER, "t3", FILLER, "t4", FILLER, "t5"]  # t1, t2 deleted, a filler before the rest
    # span_probs equal to op_probs: the same random stream and output as without them
    ops, probs = (
        list(MutationWeights().as_items()[i][0] for i in range(4)),
        np.array([w for _, w in MutationWeights().as_items()]),
    )
    for seed in range(20):
        d = np.random.default_rng(seed + 100).random(6) < 0.5
        a = apply_mutations(toks, d, ops, probs, np.random.default_rng(seed), FILLER)
        b = apply_mutations(toks, d, ops, probs, np.random.default_rng(seed), FILLER, span=span, span_probs=probs)
        assert a == b
    with pytest.raises(ValueError, match="together"):
        apply_mutations(toks, draws, ops, probs, np.random.default_rng(0), FILLER, span=span)
    with pytest.raises(ValueError, match="entries"):
        apply_mutations(toks, draws, ops, probs, np.random.default_rng(0), FILLER, span=span[:3], span_probs=probs)


def test_span_mutations_remove_a_span_token_from_every_vote_at_omega_h_one():
    toks = "the film is a cf charming and often affecting journey .".split()
    span = [t == "cf" for t in toks]
    default = FuzzedRandomizer(RandomizeConfig(omega_m=0.15, omega_h=1.0), FILLER)
    destroy = FuzzedRandomizer(build(RandomizeConfig, {"omega_m": 0.15, "omega_h": 1.0, "span_mutations": DESTROY_ONLY}), FILLER)
    n = 2000
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
    kept_default = sum("cf" in default.randomize(toks, span, rng_a).tokens for _ in range(n))
    kept_destroy = sum("cf" in destroy.randomize(toks, span, rng_b).tokens for _ in range(n))
    assert kept_destroy == 0
    d = MutationWeights().destroy_fraction()  # insertion / transposition keep the token: it survives in 1 - d of draws
    assert abs(kept_default / n - (1 - d)) <= 5 * math.sqrt(d * (1 - d) / n)
    # outside T(x') the default weights still apply: insertions and transpositions happen there
    outs = [destroy.randomize(toks, span, rng_b).tokens for _ in range(300)]
    assert any(len(o) > len(toks) for o in outs)


def test_span_destroy_fraction_and_config_checks():
    cfg = build(RandomizeConfig, {"span_mutations": DESTROY_ONLY})
    assert cfg.span_destroy_fraction() == 1.0
    assert cfg.destroy_fraction() == MutationWeights().destroy_fraction()
    assert RandomizeConfig().span_destroy_fraction() == RandomizeConfig().destroy_fraction()
    char = build(RandomizeConfig, {"span_mutations": {"insertion": 1}, "mutation_level": "character"})
    assert char.span_destroy_fraction() == 1.0  # every character edit changes the spelling
    with pytest.raises(ConfigError):
        build(RandomizeConfig, {"span_mutations": {"insertion": 0, "deletion": 0, "substitution": 0, "transposition": 0}})
    with pytest.raises(ConfigError):
        build(RandomizeConfig, {"span_mutations": {"swap": 1}})


@pytest.mark.parametrize(
    "span_mutations, omega_h, omega_l, span_tokens, length, want",
    [
        # without span weights: exactly the earlier rule, (omega_H d, omega_L d)
        (None, 0.9, 0.1, 1, 10, (0.9 * 0.8, 0.1 * 0.8)),
        (None, 0.15, 0.15, 0, 10, (0.15 * 0.8, 0.15 * 0.8)),
        (None, 0.15, 0.15, 10, 10, (0.15 * 0.8, 0.15 * 0.8)),
        # d = 1 inside T(x'): the conditional radius uses omega_H, the unconditional the smallest token's
        (DESTROY_ONLY, 1.0, 0.1, 1, 10, (1.0, 0.1 * 0.8)),
        (DESTROY_ONLY, 0.15, 0.15, 0, 10, (0.15 * 0.8, 0.15 * 0.8)),  # no span: d_span plays no part
        (DESTROY_ONLY, 0.15, 0.15, 10, 10, (0.15, 0.15)),  # the whole text is T(x')
        # span weights that destroy less than outside: the unconditional radius takes the span's
        ({"insertion": 1, "deletion": 1, "substitution": 0, "transposition": 0}, 0.3, 0.25, 2, 10, (0.15, 0.15)),
    ],
)
def test_destroy_probabilities(span_mutations, omega_h, omega_l, span_tokens, length, want):
    cfg = build(RandomizeConfig, {"span_mutations": span_mutations})
    assert cfg.destroy_probabilities(omega_h, omega_l, span_tokens, length) == pytest.approx(want)


def test_certificate_with_destroying_span_mutations_certifies_the_whole_span():
    from frs_ray.certify.rounds import sequential_test
    from frs_ray.certify.smooth import VotePlan, finalize_certificate
    from frs_ray.config import CertifyConfig

    plan = VotePlan(
        text="it 's a mn film .",
        length_tokens=6,
        span_tokens=1,
        omega_h=1.0,
        omega_l=0.0,
        spans=[],
        fuzz_queries=0,
        select=[],
        estimate=[],
    )
    cfg = build(CertifyConfig, {"k": 20, "randomize": {"omega_m": 1 / 6, "omega_h": 1.0, "span_mutations": DESTROY_ONLY}})
    cert = finalize_certificate(plan, [0, 40], [0, 40], cfg, ["neg", "pos"])
    cond, uncond = cert.radius["conditional"], cert.radius["unconditional"]
    assert cond.omega == 1.0 and cond.tokens == 1  # a trigger inside T(x') is removed from every vote
    assert uncond.omega == 0.0 and uncond.tokens == 0
    default = finalize_certificate(plan, [0, 40], [0, 40], build(CertifyConfig, {"k": 20}), ["neg", "pos"])
    assert default.radius["conditional"].omega == pytest.approx(0.8)
    seq = build(CertifyConfig, {"k": 20, "n_max": 200, "target_radius": 1, "randomize": cfg.randomize.model_dump()})
    assert sequential_test(plan, seq).omega == pytest.approx(cond.omega)


def test_a_drawn_token_gets_its_own_operation_after_the_last_token_moves_left():
    # the last token transposes with its (not yet processed) left neighbour; that neighbour's deletion must still
    # delete the neighbour, not the token that moved into its place
    ops = ["deletion", "transposition"]
    out = apply_mutations(
        ["a", "T", "z"],
        np.array([0, 1, 1], bool),
        ops,
        np.array([0.0, 1.0]),
        np.random.default_rng(0),
        FILLER,
        span=[False, True, False],
        span_probs=np.array([1.0, 0.0]),
    )
    assert out == ["a", "z"]


def test_every_drawn_token_is_destroyed_with_probability_d_wherever_it_sits():
    """Monte-Carlo check of what Theorem 1's radius uses: a drawn token is removed with probability exactly d, also
    next to the last token (which may move left) and with every neighbour drawn too."""
    items = MutationWeights().as_items()
    ops, probs = [o for o, _ in items], np.array([w for _, w in items])
    d = MutationWeights().destroy_fraction()
    n = 4000
    rng = np.random.default_rng(11)
    for length in (2, 3, 5):
        toks = distinct_tokens(length)
        removed = np.zeros(length)
        for _ in range(n):
            out = apply_mutations(toks, np.ones(length, bool), ops, probs, rng, FILLER)
            removed += [t not in out for t in toks]
        se = math.sqrt(d * (1 - d) / n)
        assert np.all(np.abs(removed / n - d) <= 5 * se), (length, removed / n)


# --------------------------------------------------------------------------------------------------
# span_rate = "fixed" (an extension): omega_H as set however large T(x'), Lambda widened by T(x')'s share
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "length, span, omega_m, omega_h, want",
    [
        (20, 4, 0.2, 0.8, (0.8, 0.05)),  # the mass suffices: the same as the paper's rule
        (10, 5, 0.2, 0.9, (0.9, 0.0)),  # equal_mass would lower omega_H to 0.4
        (25, 8, 0.15, 1.0, (1.0, 0.0)),  # a grown 8-token span: equal_mass would give 0.47
        (10, 0, 0.15, 0.9, (0.15, 0.15)),  # no span: uniform
        (10, 10, 0.15, 0.9, (0.15, 0.15)),  # the whole text: uniform, as under the paper's rule
    ],
)
def test_allocate_omegas_fixed_keeps_omega_h(length, span, omega_m, omega_h, want):
    assert allocate_omegas(length, span, omega_m, omega_h, "fixed") == pytest.approx(want)


def test_allocate_omegas_fixed_never_mutates_less_than_equal_mass_and_differs_only_when_clamped():
    for length, omega_m, omega_h in itertools.product((2, 7, 20, 64), (0.05, 0.15, 0.5), (0.5, 0.9, 1.0)):
        for span in range(1, length):
            fh, fl = allocate_omegas(length, span, omega_m, omega_h, "fixed")
            eh, el = allocate_omegas(length, span, omega_m, omega_h)
            assert fh == omega_h and fl >= 0.0
            assert span * fh + (length - span) * fl >= length * omega_m - 1e-12
            if span * omega_h <= length * omega_m:
                assert (fh, fl) == pytest.approx((eh, el))
    with pytest.raises(ConfigError, match="rule"):
        allocate_omegas(10, 2, 0.1, 0.9, "loose")


def test_fixed_span_rate_removes_a_long_kept_span_from_every_vote_within_the_widened_bound():
    from frs_ray.fuzzing import span_distance_bound

    toks = "moot point . i watch this 3d movie".split()  # a 5-token span in an 8-token text: 5/8 > Lambda 0.5
    span = [i >= 3 for i in range(len(toks))]
    trigger = set(toks[3:])
    base = {"omega_m": 0.15, "omega_h": 1.0, "span_mutations": DESTROY_ONLY}
    paper = FuzzedRandomizer(build(RandomizeConfig, base), FILLER)
    fixed = FuzzedRandomizer(build(RandomizeConfig, {**base, "span_rate": "fixed"}), FILLER)
    assert paper.omegas(8, 5) == pytest.approx((0.24, 0.0)) and fixed.omegas(8, 5) == (1.0, 0.0)
    assert fixed.distance_bound(8, 5) == pytest.approx(min(1.0, 0.5 + 5 / 8)) == span_distance_bound(0.5, 8, 5)
    assert paper.distance_bound(8, 5) == 0.5
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
    outs_paper = [paper.randomize(toks, span, rng_a) for _ in range(500)]
    outs_fixed = [fixed.randomize(toks, span, rng_b) for _ in range(500)]
    assert all(not trigger & set(o.tokens) and not o.fallback for o in outs_fixed)
    assert all(o.tokens[:3] == toks[:3] for o in outs_fixed)  # omega_L = 0: the rest is left as it is
    # under the paper's rule the whole trigger goes in only about 0.24^5 of the votes
    assert sum(not trigger & set(o.tokens) for o in outs_paper) < 10


def test_span_distance_bound_and_config():
    from frs_ray.fuzzing import span_distance_bound

    assert span_distance_bound(0.5, 20, 4) == pytest.approx(0.7)
    assert span_distance_bound(0.5, 20, 0) == 0.5 and span_distance_bound(0.5, 0, 0) == 0.5
    assert span_distance_bound(0.9, 10, 5) == 1.0
    assert RandomizeConfig().span_rate == "equal_mass"
    with pytest.raises(ConfigError, match="span_rate"):
        build(RandomizeConfig, {"span_rate": "free"})
    # a text without a kept span is randomized under the configured Lambda, whatever the rule
    fixed = FuzzedRandomizer(build(RandomizeConfig, {"span_rate": "fixed"}), FILLER)
    assert fixed.distance_bound(10, 0) == 0.5 and fixed.distance_bound(10, 10) == 0.5


def test_fixed_span_rate_certificate_reads_the_omegas_used():
    from frs_ray.certify.smooth import VotePlan, finalize_certificate
    from frs_ray.config import CertifyConfig

    cfg = build(
        CertifyConfig,
        {"k": 20, "randomize": {"omega_m": 0.15, "omega_h": 1.0, "span_mutations": DESTROY_ONLY, "span_rate": "fixed"}},
    )
    fixed = FuzzedRandomizer(cfg.randomize, FILLER)
    om_h, om_l = fixed.omegas(8, 5)
    plan = VotePlan(
        text="moot point . i watch this 3d movie",
        length_tokens=8,
        span_tokens=5,
        omega_h=om_h,
        omega_l=om_l,
        spans=[],
        fuzz_queries=0,
        select=[],
        estimate=[],
    )
    cert = finalize_certificate(plan, [0, 40], [0, 40], cfg, ["neg", "pos"])
    cond, uncond = cert.radius["conditional"], cert.radius["unconditional"]
    assert cond.omega == 1.0 and cond.tokens == 5  # capped at |T(x')|
    assert uncond.omega == 0.0 and uncond.tokens == 0  # the rest gets omega_L = 0: no unconditional claim
