"""The backend protocol, top-H selector, voters, fine-tuning and certification on a decoder (Llama) model.

A tiny random Llama with a BPE tokenizer trained here offline stands in for LLaMA-3-8B (same architecture
class, same code path through transformers); nothing is downloaded.
"""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory, data_dir, make_tiny_llama):
    from frs_ray.data import load_dataset

    texts = load_dataset("sst2", "dev").texts[:400]
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), texts, vocab_size=400, num_labels=2)


def test_backend_protocol_on_llama(tiny_llama_dir):
    from frs_ray.backends import ClassifierBackend, HFClassifier, TorchBackend

    b = HFClassifier(tiny_llama_dir, max_length=64)
    assert isinstance(b, ClassifierBackend) and isinstance(b, TorchBackend)
    probs = b.predict_proba(["a good film .", "bad", "an utterly , completely tedious and long-winded film ."])
    assert probs.shape == (3, 2) and np.allclose(probs.sum(1), 1.0)
    # padding must not change a text's prediction (decoder classifiers read the last non-pad token)
    alone = b.predict_proba(["bad"])
    assert np.allclose(alone[0], probs[1], atol=1e-5)
    assert b.filler_token == "<unk>"


def test_top_h_selector_on_llama(tiny_llama_dir):
    from frs_ray.backends import HFClassifier
    from frs_ray.smoothing import select_top_h

    b = HFClassifier(tiny_llama_dir)
    sel = select_top_h(b.model, 2)
    assert sel.stack_name == "model.layers" and sel.depth == 3 and sel.top_h == 2
    assert any(n.startswith("model.layers.1.") for n in sel.names) and any(n.startswith("model.layers.2.") for n in sel.names)
    assert not any(n.startswith("model.layers.0.") for n in sel.names)
    assert "model.norm.weight" in sel.names and "score.weight" in sel.names
    assert not any("embed_tokens" in n for n in sel.names)


def test_finetune_and_certify_a_decoder(tiny_llama_dir, tmp_path):
    from frs_ray.certify.smooth import FRSClassifier
    from frs_ray.config import CertifyConfig, FinetuneConfig
    from frs_ray.data import load_dataset
    from frs_ray.smoothing.finetune import finetune

    train = load_dataset("sst2", "train").subset(64, seed=1)
    cfg = FinetuneConfig(model=str(tiny_llama_dir), epochs=1, batch_size=16, max_length=64, smoothing={"top_h": 2, "sigma": 0.01})
    meta = finetune(cfg, train, tmp_path / "ck", progress=False)
    assert meta["smoothing"]["top_h"] == 2 and meta["training"]["steps"] == 4
    clf = FRSClassifier.from_checkpoint(tmp_path / "ck", CertifyConfig(k=5, fuzzing={"budget": 3}))
    certs = clf.certify(["a mn charming film .", "dull and lifeless ."])
    for c in certs:
        assert sum(c.votes) == 5 and sum(c.select_votes) == 5 and c.queries["fuzz"] == 3
        assert c.abstained == (c.p_lower <= 0.5)
    json.dumps([c.to_dict() for c in certs])


# --------------------------------------------------------------------------- filler token of Llama-3-style tokenizers
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>"]


def _llama3_style_tokenizer(specials=LLAMA3_SPECIALS):
    """A byte-level BPE tokenizer trained here, shaped like Llama 3's: no mask token, no unknown token (every byte
    is in the vocabulary), begin/end-of-text and reserved special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [
        "a gorgeous , witty , seductive movie .",
        "the film is strictly routine and dull .",
        "an utterly charming and often affecting journey .",
    ] * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(vocab_size=300, special_tokens=list(specials), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=specials[0], eos_token=specials[1])


def _tiny_llama_with(tokenizer, out):
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        num_labels=2,
        pad_token_id=tokenizer.eos_token_id,
    )
    LlamaForSequenceClassification(cfg).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def test_llama3_style_tokenizer_fills_with_a_reserved_special_token(tmp_path):
    from frs_ray.backends import HFClassifier
    from frs_ray.text import render, tokenize
    from frs_ray.text.edits import apply_operation

    b = HFClassifier(_tiny_llama_with(_llama3_style_tokenizer(), tmp_path / "llama3ish"), max_length=64)
    assert b.tokenizer.mask_token is None and b.tokenizer.unk_token is None  # as in Llama 3
    filler = b.filler_token
    assert filler == "<|reserved_special_token_0|>"
    filler_id = b.tokenizer.convert_tokens_to_ids(filler)
    words = [t.text for t in tokenize("the film is dull .")]
    for op in ("substitution", "insertion"):
        mutated = render(apply_operation(words, 2, op, filler))
        ids = b.tokenizer(mutated, add_special_tokens=False)["input_ids"]
        # the filler is read as one reserved id; the rest of the text tokenizes as without the mutation
        assert ids.count(filler_id) == 1, (mutated, ids)
        kept = render(words[:2] + words[3:]) if op == "substitution" else render(words)
        rest = [i for i in ids if i != filler_id]
        assert b.tokenizer.decode(rest).split() == kept.split()
    probs = b.predict_proba([render(apply_operation(words, 1, "substitution", filler))])
    assert probs.shape == (1, 2)


def test_tokenizer_without_any_filler_is_a_clear_error(tmp_path):
    from frs_ray.backends import HFClassifier
    from frs_ray.errors import CheckpointError

    tok = _llama3_style_tokenizer(["<|begin_of_text|>", "<|end_of_text|>"])  # no reserved token either
    b = HFClassifier(_tiny_llama_with(tok, tmp_path / "nofiller"), max_length=64)
    with pytest.raises(CheckpointError, match="no mask token, no unknown token and no <\\|reserved_special_token_N\\|>"):
        b.filler_token


def test_lora_finetune_with_bmps_saves_merged_weights(tiny_llama_dir, tmp_path):
    """LoRA (rank 8, alpha 16) on q/k/v/o + MLP, head trained fully, Eq. 4 noise on the top-H effective weights;
    the checkpoint is a plain folder of merged weights that loads and certifies."""
    import torch
    from safetensors.torch import load_file
    from transformers import LlamaForSequenceClassification

    from frs_ray.certify.smooth import FRSClassifier
    from frs_ray.config import CertifyConfig, FinetuneConfig
    from frs_ray.data import load_dataset
    from frs_ray.errors import ConfigError
    from frs_ray.smoothing.finetune import finetune

    train = load_dataset("sst2", "train").subset(32, seed=1)
    base = LlamaForSequenceClassification.from_pretrained(tiny_llama_dir).state_dict()
    metas, weights = {}, {}
    for sigma in (0.0, 0.05):
        out = tmp_path / f"lora-{sigma}"
        cfg = FinetuneConfig(
            model=str(tiny_llama_dir),
            epochs=1,
            batch_size=16,
            max_length=64,
            learning_rate=1e-2,
            smoothing={"top_h": 2, "sigma": sigma},
            lora={},
        )
        metas[sigma] = finetune(cfg, train, out, progress=False)
        weights[sigma] = load_file(str(next(out.glob("*.safetensors"))))
    w, meta = weights[0.05], metas[0.05]
    assert not [k for k in w if "lora" in k or "base_layer" in k]  # merged: a plain transformers folder
    assert meta["training"]["lora"]["rank"] == 8 and meta["training"]["lora"]["alpha"] == 16
    total = sum(t.numel() for t in base.values())
    assert 0 < meta["training"]["trainable_parameters"] < 0.5 * total
    # embeddings are neither adapted nor trained; adapted projections and the fully trained head moved
    assert torch.equal(w["model.embed_tokens.weight"], base["model.embed_tokens.weight"])
    assert not torch.equal(w["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"])
    assert not torch.equal(w["score.weight"], base["score.weight"])
    # the fine-tuning noise reached the forward passes: same seeds, different sigma, different weights
    assert not torch.equal(w["score.weight"], weights[0.0]["score.weight"])
    clf = FRSClassifier.from_checkpoint(tmp_path / "lora-0.05", CertifyConfig(k=3, fuzzing={"budget": 2}))
    assert [sum(c.votes) for c in clf.certify(["a mn charming film ."])] == [3]
    with pytest.raises(ConfigError, match="not linear layers"):
        finetune(
            FinetuneConfig(model=str(tiny_llama_dir), epochs=1, lora={"target_modules": ["query"]}),
            train,
            tmp_path / "bad",
            progress=False,
        )


def test_lora_head_learning_rate_trains_the_head_at_its_own_rate(tiny_llama_dir, tmp_path):
    """``lora.head_learning_rate``: the head (classification layer and final norm) gets its own AdamW group; unset,
    one group at the fine-tune's rate (the weights equal a run without the field); set, the head moves further from
    its initial weights while the adapted layers get the same updates' rate as before."""
    import torch
    from safetensors.torch import load_file
    from transformers import LlamaForSequenceClassification

    from frs_ray.config import FinetuneConfig
    from frs_ray.data import load_dataset
    from frs_ray.smoothing.finetune import finetune

    train = load_dataset("sst2", "train").subset(32, seed=1)
    base = LlamaForSequenceClassification.from_pretrained(tiny_llama_dir).state_dict()
    w = {}
    for name, lora in (("default", {}), ("same", {"head_learning_rate": 1e-4}), ("fast", {"head_learning_rate": 1e-2})):
        cfg = FinetuneConfig(
            model=str(tiny_llama_dir),
            epochs=1,
            batch_size=16,
            max_length=64,
            learning_rate=1e-4,
            smoothing={"top_h": 2, "sigma": 0.0},
            lora=lora,
        )
        out = tmp_path / name
        finetune(cfg, train, out, progress=False)
        w[name] = load_file(str(next(out.glob("*.safetensors"))))
    assert all(torch.equal(w["default"][k], w["same"][k]) for k in w["default"])  # two groups at one rate == one group
    moved = {n: (w[n]["score.weight"] - base["score.weight"]).abs().sum().item() for n in ("default", "fast")}
    assert moved["fast"] > 5 * moved["default"], moved


def test_new_head_exact_keeps_the_new_head_out_of_the_noise(tiny_llama_dir, tmp_path):
    """``smoothing.new_head = "exact"``: the parameters the pre-trained folder lacks (the score head a fine-tune
    initializes) are left out of the smoothed set, so no voter changes them, while the final norm and the top-H
    blocks stay smoothed; a head that came with the folder is not new and stays smoothed."""
    import torch
    from transformers import LlamaForSequenceClassification

    from frs_ray.backends import HFClassifier
    from frs_ray.certify.smooth import checkpoint_voter_spec
    from frs_ray.config import FinetuneConfig
    from frs_ray.data import load_dataset
    from frs_ray.smoothing.finetune import finetune
    from frs_ray.smoothing.pool import LoopVoterPool

    pretrained = tmp_path / "pretrained"  # a decoder without a classification head, as a downloaded LLM comes
    LlamaForSequenceClassification.from_pretrained(tiny_llama_dir).model.save_pretrained(pretrained)
    HFClassifier(tiny_llama_dir).tokenizer.save_pretrained(pretrained)
    assert HFClassifier(pretrained, num_labels=2).new_parameters == ("score.weight",)
    assert HFClassifier(tiny_llama_dir).new_parameters == ()

    train = load_dataset("sst2", "train").subset(32, seed=1)
    metas = {}
    for new_head in ("smoothed", "exact"):
        cfg = FinetuneConfig(
            model=str(pretrained),
            epochs=1,
            batch_size=16,
            max_length=64,
            smoothing={"top_h": 2, "sigma": 0.05, "new_head": new_head},
            lora={"head_learning_rate": 1e-2},
        )
        metas[new_head] = finetune(cfg, train, tmp_path / new_head, progress=False)
    smoothed, exact = (metas[n]["smoothing"] for n in ("smoothed", "exact"))
    assert "score.weight" in smoothed["names"] and smoothed["exact"] == []
    assert exact["names"] == [n for n in smoothed["names"] if n != "score.weight"] and exact["exact"] == ["score.weight"]
    assert "score.weight" not in exact["reference_norms"]

    backend = HFClassifier(tmp_path / "exact", max_length=64)
    centre = {n: p.detach().clone() for n, p in backend.model.named_parameters()}
    pool = LoopVoterPool(backend, checkpoint_voter_spec(metas["exact"], k=3, seed=0))
    for k in range(3):
        with pool.voter(k) as voter:
            now = dict(voter.named_parameters())
            assert torch.equal(now["score.weight"], centre["score.weight"])
            assert not torch.equal(now["model.norm.weight"], centre["model.norm.weight"])
            assert not torch.equal(now["model.layers.2.mlp.down_proj.weight"], centre["model.layers.2.mlp.down_proj.weight"])


def test_new_parameters_of_the_packaged_encoder_are_its_classifier():
    from frs_ray.backends import HFClassifier

    assert HFClassifier("minilm", num_labels=2).new_parameters == ("classifier.bias", "classifier.weight")
