"""RAP (Yang et al., EMNLP 2021) on the real session MiniLM checkpoint, tiny sizes, no mocks."""

from __future__ import annotations

import hashlib
import math
import time

import numpy as np
import pytest
import torch
from conftest import sst2_defense_context

from frs_ray.backends.hf import HFClassifier
from frs_ray.certify.certificate import ABSTAIN
from frs_ray.data import load_dataset
from frs_ray.defenses.rap import RAP, rap_loss, rap_threshold
from frs_ray.defenses.registry import build_defense, known_defenses
from frs_ray.errors import ConfigError

# lr 1.0: the session checkpoint is barely trained (p ~ 0.5), so its gradients are small; 16 + 16 texts, 2 epochs
TINY = {"n_train": 16, "n_calibration": 16, "epochs": 2, "batch_size": 8, "lr": 1.0, "frr": 0.25}


def _ctx(work_dir, checkpoint, data_dir, n_train=120):
    return sst2_defense_context(work_dir, checkpoint, data_dir, n_train, finetune={"max_length": 64})


def _file_hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _test_texts(data_dir, n=40):
    return load_dataset("sst2", "test", data_dir).subset(n, seed=1).texts


@pytest.fixture(scope="module")
def built(tmp_path_factory, minilm_checkpoint, data_dir):
    before = _file_hashes(minilm_checkpoint)
    work = tmp_path_factory.mktemp("rap-work")
    ctx = _ctx(work, minilm_checkpoint, data_dir)
    return build_defense("rap", ctx, **TINY), ctx, before


# --------------------------------------------------------------------------- pure helpers


def test_threshold_is_the_empirical_frr_quantile():
    rng = np.random.default_rng(0)
    drops = rng.normal(0.2, 0.1, size=37)
    for frr in (0.01, 0.05, 0.2, 0.45):
        x = np.sort(drops)
        h = (len(x) - 1) * frr  # linear interpolation between order statistics (numpy's default quantile)
        lo = math.floor(h)
        expected = x[lo] + (h - lo) * (x[min(lo + 1, len(x) - 1)] - x[lo])
        thr = rap_threshold(list(drops), frr)
        assert thr == pytest.approx(expected, abs=1e-12)
        assert np.mean(drops < thr) <= frr + 1 / len(drops)  # at most about an frr share of clean texts rejected
    assert rap_threshold([0.3, float("nan"), 0.1], 0.0) == pytest.approx(0.1)  # non-finite drops ignored
    with pytest.raises(ValueError):
        rap_threshold([float("nan")], 0.05)


def test_loss_is_the_two_sided_hinge():
    d = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.5])
    per = [0.1, 0.0, 0.0, 0.0, 0.2]  # a - d below a; 0 inside [a, b]; d - b above b
    assert float(rap_loss(d, 0.1, 0.3)) == pytest.approx(np.mean(per))
    assert float(rap_loss(d, 0.1, 0.3, scale=2.0)) == pytest.approx((2 * 0.1 + 0.2) / 5)
    assert float(rap_loss(torch.tensor([0.15, 0.25]), 0.1, 0.3)) == 0.0


# --------------------------------------------------------------------------- configuration errors


def test_bad_params_raise_config_error_naming_the_field(tmp_path, minilm_checkpoint, data_dir):
    ctx = _ctx(tmp_path, minilm_checkpoint, data_dir, n_train=40)
    cases = [
        ({"frr": 0.5}, r"\bfrr\b"),
        ({"frr": 0.0}, r"\bfrr\b"),
        ({"a": 0.3, "b": 0.1}, r"a \(0\.3\).*b \(0\.1\)"),
        ({"a": 0.2, "b": 0.2}, r"\ba\b.*\bb\b"),
        ({"rap_wrd": "qq"}, r"rap_wrd: unknown field"),
        ({"rap_word": "two words"}, r"\brap_word\b"),
        ({"rap_word": "cf."}, r"\brap_word\b"),
        ({"epochs": 0}, r"\bepochs\b"),
        ({"lr": 0}, r"\blr\b"),
        ({"n_train": 0}, r"\bn_train\b"),
        ({"protect_label": -1}, r"\bprotect_label\b"),
    ]
    for params, pattern in cases:
        with pytest.raises(ConfigError, match=pattern):
            build_defense("rap", ctx, **params)
    with pytest.raises(ConfigError, match=r"protect_label 2 is not a label.*0\.\.1"):
        build_defense("rap", ctx, protect_label=2)  # the checkpoint has labels 0 and 1
    assert not (tmp_path / "rap").exists()  # nothing trained or cached for a bad configuration


# --------------------------------------------------------------------------- the built defense


def test_registry_and_describe(built):
    rap, _, _ = built
    assert "rap" in known_defenses()
    assert isinstance(rap, RAP) and rap.name == "rap" and rap.certified is False
    assert rap.trained and rap.pieces == ["rq"] and rap.n_train_used == 16 and rap.n_calibration_used == 16
    info = rap.describe()
    assert info["name"] == "rap" and info["certified"] is False and info["rap_word"] == "rq"
    assert info["protect_label"] == 1 and info["a"] == 0.1 and info["b"] == 0.3 and info["seed"] == 0
    assert info["threshold"] == rap.threshold and math.isfinite(rap.threshold)
    assert len(rap.losses) == TINY["epochs"]
    assert rap.insert("a gripping story .") == "rq a gripping story ."


def test_only_the_rap_rows_differ_and_the_checkpoint_is_untouched(built, minilm_checkpoint):
    rap, _, before = built
    assert _file_hashes(minilm_checkpoint) == before
    plain = HFClassifier(minilm_checkpoint, max_length=64).model.state_dict()
    emb_name = next(n for n, p in rap.classifier.model.named_parameters() if p is rap.embedding)
    ids = rap.piece_ids
    assert torch.equal(rap.classifier.model.state_dict()[emb_name], plain[emb_name])  # plain rows outside the block
    with rap.rap_active():
        tuned = {k: v.detach().clone() for k, v in rap.classifier.model.state_dict().items()}
    for name, value in plain.items():
        if name != emb_name:
            assert torch.equal(tuned[name], value), name
    diff = (tuned[emb_name] != plain[emb_name]).any(dim=1).nonzero().flatten().tolist()
    assert diff == ids  # exactly the RAP word's row changed
    assert torch.equal(tuned[emb_name][ids], rap.rap_rows)
    assert torch.allclose(rap.rap_rows.norm(dim=1), plain[emb_name][ids].norm(dim=1), atol=1e-5)  # norm kept
    assert torch.equal(rap.classifier.model.state_dict()[emb_name], plain[emb_name])  # restored after the block


def test_split_is_disjoint_and_threshold_matches_the_calibration_drops(built):
    rap, ctx, _ = built
    train, calib = rap._split()
    assert len(train) == 16 and len(calib) == 16 and not set(train) & set(calib)
    label_of = dict(zip(ctx.train.texts, ctx.train.labels))
    assert all(label_of[x] == 1 for x in train + calib)
    probs, drops = rap.drops(calib)
    keep = probs.argmax(1) == 1
    expected = drops[keep] if keep.any() else drops
    assert np.allclose(sorted(expected), sorted(rap.calibration_drops), atol=1e-6)
    assert rap.threshold == pytest.approx(rap_threshold(rap.calibration_drops, TINY["frr"]))


def test_predictions_shape_and_semantics(built, data_dir):
    rap, _, _ = built
    texts = _test_texts(data_dir) + ["rq", ""]
    plain = rap.classifier.predict_proba(texts).argmax(1)
    _, drops = rap.drops(texts)
    old = rap.threshold
    for threshold in (old, float(np.median(drops[plain == 1]))):  # the median forces both branches
        rap.threshold = threshold
        started = time.perf_counter()
        try:
            preds = rap.predict(texts)
        finally:
            rap.threshold = old
        elapsed = time.perf_counter() - started
        assert len(preds) == len(texts)
        # seconds: each text's share of its chunk's measured time, so positive and summing to at most the call
        assert all(p.seconds > 0 for p in preds) and sum(p.seconds for p in preds) <= elapsed
        for p, y, d in zip(preds, plain, drops):
            assert p.vote_label in (0, 1, ABSTAIN) and p.queries == 2 and p.radius is None and p.certified_label is None
            assert p.spans == []
            if y != 1:
                assert p.vote_label == y  # never rejected: passed through with the plain model's label
            else:
                assert p.vote_label == (ABSTAIN if d < threshold else 1)
    assert any(p.vote_label == ABSTAIN for p in preds) and any(p.vote_label == 1 for p in preds)
    assert rap.predict([]) == []


def test_second_build_reuses_the_cache(built, data_dir):
    rap, ctx, _ = built
    meta = rap.cache_dir / "rap.json"
    stamp = meta.stat().st_mtime_ns
    again = build_defense("rap", ctx, **TINY)
    assert not again.trained and again.cache_dir == rap.cache_dir and meta.stat().st_mtime_ns == stamp
    assert torch.equal(again.rap_rows, rap.rap_rows) and again.threshold == rap.threshold
    texts = _test_texts(data_dir, 24)
    assert [p.vote_label for p in again.predict(texts)] == [p.vote_label for p in rap.predict(texts)]
    other = build_defense("rap", ctx, **{**TINY, "epochs": 1})  # another setting: its own cache entry
    assert other.trained and other.cache_dir != rap.cache_dir and meta.stat().st_mtime_ns == stamp


def test_damaged_cache_entry_is_an_error_not_a_silent_retrain(built, tmp_path, minilm_checkpoint, data_dir):
    import shutil

    from frs_ray.errors import CheckpointError

    rap, _, _ = built
    ctx = _ctx(tmp_path, minilm_checkpoint, data_dir)  # a work folder of its own, holding a copy of the entry
    entry = tmp_path / "rap" / rap.cache_dir.name
    shutil.copytree(rap.cache_dir, entry)
    assert not build_defense("rap", ctx, **TINY).trained  # the copied entry is read, not retrained
    (entry / "rows.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="damaged"):
        build_defense("rap", ctx, **TINY)
    assert (entry / "rap.json").is_file()  # nothing deleted: whoever damaged it decides


def test_multi_piece_word_tunes_all_its_rows(tmp_path, minilm_checkpoint, data_dir):
    ctx = _ctx(tmp_path, minilm_checkpoint, data_dir, n_train=60)
    rap = build_defense("rap", ctx, rap_word="zx", n_train=8, n_calibration=8, epochs=1, batch_size=8, lr=1.0)
    assert rap.pieces == ["z", "##x"]
    with rap.rap_active():
        tuned = rap.embedding.detach().clone()
    plain = HFClassifier(minilm_checkpoint, max_length=64).model.get_input_embeddings().weight.detach()
    assert (tuned != plain).any(dim=1).nonzero().flatten().tolist() == sorted(rap.piece_ids)
