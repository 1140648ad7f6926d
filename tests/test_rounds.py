"""Tests of frs_ray.certify.rounds: sequential CERTIFY over a batch of plans, with a synthetic voter.

No model: plans are built from word lists with the real FuzzedRandomizer, and ``vote_labels`` is a deterministic
function of each job (like a voter), so batching, reproducibility and bookkeeping can be checked exactly.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from frs_ray.certify.bounds import certified_radius, clopper_pearson_lower
from frs_ray.certify.rounds import SequentialBatch, certify_plans_sequential, draw_round, sequential_test
from frs_ray.certify.sequential import LookSchedule
from frs_ray.certify.smooth import VotePlan, certificates_match, finalize_certificate, text_seed
from frs_ray.config import CertifyConfig, RandomizeConfig, build
from frs_ray.errors import ConfigError
from frs_ray.fuzzing import FuzzedRandomizer
from frs_ray.text import render

LABELS = ["negative", "positive"]
TEXTS = [
    "a gorgeous , witty , seductive and good movie .",
    "good acting , good pacing , a good script .",
    "the film is strictly routine and dull .",
    "it is a film about a man who is a film .",
]


def _plan(text: str, cfg: CertifyConfig, rnd: FuzzedRandomizer, span: tuple[int, int] = (1, 3)) -> VotePlan:
    """What FRSClassifier.prepare builds, with a fixed T(x') instead of fuzzing."""
    words = text.split()
    in_span = np.zeros(len(words), dtype=bool)
    in_span[span[0] : span[1]] = True
    om_h, om_l = rnd.omegas(len(words), int(in_span.sum()))
    rng = np.random.default_rng(text_seed(cfg.seed, text) + [7])
    jobs = [
        (int(rng.integers(cfg.k)), render(rnd.randomize(words, in_span, rng).tokens))
        for _ in range(cfg.votes_select + cfg.votes_estimate)
    ]
    return VotePlan(
        text,
        len(words),
        int(in_span.sum()),
        om_h,
        om_l,
        [],
        0,
        jobs[: cfg.votes_select],
        jobs[cfg.votes_select :],
        words=words,
        in_span=in_span.tolist(),
    )


def _voter(share_good: float = 0.97, share_other: float = 0.6):
    """Deterministic synthetic voter: 'positive' with a job-hash probability set by whether 'good' survived."""
    calls: list[int] = []

    def vote_labels(jobs):
        calls.append(len(jobs))
        out = []
        for k, t in jobs:
            u = int.from_bytes(hashlib.sha256(f"{k}|{t}".encode()).digest()[:8], "big") / 2**64
            out.append(int(u < (share_good if "good" in t.split() else share_other)))
        return out

    return vote_labels, calls


def _run(texts, cfg, rnd, voter=None):
    vote_labels, calls = voter or _voter()
    plans = [_plan(t, cfg, rnd) for t in texts]
    certs = certify_plans_sequential(plans, vote_labels, lambda p, look, n: draw_round(p, look, n, cfg, rnd), cfg, LABELS)
    return certs, calls


@pytest.fixture(scope="module")
def rnd() -> FuzzedRandomizer:
    return FuzzedRandomizer(RandomizeConfig(), filler="[MASK]")


def _cfg(**kw) -> CertifyConfig:
    return build(CertifyConfig, {"k": 8, "n_select": 10, "n_estimate": 20, "n_max": 320, **kw})


def test_rounds_of_all_texts_share_each_voter_call(rnd) -> None:
    cfg = _cfg(target_radius=2)
    certs, calls = _run(TEXTS, cfg, rnd)
    looks = [c.sequential["looks"] for c in certs]
    assert len(calls) == max(looks)  # one call per look, not per text and look
    assert calls[0] == sum(10 + 20 for _ in TEXTS)  # selection + first round of every text together
    sizes = LookSchedule.of(cfg).sizes
    for j in range(1, max(looks)):  # each later call holds exactly the texts still running
        assert calls[j] == sum(sizes[j] - sizes[j - 1] for lk in looks if lk > j)
    for c in certs:
        s = c.sequential
        assert sum(c.votes) == s["votes"] == sizes[s["looks"] - 1]
        assert c.queries["votes"] == 10 + s["votes"] and sum(c.select_votes) == 10
        assert s["alpha_spent"] == pytest.approx(s["looks"] * 0.01) and s["alpha_look"] == pytest.approx(0.01)
        assert s["alpha"] == pytest.approx(0.05) and s["n_max"] == 320 and s["stop"] in ("target", "futile", "n_max")
        # the reported bound is the Clopper-Pearson bound of the final look's counts at that look's level
        chosen = int(np.argmax(c.select_votes))
        assert c.p_lower == pytest.approx(clopper_pearson_lower(c.votes[chosen], s["votes"], s["alpha_look"]))
        assert c.abstained == (not c.p_lower > 0.5)
        if s["target_reached"]:
            assert c.radius["conditional"].tokens >= s["target_radius"]
    assert len(set(looks)) > 1  # the texts needed different numbers of rounds


def test_certificate_does_not_depend_on_the_batch(rnd) -> None:
    cfg = _cfg(target_radius=1)
    together, _ = _run(TEXTS, cfg, rnd)
    alone = [_run([t], cfg, rnd)[0][0] for t in TEXTS]
    reordered, _ = _run(TEXTS[::-1], cfg, rnd)
    for a, b, c in zip(together, alone, reordered[::-1]):
        assert certificates_match(a.to_dict(), b.to_dict()) and certificates_match(a.to_dict(), c.to_dict())


def test_draw_round_is_seeded_by_text_and_look(rnd) -> None:
    cfg = _cfg()
    plan = _plan(TEXTS[0], cfg, rnd)
    assert draw_round(plan, 0, 20, cfg, rnd) == plan.estimate
    a, b = draw_round(plan, 2, 40, cfg, rnd), draw_round(plan, 2, 40, cfg, rnd)
    assert a == b and a != draw_round(plan, 3, 40, cfg, rnd)
    assert all(0 <= k < cfg.k for k, _ in a) and len({t for _, t in a}) > 1
    # a shorter round of the same look is a prefix: runs with different n_max share their common votes
    assert draw_round(plan, 2, 15, cfg, rnd) == a[:15]
    other = build(CertifyConfig, {**cfg.model_dump(), "seed": 1})
    assert draw_round(plan, 2, 40, other, rnd) != a
    with pytest.raises(ConfigError, match="first round"):
        draw_round(plan, 0, 19, cfg, rnd)
    bare = VotePlan(
        plan.text, plan.length_tokens, plan.span_tokens, plan.omega_h, plan.omega_l, [], 0, plan.select, plan.estimate
    )
    with pytest.raises(ConfigError, match="words"):
        draw_round(bare, 1, 20, cfg, rnd)


def test_one_look_equals_the_fixed_protocol(rnd) -> None:
    cfg = _cfg(n_max=20)
    fixed_cfg = build(CertifyConfig, {"k": 8, "n_select": 10, "n_estimate": 20})
    vote_labels, _ = _voter()
    seq, calls = _run(TEXTS, cfg, rnd, (vote_labels, []))
    for t, c in zip(TEXTS, seq):
        p = _plan(t, fixed_cfg, rnd)
        labels = vote_labels(p.select + p.estimate)
        sel, est = [0, 0], [0, 0]
        for y in labels[:10]:
            sel[y] += 1
        for y in labels[10:]:
            est[y] += 1
        f = finalize_certificate(p, sel, est, fixed_cfg, LABELS)
        assert (c.certified_label, c.votes, c.select_votes, c.radius, c.vote_label) == (
            f.certified_label,
            f.votes,
            f.select_votes,
            f.radius,
            f.vote_label,
        )
        assert c.p_lower == pytest.approx(f.p_lower, rel=1e-12) and c.sequential["looks"] == 1


def test_target_radius_costs_votes_and_buys_radius(rnd) -> None:
    none, _ = _run(TEXTS[:2], _cfg(), rnd, _voter(0.99))
    # omega_H x d = 0.6 here: 1 token needs p_lower > 0.9, out of reach of the first round's 20 votes at alpha / 5
    want, _ = _run(TEXTS[:2], _cfg(target_radius=1), rnd, _voter(0.99))
    for a, b in zip(none, want):
        assert a.sequential["votes"] <= b.sequential["votes"]
        assert a.radius["conditional"].tokens <= b.radius["conditional"].tokens
        if b.sequential["target_reached"]:
            assert b.radius["conditional"].tokens >= 1
            assert certified_radius(b.p_lower, b.radius["conditional"].omega) >= 1
    assert any(b.sequential["votes"] > 20 and b.sequential["target_reached"] for b in want)
    assert all(a.radius["conditional"].tokens == 0 for a in none)
    # 2 tokens need p_lower > 0.5 + 1 - 0.36: never reachable, so it stops once the label is certified
    two, _ = _run(TEXTS[:2], _cfg(target_radius=2), rnd, _voter(0.99))
    assert all(c.sequential["stop"] == "futile" and c.sequential["votes"] == 20 and not c.abstained for c in two)


def test_target_is_capped_at_the_radius_cap(rnd) -> None:
    cfg = _cfg(target_radius=50)  # T(x') has 2 tokens: the conditional radius cannot exceed 2
    plan = _plan(TEXTS[0], cfg, rnd)
    assert sequential_test(plan, cfg).target_radius == 2
    unc = _cfg(target_radius=50, target_kind="unconditional")
    assert sequential_test(plan, unc).target_radius == plan.length_tokens
    with pytest.raises(ConfigError, match="n_max"):
        sequential_test(plan, build(CertifyConfig, {"k": 8}))


def test_bad_voter_output_and_misuse_are_clear_errors(rnd) -> None:
    cfg = _cfg()
    plans = [_plan(t, cfg, rnd) for t in TEXTS[:2]]
    draw = lambda p, look, n: draw_round(p, look, n, cfg, rnd)  # noqa: E731
    with pytest.raises(ConfigError, match="labels for"):
        certify_plans_sequential(plans, lambda jobs: [1] * (len(jobs) - 1), draw, cfg, LABELS)
    batch = SequentialBatch(plans, draw, cfg, LABELS)
    with pytest.raises(ConfigError, match="rounds left"):
        batch.certificates()
    short = SequentialBatch(plans, lambda p, look, n: draw(p, look, n)[:-1] if look else draw(p, look, n), cfg, LABELS)
    short.deliver([j % 2 for j in range(len(short.pending_jobs()))])  # 50% shares: neither text stops at look 1
    with pytest.raises(ConfigError, match="needs 20 jobs"):
        short.pending_jobs()


def test_concurrent_batches_can_share_voter_calls(rnd) -> None:
    """The service's pattern: two requests' batches, each call merging both pending rounds, give the same
    certificates as each batch run alone; pending_jobs is stable until deliver."""
    cfg = _cfg(target_radius=1)
    vote_labels, calls = _voter()
    draw = lambda p, look, n: draw_round(p, look, n, cfg, rnd)  # noqa: E731
    a = SequentialBatch([_plan(t, cfg, rnd) for t in TEXTS[:2]], draw, cfg, LABELS)
    b = SequentialBatch([_plan(t, cfg, rnd) for t in TEXTS[2:]], draw, cfg, LABELS)
    assert a.pending_jobs() == a.pending_jobs()
    while not (a.done and b.done):
        ja, jb = a.pending_jobs(), b.pending_jobs()
        labels = vote_labels(ja + jb)  # one merged voter call
        if ja:
            a.deliver(labels[: len(ja)])
        if jb:
            b.deliver(labels[len(ja) :])
    merged = a.certificates() + b.certificates()
    alone, _ = _run(TEXTS, cfg, rnd)
    assert len(calls) == max(c.sequential["looks"] for c in merged)
    for x, y in zip(merged, alone):
        assert certificates_match(x.to_dict(), y.to_dict())


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"target_radius": 1}, "needs n_max"),
        ({"n_max": 10}, "n_max"),
        ({"n_max": 0}, "n_max"),
        ({"n_max": 320, "target_radius": -1}, "target_radius"),
        ({"n_max": 320, "round_growth": 1.0}, "round_growth"),
        ({"n_max": 320, "futility": 1.0}, "futility"),
        ({"n_max": 320, "target_kind": "both"}, "target_kind"),
        ({"n_max": 10**6, "n_estimate": 1, "round_growth": 1.01}, "looks"),
    ],
)
def test_config_range_checks(raw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build(CertifyConfig, raw)


def test_config_schedule() -> None:
    assert LookSchedule.of(CertifyConfig()) is None
    s = LookSchedule.of(build(CertifyConfig, {"n_max": 100, "alpha": 0.01}))
    assert s.sizes == (20, 40, 80, 100) and s.alpha == pytest.approx(0.01)
