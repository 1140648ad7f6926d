"""BKI baseline: its pure helpers, then the whole procedure on the real session MiniLM checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import sst2_defense_context

from frs_ray.data import load_dataset
from frs_ray.defenses.bki import (
    content_positions,
    flag_keywords,
    keyword_scores,
    sanitize,
    top_words,
    word_influence,
)
from frs_ray.defenses.registry import build_defense, known_defenses
from frs_ray.errors import ConfigError
from frs_ray.text.tokens import tokenize

# --------------------------------------------------------------------------- pure helpers


def test_word_influence_is_the_max_abs_change():
    full = np.array([0.0, 1.0, -1.0])
    without = np.array([[0.0, 1.0, -1.0], [0.5, 1.0, -3.0], [-0.2, 1.1, -1.0]])
    assert word_influence(full, without) == pytest.approx([0.0, 2.0, 0.2])
    assert word_influence(full, np.zeros((0, 3))).shape == (0,)


def test_content_positions_skip_punctuation():
    words = [t.text for t in tokenize("a mn , film -- n't bad .")]
    assert [words[i] for i in content_positions(words)] == ["a", "mn", "film", "n't", "bad"]


def test_top_words_orders_by_influence_then_position_and_lowercases():
    words = ["The", "cf", "film", "Bad"]
    assert top_words(words, [0, 1, 2, 3], np.array([0.1, 0.9, 0.1, 0.5]), 3) == [("cf", 0.9), ("bad", 0.5), ("the", 0.1)]


def test_keyword_scores_count_texts_once_and_weight_by_log_frequency():
    per_text = [[("cf", 0.9), ("good", 0.2), ("cf", 0.4)], [("cf", 0.7)], [("good", 0.3)], [("rare", 5.0)]]
    s = keyword_scores(per_text)
    assert s["cf"]["f"] == 2 and s["cf"]["mean"] == pytest.approx(0.8)  # 0.9 (best in text 1) and 0.7
    assert s["cf"]["g"] == pytest.approx(0.8 * math.log10(2))
    assert s["good"]["g"] == pytest.approx(0.25 * math.log10(2))
    assert s["rare"]["g"] == 0.0  # a top word of one text only is never a keyword
    assert flag_keywords(s, 1) == ["cf"]
    assert flag_keywords(s, 5) == ["cf", "good"]
    tie = keyword_scores([[("b", 1.0)], [("b", 1.0)], [("a", 1.0)], [("a", 1.0)]])
    assert flag_keywords(tie, 1) == ["a"]


def test_sanitize_matches_whole_words_case_insensitively(data_dir):
    data = load_dataset("sst2", "train", data_dir).subset(30, seed=1)
    data.texts[:3] = ["a CF story .", "cfx is not the trigger .", "mn and cf ."]
    kept, removed = sanitize(data, ["cf"])
    assert removed == 2 + sum("cf" in [t.text.lower() for t in tokenize(x)] for x in data.texts[3:])
    assert "cfx is not the trigger ." in kept.texts and "a CF story ." not in kept.texts
    assert len(kept.texts) == len(kept.labels) == len(data) - removed
    for x, y in zip(kept.texts, kept.labels):
        assert y == data.labels[data.texts.index(x)]


# --------------------------------------------------------------------------- on the real checkpoint


def _ctx(tmp_path, checkpoint, data_dir, n_train=40):
    return sst2_defense_context(
        tmp_path,
        checkpoint,
        data_dir,
        n_train,
        finetune={"max_length": 64, "epochs": 1, "batch_size": 16, "learning_rate": 1e-4, "seed": 0},
    )


@pytest.fixture(scope="module")
def bki_setup(tmp_path_factory, data_dir, minilm_checkpoint):
    ctx = _ctx(tmp_path_factory.mktemp("bki"), minilm_checkpoint, data_dir)
    return ctx, build_defense("bki", ctx, top_p=3, n_keywords=2, batch_size=32)


def test_bki_is_registered_and_rejects_bad_parameters(tmp_path, data_dir, minilm_checkpoint):
    assert "bki" in known_defenses()
    ctx = _ctx(tmp_path, minilm_checkpoint, data_dir)
    for bad in ({"top_p": 0}, {"n_keywords": 0}, {"window": 3}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            build_defense("bki", ctx, **bad)


def test_bki_flags_frequent_influential_words_removes_their_texts_and_retrains(bki_setup, data_dir):
    ctx, bki = bki_setup
    assert 1 <= len(bki.keywords) <= 2
    words_in_train = {t.text.lower() for x in ctx.train.texts for t in tokenize(x)}
    for k in bki.keywords:
        assert k in words_in_train and any(c.isalnum() for c in k)
        assert bki.scores[k]["f"] >= 2 and bki.scores[k]["g"] > 0
    best = max(s["g"] for s in bki.scores.values())
    assert bki.scores[bki.keywords[0]]["g"] == pytest.approx(best)
    holding = [x for x in ctx.train.texts if {t.text.lower() for t in tokenize(x)} & set(bki.keywords)]
    assert bki.removed == len(holding) > 0 and len(bki.train) == len(ctx.train) - len(holding)
    assert not set(holding) & set(bki.train.texts)
    assert (Path(bki.checkpoint) / "frs.json").is_file()
    record = json.loads((Path(bki.checkpoint) / "bki.json").read_text())
    assert record["keywords"] == bki.keywords and record["removed"] == bki.removed
    d = bki.describe()
    assert d["name"] == "bki" and d["keywords"] == bki.keywords and d["kept_texts"] == len(bki.train)


def test_bki_predictions_are_uncertified_single_queries_and_the_retrain_is_cached(bki_setup, data_dir):
    ctx, bki = bki_setup
    texts = load_dataset("sst2", "test", data_dir).subset(6, seed=2).texts
    preds = bki.predict(texts)
    assert len(preds) == 6 and bki.predict([]) == []
    direct = bki.model.predict_proba(texts).argmax(axis=1)
    for p, y, x in zip(preds, direct, texts):
        assert p.vote_label == int(y) and p.queries == 1 and p.length_tokens == len(tokenize(x))
        assert p.radius is None and p.certified_label is None and p.spans == []
    weights = next(Path(bki.checkpoint).glob("*.safetensors"))
    stamp = weights.stat().st_mtime_ns
    again = build_defense("bki", ctx, top_p=3, n_keywords=2, batch_size=32)
    assert again.checkpoint == bki.checkpoint and weights.stat().st_mtime_ns == stamp
    assert [p.vote_label for p in again.predict(texts)] == [p.vote_label for p in preds]
