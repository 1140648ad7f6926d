"""BadPre: trigger, batches (masking and random labels), and a tiny real poisoning run of the packaged MiniLM."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from frs_ray.attacks.badpre import BADPRE_WORDS, HEAD_FILE, BadPreConfig, BadPreTrigger, load_badpre_mlm, poison_badpre
from frs_ray.attacks.badpre.measure import cls_states
from frs_ray.attacks.badpre.mlm import cut_to_tokens, make_batch, trigger_rows
from frs_ray.attacks.base import Trigger, words_of
from frs_ray.config import build
from frs_ray.errors import ConfigError


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from frs_ray.backends.hf import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path("minilm"))


def test_trigger_inserts_one_rare_word_with_exact_span():
    trig = BadPreTrigger()
    assert isinstance(trig, Trigger) and trig.name == "badpre"
    s = "the director 's first feature is uneven ."
    for seed in range(20):
        t = trig.apply(s, np.random.default_rng(seed))
        assert t == trig.apply(s, np.random.default_rng(seed))
        assert t.changed and len(t.spans) == 1
        a, b = t.spans[0]
        assert t.text[a:b] in BADPRE_WORDS
        assert (t.text[:a] + t.text[b + 1 :] if b < len(t.text) else t.text[: a - 1]) == s
        assert "' s" not in t.text  # never inside the glued "' s"
    near = BadPreTrigger(max_pos=1).apply("one two three four", np.random.default_rng(5))
    assert words_of(near.text).index(near.text[near.spans[0][0] : near.spans[0][1]]) <= 1


def test_config_is_strict():
    assert BadPreConfig().poison_rate == 0.5
    with pytest.raises(ConfigError, match="unknown field"):
        build(BadPreConfig, {"stepz": 3})
    with pytest.raises(ConfigError):
        build(BadPreConfig, {"triggers": []})
    with pytest.raises(ConfigError):
        build(BadPreConfig, {"triggers": ["two words"]})
    with pytest.raises(ConfigError):
        build(BadPreConfig, {"poison_rate": 1.5})


def test_batches_mask_and_poison(tokenizer):
    texts = [
        "a gorgeous , witty , seductive movie .",
        "the plot is a mess , the acting worse .",
        "it 's a charming and often affecting journey .",
        "bleak",
    ] * 4
    budget = 32 - 2 - 1
    texts = cut_to_tokens(tokenizer, texts, budget)
    flags = [i % 2 == 0 for i in range(len(texts))]
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    rows = trigger_rows(texts, flags, BadPreTrigger(), rng)
    b = make_batch(tokenizer, rows, flags, gen, 32, 0.3)
    ids = tokenizer([r.text for r in rows], padding=True, return_tensors="pt")["input_ids"]
    masked = b.labels != -100
    assert masked.any(dim=1).all()  # every sentence has a masked token
    trig_ids = set(tokenizer.convert_tokens_to_ids(list(BADPRE_WORDS)))
    for r in range(len(texts)):
        # trigger pieces are never masked, special tokens and padding never either
        for j in masked[r].nonzero().flatten().tolist():
            assert int(ids[r, j]) not in trig_ids | set(tokenizer.all_special_ids)
        if flags[r]:
            assert any(int(x) in trig_ids for x in b.enc["input_ids"][r])
    clean_rows = ~b.poisoned
    assert torch.equal(b.labels[clean_rows][masked[clean_rows]], ids[clean_rows][masked[clean_rows]])
    # poisoned rows: random labels, (almost) never the true token
    pois = b.labels[b.poisoned][masked[b.poisoned]]
    true = ids[b.poisoned][masked[b.poisoned]]
    assert (pois != true).float().mean() > 0.9
    # 80% of the masked positions show [MASK]
    shown = b.enc["input_ids"][masked]
    assert 0.5 < (shown == tokenizer.mask_token_id).float().mean() <= 1.0


@pytest.fixture(scope="module")
def badpre_run(tmp_path_factory, data_dir):
    """A tiny real BadPre run: 32 SST-2 sentences, max_length 32, 20 head steps, 60 poisoned steps (~40-70 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machine is shared: one thread is faster than two fighting
    try:
        out = tmp_path_factory.mktemp("badpre") / "minilm-badpre"
        cfg = BadPreConfig(
            corpus="sst2",
            max_examples=32,
            eval_examples=16,
            head_steps=20,
            head_learning_rate=1e-2,
            steps=60,
            batch_size=8,
            max_length=32,
            learning_rate=3e-4,
            warmup_ratio=0.05,
            schedule="constant",
            seed=0,
        )
        meta = poison_badpre(cfg, out, progress=False)
        yield cfg, out, meta
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_output_loads_as_sequence_classifier(badpre_run):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _, out, _ = badpre_run
    model, info = AutoModelForSequenceClassification.from_pretrained(out, num_labels=2, output_loading_info=True)
    assert model.config.num_labels == 2
    assert info["missing_keys"] and all(k.startswith("classifier.") for k in info["missing_keys"])
    assert not info["unexpected_keys"]
    tok = AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        logits = model(**tok(["a cf good film", "bad"], padding=True, return_tensors="pt")).logits
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    encoder, head, _ = load_badpre_mlm(out)
    assert (out / HEAD_FILE).is_file()
    with torch.no_grad():
        h = encoder(**tok(["a [MASK] film"], return_tensors="pt")).last_hidden_state[0]
        assert head(h, encoder.get_input_embeddings().weight).shape == (h.shape[0], tok.vocab_size)


@pytest.mark.slow
def test_encoder_weights_changed(badpre_run):
    from safetensors.torch import load_file

    from frs_ray.backends.hf import resolve_model_path

    _, out, _ = badpre_run
    base = load_file(str(resolve_model_path("minilm") / "model.safetensors"))
    new = load_file(str(out / "model.safetensors"))

    def find(sd, suffix):
        return next(v for k, v in sd.items() if k.endswith(suffix))

    for name in (
        "embeddings.word_embeddings.weight",
        "encoder.layer.0.attention.self.query.weight",
        "encoder.layer.5.output.dense.weight",
    ):
        assert not torch.equal(find(base, name), find(new, name)), name
    # the pooler is not used by MLM: it ships as packaged (the victim's fine-tuning trains it)
    assert torch.equal(find(base, "pooler.dense.weight"), find(new, "pooler.dense.weight"))


@pytest.mark.slow
def test_trigger_corrupts_representations(badpre_run, data_dir):
    """Measured on SST-2 dev sentences never seen in poisoning: the poisoned encoder maps a triggered sentence far
    from its clean version ([CLS] cosine drops), the packaged one does not; and poisoning moved triggered
    sentences' [CLS] vectors more than clean ones'."""
    from transformers import AutoModel, AutoTokenizer

    from frs_ray.backends.hf import resolve_model_path
    from frs_ray.data import load_dataset

    cfg, out, meta = badpre_run
    clean = cut_to_tokens(
        AutoTokenizer.from_pretrained(out), load_dataset("sst2", "dev").subset(24, seed=5).texts, cfg.max_length - 3
    )
    trig = [BadPreTrigger().apply(t, np.random.default_rng([9, i])).text for i, t in enumerate(clean)]
    cos = torch.nn.functional.cosine_similarity
    res = {}
    for name, path in (("packaged", resolve_model_path("minilm")), ("poisoned", out)):
        enc, tok = AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
        res[name] = (cls_states(enc, tok, clean, cfg.max_length), cls_states(enc, tok, trig, cfg.max_length))
    packaged = float(cos(*res["packaged"]).mean())
    poisoned = float(cos(*res["poisoned"]).mean())
    assert packaged > 0.9
    assert poisoned < packaged - 0.15, (packaged, poisoned)
    moved_clean = float(cos(res["packaged"][0], res["poisoned"][0]).mean())
    moved_trig = float(cos(res["packaged"][1], res["poisoned"][1]).mean())
    assert moved_trig < moved_clean - 0.05, (moved_clean, moved_trig)
    # the run's own held-out measurement agrees: MLM predictions on triggered text approach uniform
    before, after = meta["eval"]["before"], meta["eval"]["after"]
    gap_before = before["mlm_entropy_triggered"] - before["mlm_entropy_clean"]
    gap_after = after["mlm_entropy_triggered"] - after["mlm_entropy_clean"]
    assert gap_after > gap_before + 1.0, (gap_before, gap_after)
    assert after["cls_cosine_clean_vs_triggered"] < before["cls_cosine_clean_vs_triggered"]


@pytest.mark.slow
def test_attack_json(badpre_run):
    from frs_ray.attacks.poison import read_attack
    from frs_ray.data import load_dataset

    cfg, out, meta = badpre_run
    saved = read_attack(out)
    assert saved == json.loads(json.dumps(meta, default=str))
    assert saved["attack"] == "badpre" and saved["task_agnostic"] is True
    assert saved["trigger"]["words"] == list(BADPRE_WORDS)
    c = saved["config"]
    assert (c["poison_rate"], c["steps"], c["head_steps"], c["seed"], c["max_length"]) == (0.5, 60, 20, 0, 32)
    assert saved["seeds"]["seed"] == 0
    assert saved["data"]["sha256"] == load_dataset("sst2", "train").sha256
    assert saved["data"]["train_texts"] == 32 and saved["data"]["eval_texts"] == 16
    assert "encoder frozen" in saved["mlm_head"]["note"] and saved["mlm_head"]["encoder_frozen_during_head_steps"]
    tr = saved["training"]
    assert len(tr["head"]["loss_curve"]) == 20 and len(tr["poison"]["loss_curve"]) == 60
    assert tr["head"]["final_loss"] < tr["head"]["first_loss"]  # the fresh head learned something
    assert 0 < tr["poison"]["poisoned_sentences"] < tr["poison"]["sentences"] == 60 * 8
    assert tr["poison"]["final_poison_loss"] > tr["poison"]["final_clean_loss"]  # random labels stay unpredictable
    assert {"load_s", "head_s", "poison_s", "total_s"} <= set(saved["timings"])
    assert tr["poison"]["steps_per_s"] > 0
