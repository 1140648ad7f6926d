"""STRIP baseline on the real session MiniLM checkpoint, plus its pure helpers (perturbation, entropy, threshold)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import sst2_defense_context

from frs_ray.certify.certificate import ABSTAIN
from frs_ray.data import load_dataset
from frs_ray.defenses.base import DefenseContext
from frs_ray.defenses.registry import build_defense, known_defenses
from frs_ray.defenses.strip import (
    Strip,
    entropy_threshold,
    is_rejected,
    mean_entropy,
    perturb,
    replaced_count,
    text_rng,
)
from frs_ray.errors import ConfigError
from frs_ray.text.tokens import tokenize

SMALL = {"n_perturb": 6, "n_calibration": 24, "n_donors": 24, "frr": 0.25, "batch_size": 32}


def _ctx(tmp_path, checkpoint, data_dir, n_train=60):
    return sst2_defense_context(tmp_path, checkpoint, data_dir, n_train, finetune={"max_length": 64})


@pytest.fixture(scope="module")
def strip_setup(tmp_path_factory, data_dir, minilm_checkpoint):
    ctx = _ctx(tmp_path_factory.mktemp("strip"), minilm_checkpoint, data_dir)
    return ctx, build_defense("strip", ctx, **SMALL)


@pytest.fixture(scope="module")
def test_texts(data_dir):
    return load_dataset("sst2", "test", data_dir).subset(8, seed=4).texts


# --------------------------------------------------------------------------- pure helpers


def test_replaced_count():
    assert replaced_count(0, 0.3) == 0
    assert replaced_count(1, 0.3) == 1  # at least one word
    assert replaced_count(10, 0.3) == 3
    assert replaced_count(5, 0.3) == 2  # 1.5 rounds half up
    assert replaced_count(7, 1.0) == 7


def test_perturb_replaces_the_intended_number_of_words_and_is_seeded():
    words = [f"w{i}" for i in range(10)]
    donors = [["alpha", "beta", "gamma", "delta"], ["epsilon", "zeta", "eta", "theta", "iota"]]
    donor_words = {w for d in donors for w in d}
    copies = perturb(words, donors, 12, 0.3, np.random.default_rng(7))
    assert len(copies) == 12
    for c in copies:
        out = c.split(" ")
        assert len(out) == len(words)
        changed = [i for i, (a, b) in enumerate(zip(words, out)) if a != b]
        assert len(changed) == 3 and all(out[i] in donor_words for i in changed)
        used = {out[i] for i in changed}
        assert used <= set(donors[0]) or used <= set(donors[1])  # one donor per copy, distinct words
        assert len(used) == 3
    assert perturb(words, donors, 12, 0.3, np.random.default_rng(7)) == copies
    assert perturb(words, donors, 12, 0.3, np.random.default_rng(8)) != copies
    # a donor shorter than k is sampled with replacement; every position still gets replaced
    full = perturb(words, [["x"]], 2, 1.0, np.random.default_rng(0))
    assert full == [" ".join(["x"] * 10)] * 2
    assert perturb([], donors, 3, 0.5, np.random.default_rng(0)) == ["", "", ""]
    # per-text generators depend on (seed, text) only
    a = perturb(words, donors, 5, 0.3, text_rng(3, "some text"))
    assert a == perturb(words, donors, 5, 0.3, text_rng(3, "some text"))
    assert a != perturb(words, donors, 5, 0.3, text_rng(4, "some text"))


def test_entropy_threshold_and_rejection():
    assert mean_entropy(np.array([[1.0, 0.0], [0.0, 1.0]])) == 0.0
    assert math.isclose(mean_entropy(np.array([[0.5, 0.5]])), math.log(2))
    assert math.isclose(mean_entropy(np.array([[0.5, 0.5], [1.0, 0.0]])), math.log(2) / 2)
    ents = np.linspace(0.0, 1.0, 101)  # 0.00, 0.01, ..., 1.00
    t = entropy_threshold(ents, 0.05)
    assert math.isclose(t, 0.05) and t == float(np.quantile(ents, 0.05))
    assert sum(is_rejected(h, t) for h in ents) == 5  # 0.00 .. 0.04: exactly 5% of the clean texts
    assert is_rejected(0.049, t) and not is_rejected(t, t) and not is_rejected(0.9, t)


# --------------------------------------------------------------------------- configuration


def test_registered_and_bad_params(tmp_path, data_dir):
    assert "strip" in known_defenses()
    ctx = _ctx(tmp_path, "unused", data_dir, n_train=10)
    for params, field in [
        ({"frr": 0.9}, "frr"),
        ({"n_perturb": 0}, "n_perturb"),
        ({"n_perturbs": 5}, "n_perturbs"),
        ({"replace_fraction": 0.0}, "replace_fraction"),
        ({"frr": 0.0}, "frr"),
        ({"n_calibration": 1}, "n_calibration"),
    ]:
        with pytest.raises(ConfigError, match=field):
            build_defense("strip", ctx, **params)
    empty = DefenseContext(
        plain_checkpoint="unused",
        smoothed_checkpoint=None,
        base_model="minilm",
        train=load_dataset("sst2", "train", data_dir).subset(0),
        work_dir=tmp_path,
    )
    with pytest.raises(ConfigError, match="clean training texts"):
        build_defense("strip", empty)


# --------------------------------------------------------------------------- on the real model


def test_build_calibrate_and_describe(strip_setup):
    ctx, d = strip_setup
    assert isinstance(d, Strip) and not d.certified and d.seed == ctx.seed
    assert len(d.calibration_texts) == 24 and len(d.donor_texts) == 24
    assert not set(d.calibration_texts) & set(d.donor_texts)
    assert set(d.calibration_texts) | set(d.donor_texts) <= set(ctx.train.texts)
    assert d.threshold == float(np.quantile(d.calibration_entropies, SMALL["frr"]))
    info = d.describe()
    assert info["name"] == "strip" and info["certified"] is False and info["n_perturb"] == 6
    assert info["threshold"] == d.threshold == info["calibration"]["threshold"]
    assert math.isclose(info["calibration"]["entropy_quantiles"]["0.5"], float(np.median(d.calibration_entropies)))
    rejected = info["calibration"]["rejected_share"]
    assert abs(rejected - SMALL["frr"]) <= 1 / 24 + 1e-9  # ~frr of the clean calibration texts


def test_predict_shape_determinism_and_rejection_rule(strip_setup, test_texts):
    ctx, d = strip_setup
    assert d.predict([]) == []
    preds = d.predict(test_texts)
    assert len(preds) == len(test_texts)
    for x, p in zip(test_texts, preds):
        assert p.vote_label in (0, 1, ABSTAIN)
        assert p.radius is None and p.certified_label is None and p.spans == []
        assert p.queries == SMALL["n_perturb"] + 1 and p.seconds > 0
        assert p.length_tokens == len(tokenize(x))
    again = d.predict(test_texts)
    assert [p.vote_label for p in again] == [p.vote_label for p in preds]

    # the calibration texts themselves: the same entropies as at calibration, rejected exactly below the threshold
    labels, ents = d.scores(d.calibration_texts[:16])
    assert np.allclose(ents, d.calibration_entropies[:16], atol=1e-6)
    cal_preds = d.predict(d.calibration_texts[:16])
    for y, h, p in zip(labels, ents, cal_preds):
        assert p.vote_label == (ABSTAIN if h < d.threshold else y)
    n_rejected = sum(h < d.threshold for h in d.calibration_entropies)
    assert n_rejected >= 1 and abs(n_rejected / 24 - SMALL["frr"]) <= 1 / 24 + 1e-9

    # a fresh build from the same context and params gives the same threshold and outputs
    same = build_defense("strip", ctx, **SMALL)
    assert same.threshold == d.threshold and same.donor_texts == d.donor_texts
    assert [p.vote_label for p in same.predict(test_texts)] == [p.vote_label for p in preds]
