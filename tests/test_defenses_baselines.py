"""ONION and TextGuard baselines on real models (the session MiniLM checkpoint, SmolLM2 for perplexity)."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest
from conftest import sst2_defense_context

from frs_ray.certify.certificate import ABSTAIN
from frs_ray.data import load_dataset
from frs_ray.defenses.registry import build_defense, known_defenses
from frs_ray.defenses.textguard import (
    split_groups,
    sub_sentences,
    textguard_certified_radius,
    vote_label,
    word_group,
)
from frs_ray.errors import ConfigError
from frs_ray.text.tokens import tokenize

TINY_FINETUNE = {"epochs": 1, "max_length": 64, "batch_size": 16, "learning_rate": 1e-4, "seed": 0}


def _ctx(tmp_path, checkpoint, data_dir, n_train=20):
    return sst2_defense_context(tmp_path, checkpoint, data_dir, n_train, finetune=dict(TINY_FINETUNE))


def _short_sentence(data_dir, lo=6, hi=9):
    test = load_dataset("sst2", "test", data_dir)
    return next(t for t in test.texts if lo <= len(tokenize(t)) <= hi)


# --------------------------------------------------------------------------- registry and configs


def test_registry_knows_both():
    assert {"onion", "textguard"} <= set(known_defenses())


def test_unknown_defense_and_bad_params(tmp_path, data_dir):
    ctx = _ctx(tmp_path, "unused", data_dir)
    with pytest.raises(ConfigError, match="known defenses"):
        build_defense("onoin", ctx)
    with pytest.raises(ConfigError, match="treshold"):
        build_defense("onion", ctx, treshold=1.0)
    with pytest.raises(ConfigError, match="lm_batch_size"):
        build_defense("onion", ctx, lm_batch_size=0)
    with pytest.raises(ConfigError, match="groups"):
        build_defense("textguard", ctx, groups=3)
    with pytest.raises(ConfigError, match=r"\bm\b"):
        build_defense("textguard", ctx, m=0)


# --------------------------------------------------------------------------- TextGuard: grouping and certificate


def test_grouping_is_stable_and_partitions_the_words():
    text = "The movie , the MOVIE and a cf twist : it 's good-natured fun ."
    toks = tokenize(text)
    for m in (1, 2, 3, 7):
        groups = split_groups(text, m, seed=5)
        assert len(groups) == m
        flat = sorted((t for g in groups for t in g), key=lambda t: t.start)
        assert flat == toks  # every token in exactly one group
        for g in groups:  # each group keeps text order
            assert [t.start for t in g] == sorted(t.start for t in g)
        assert split_groups(text, m, seed=5) == groups
    assert word_group("Movie", 3, 0) == word_group("movie", 3, 0) == word_group("MOVIE", 3, 0)
    # md5-based, so the same in every process and on every machine (unlike Python's salted hash())
    assert word_group("movie", 1000, 0) == int(hashlib.md5(b"0:movie").hexdigest(), 16) % 1000
    assert any(word_group(w, 7, 0) != word_group(w, 7, 1) for w in ("a", "movie", "cf", "fun", "the"))
    subs = sub_sentences(text, 3, seed=5)
    assert sum(len(s.split()) for s in subs) == len(toks)


def _brute_radius(group_votes, num_labels):
    """Largest r such that changing any r groups (to any label or to 'no vote') keeps the winning label."""

    def label(vs):
        counts = np.bincount([v for v in vs if v is not None], minlength=num_labels)
        return vote_label(counts)

    y = label(group_votes)
    values = list(range(num_labels)) + [None]
    best = len(group_votes)
    for other in itertools.product(values, repeat=len(group_votes)):
        if label(other) != y:
            best = min(best, sum(a != b for a, b in zip(group_votes, other)) - 1)
    return best


@pytest.mark.parametrize("m,num_labels", [(1, 2), (2, 2), (3, 2), (4, 2), (5, 2), (2, 3), (3, 3), (4, 3)])
def test_certificate_matches_brute_force(m, num_labels):
    for group_votes in itertools.product(list(range(num_labels)) + [None], repeat=m):
        counts = np.bincount([v for v in group_votes if v is not None], minlength=num_labels)
        assert textguard_certified_radius(counts) == _brute_radius(group_votes, num_labels), group_votes


def test_certificate_small_cases():
    assert textguard_certified_radius([3, 0]) == 1
    assert textguard_certified_radius([0, 3]) == 1  # 3-1 vs 0+1 = 2 vs 1 holds; r=2 gives 1 vs 2
    assert textguard_certified_radius([2, 1]) == 0
    assert textguard_certified_radius([1, 1]) == 0
    assert textguard_certified_radius([2, 0]) == 1  # 1 vs 1 ties to label 0: still certified for 1
    assert textguard_certified_radius([0, 2]) == 0  # 1 vs 1 ties to label 0: broken by 1 change
    assert textguard_certified_radius([0, 2, 0]) == 0
    assert textguard_certified_radius([5, 0, 0]) == 2
    with pytest.raises(ValueError):
        textguard_certified_radius([3])


# --------------------------------------------------------------------------- TextGuard on a real model


@pytest.mark.slow
def test_textguard_predicts_certifies_and_reuses_cache(tmp_path, data_dir, minilm_checkpoint):
    ctx = _ctx(tmp_path, minilm_checkpoint, data_dir)
    tg = build_defense("textguard", ctx, m=3)
    assert tg.certified and len(tg.trained) == 1
    texts = load_dataset("sst2", "test", data_dir).subset(6, seed=2).texts + ["fun"]
    preds = tg.predict(texts)
    votes = tg.group_votes(texts)
    assert len(preds) == len(texts)
    for x, p, vs in zip(texts, preds, votes):
        cast = [v for v in vs if v is not None]
        counts = np.bincount(cast, minlength=2)
        assert p.vote_label in (0, 1) and p.vote_label == vote_label(counts)
        assert p.queries == len(cast) == sum(1 for s in sub_sentences(x, 3, 0) if s)
        assert p.length_tokens == len(tokenize(x))
        assert p.radius is not None and p.radius >= 0 and p.radius == p.radius_unconditional
        assert p.radius == textguard_certified_radius(counts)
        top, second = sorted(counts, reverse=True)[:2]
        if top - second <= 1:
            assert p.radius == 0
        assert p.radius <= len(cast) // 2 and p.radius_assumes
    assert preds[-1].queries == 1 and preds[-1].radius == 0  # one word: one vote, 1 vs 0 is not certified

    meta = tg.model_dirs[0] / "frs.json"
    mtime = meta.stat().st_mtime_ns
    again = build_defense("textguard", ctx, m=3)
    assert again.trained == [] and again.model_dirs == tg.model_dirs
    assert meta.stat().st_mtime_ns == mtime
    assert [p.vote_label for p in again.predict(texts)] == [p.vote_label for p in preds]
    assert again.describe()["m"] == 3 and again.describe()["shared"] is True


@pytest.mark.slow
def test_textguard_one_model_per_group(tmp_path, data_dir, minilm_checkpoint):
    ctx = _ctx(tmp_path, minilm_checkpoint, data_dir, n_train=16)
    tg = build_defense("textguard", ctx, m=2, shared=False, seed=1)
    assert len(tg.trained) == 2 and len(tg.classifiers) == 2
    preds = tg.predict(["a gripping , funny story .", ""])
    assert preds[0].vote_label in (0, 1) and preds[0].radius >= 0
    assert preds[1].vote_label == ABSTAIN and preds[1].queries == 0


# --------------------------------------------------------------------------- ONION on real models


@pytest.fixture(scope="module")
def onion_setup(tmp_path_factory, data_dir, minilm_checkpoint):
    ctx = _ctx(tmp_path_factory.mktemp("onion"), minilm_checkpoint, data_dir)
    return ctx, build_defense("onion", ctx)


@pytest.mark.slow
def test_onion_removes_inserted_trigger(onion_setup, data_dir):
    ctx, onion = onion_setup
    words = _short_sentence(data_dir).split(" ")
    words.insert(len(words) // 2, "cf")
    text = " ".join(words)
    start = text.index(" cf ") + 1
    before = onion.lm_sequences_run
    [p] = onion.predict([text])
    n = len(tokenize(text))
    assert onion.lm_sequences_run - before == n + 1
    assert (start, start + 2) in p.spans
    assert p.vote_label in (0, 1) and p.length_tokens == n and p.queries == n + 2
    assert p.radius is None and p.seconds > 0
    assert all(0 <= a < b <= len(text) for a, b in p.spans)
    assert not onion.certified and onion.describe()["threshold"] == 0.0

    # cached: no LM sequence is run again, by this object or a fresh one on the same work_dir
    ran = onion.lm_sequences_run
    [q] = onion.predict([text])
    assert onion.lm_sequences_run == ran and q.spans == p.spans and q.vote_label == p.vote_label
    fresh = build_defense("onion", ctx)
    [r] = fresh.predict([text])
    assert fresh.lm_sequences_run == 0 and r.spans == p.spans and r.queries == p.queries


@pytest.mark.slow
def test_onion_batched_perplexity_matches_single(onion_setup):
    _, onion = onion_setup
    texts = ["a gripping story .", "it is a cf bad , bad film", "fun"]
    batched = onion.lm.perplexities(texts)
    single = np.array([onion.lm.perplexities([t])[0] for t in texts])
    np.testing.assert_allclose(batched, single, rtol=1e-3)  # padding changes fp32 summation order
    assert np.all(np.isfinite(batched)) and np.all(batched > 1)
    assert onion.lm.perplexities(["a gripping cf story ."])[0] > onion.lm.perplexities(["a gripping story ."])[0]


@pytest.mark.slow
def test_onion_short_texts_and_high_threshold(onion_setup, tmp_path):
    ctx, _ = onion_setup
    strict = build_defense("onion", ctx, threshold=1e12)
    preds = strict.predict(["fun", "a gripping cf story ."])
    assert preds[0].spans == [] and preds[0].queries == 1 and preds[0].length_tokens == 1
    assert preds[1].spans == [] and preds[1].queries == 7
