"""Randomized fine-tuning data (Eq. 3's D_F + eps, ``SmoothingConfig.data_noise``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from frs_ray.config import FinetuneConfig, MutationWeights, SmoothingConfig, build
from frs_ray.errors import ConfigError
from frs_ray.evaluation.zoo import _hashed, settings_hash
from frs_ray.smoothing.data_noise import randomize_training_text
from frs_ray.text import tokenize

TEXT = "a gorgeous , witty , seductive movie that is never boring and always surprising ."


def test_zero_rate_is_identity_and_bad_rate_rejected():
    rng = np.random.default_rng(0)
    assert randomize_training_text(TEXT, 0.0, rng, "[MASK]") == TEXT
    for bad in (-0.1, 1.0, 2.0):
        with pytest.raises(ValueError, match="data noise rate"):
            randomize_training_text(TEXT, bad, rng, "[MASK]")
    with pytest.raises(ConfigError, match="data_noise"):
        build(SmoothingConfig, {"data_noise": 1.5})
    with pytest.raises(ConfigError, match="needs finetune_mode"):
        build(SmoothingConfig, {"data_noise": 0.2, "finetune_mode": "none"})


def test_substitution_only_masks_about_rate_of_the_tokens():
    sub = MutationWeights(insertion=0, deletion=0, substitution=1, transposition=0)
    rng = np.random.default_rng(1)
    n = len(tokenize(TEXT))
    masked = [randomize_training_text(TEXT, 0.3, rng, "[MASK]", sub).split(" ").count("[MASK]") for _ in range(2000)]
    assert abs(np.mean(masked) / n - 0.3) < 0.02
    # same length, only masks: every other token is the original in place
    out = randomize_training_text(TEXT, 0.5, np.random.default_rng(2), "[MASK]", sub).split(" ")
    assert len(out) == n and all(o in ("[MASK]", w.text) for o, w in zip(out, tokenize(TEXT)))


def test_deletion_only_shortens_and_never_empties():
    dele = MutationWeights(insertion=0, deletion=1, substitution=0, transposition=0)
    rng = np.random.default_rng(3)
    outs = [randomize_training_text(TEXT, 0.5, rng, "[MASK]", dele) for _ in range(50)]
    assert all(len(o.split(" ")) <= len(tokenize(TEXT)) for o in outs) and any(o != TEXT for o in outs)
    assert "[MASK]" not in " ".join(outs)
    assert all(randomize_training_text("cf", 0.99, np.random.default_rng(s), "[MASK]", dele) == "cf" for s in range(20))


def test_reproducible_from_the_generator_seed():
    a = [randomize_training_text(TEXT, 0.25, np.random.default_rng(7), "[MASK]") for _ in range(3)]
    b = [randomize_training_text(TEXT, 0.25, np.random.default_rng(7), "[MASK]") for _ in range(3)]
    assert a == b
    assert len({randomize_training_text(TEXT, 0.25, np.random.default_rng(s), "[MASK]") for s in range(20)}) > 5


def test_zoo_names_of_older_checkpoints_unchanged_by_the_new_field():
    base = {"model": "m", "data": "sst2", "seed": 0, "epochs": 1}
    plain = build(FinetuneConfig, {**base, "smoothing": SmoothingConfig().model_dump()}).model_dump()
    noisy = build(FinetuneConfig, {**base, "smoothing": SmoothingConfig(data_noise=0.2).model_dump()}).model_dump()
    assert "data_noise" not in json.dumps(_hashed(plain))  # hashed exactly as before the field existed
    assert "data_noise" in json.dumps(_hashed(noisy))
    assert settings_hash(_hashed(plain)) != settings_hash(_hashed(noisy))


def test_finetune_with_data_noise_records_it_and_differs(tmp_path, data_dir):
    """A real (tiny) smoothed fine-tune: the noisy one trains on different texts, so its weights differ."""
    from safetensors.torch import load_file

    from frs_ray.data import load_dataset
    from frs_ray.smoothing.finetune import finetune, read_meta

    train = load_dataset("sst2", "train", data_dir).subset(32, seed=0)
    outs = {}
    for noise in (0.0, 0.3):
        cfg = build(
            FinetuneConfig,
            {
                "model": "minilm",
                "data": "sst2",
                "epochs": 1,
                "batch_size": 16,
                "seed": 0,
                "max_length": 64,
                "smoothing": {"sigma": 0.0, "data_noise": noise},
            },
        )
        outs[noise] = tmp_path / f"n{noise}"
        finetune(cfg, train, outs[noise], progress=False)
        assert read_meta(outs[noise])["config"]["smoothing"]["data_noise"] == noise
    a, b = (load_file(str(outs[n] / "model.safetensors")) for n in (0.0, 0.3))
    assert any(not (a[k] == b[k]).all() for k in a)


def test_cli_rejects_bad_data_noise_clearly(tmp_path, capsys):
    from frs_ray.cli import main

    rc = main(["finetune", "--data", "sst2", "--out", str(tmp_path / "x"), "--data-noise", "1.5", "--no-progress"])
    err = capsys.readouterr().err
    assert rc != 0 and "smoothing.data_noise" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_new_head_at_its_default_is_hashed_as_before_the_field_existed():
    from frs_ray.evaluation.zoo import _hashed, settings_hash

    base = {"model": "minilm", "data": "sst2", "seed": 0}
    plain = build(FinetuneConfig, {**base, "smoothing": SmoothingConfig().model_dump()}).model_dump()
    exact = build(FinetuneConfig, {**base, "smoothing": SmoothingConfig(new_head="exact").model_dump()}).model_dump()
    assert "new_head" not in json.dumps(_hashed(plain)) and "new_head" in json.dumps(_hashed(exact))
    assert settings_hash(_hashed(plain)) != settings_hash(_hashed(exact))
