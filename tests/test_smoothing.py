"""Tests of frs_ray.smoothing (Sec. 4.2, Eq. 4-5) on tiny randomly initialised transformers models."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
)

from frs_ray.errors import ConfigError
from frs_ray.smoothing import clip_rho, finetune_noise_step, perturbed, select_top_h
from frs_ray.smoothing.bmps import apply_clip_, reference_norms

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32, num_labels=2
    )
    return BertForSequenceClassification(cfg).eval()


def tiny_llama(seed: int = 0) -> LlamaForSequenceClassification:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=100,
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=32,
        num_labels=2,
        pad_token_id=0,
    )
    return LlamaForSequenceClassification(cfg).eval()


@pytest.fixture(scope="module")
def bert_template() -> BertForSequenceClassification:
    return tiny_bert(0)


@pytest.fixture
def bert(bert_template) -> BertForSequenceClassification:
    return copy.deepcopy(bert_template)


INPUT_IDS = torch.tensor([[5, 17, 42, 8, 99, 3], [7, 7, 1, 64, 23, 11]])


def params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# --------------------------------------------------------------------------------------------------
# select_top_h
# --------------------------------------------------------------------------------------------------


def test_select_top_h_bert(bert):
    sel = select_top_h(bert, 2)
    all_names = [n for n, _ in bert.named_parameters()]
    expected = [
        n for n in all_names if n.startswith(("bert.encoder.layer.2.", "bert.encoder.layer.3.", "bert.pooler.", "classifier."))
    ]
    assert list(sel.names) == expected
    assert any(n.startswith("bert.pooler.") for n in sel.names)
    assert {"classifier.weight", "classifier.bias"} <= set(sel.names)
    assert not any("embeddings" in n for n in sel.names)
    assert not any(n.startswith(("bert.encoder.layer.0.", "bert.encoder.layer.1.")) for n in sel.names)
    assert (sel.top_h, sel.depth, sel.stack_name) == (2, 4, "bert.encoder.layer")
    assert sel.numel(bert) == sum(p.numel() for n, p in bert.named_parameters() if n in expected)
    assert all(t is dict(bert.named_parameters())[n] for n, t in zip(sel.names, sel.tensors(bert)))


def test_select_top_h_llama():
    model = tiny_llama()
    sel = select_top_h(model, 2)
    all_names = [n for n, _ in model.named_parameters()]
    expected = [n for n in all_names if n.startswith(("model.layers.2.", "model.layers.3."))] + [
        "model.norm.weight",
        "score.weight",
    ]
    assert list(sel.names) == expected
    assert "model.embed_tokens.weight" not in sel.names
    assert (sel.top_h, sel.depth, sel.stack_name) == (2, 4, "model.layers")


def test_select_top_h_clamps_to_depth(bert):
    sel = select_top_h(bert, 10)
    assert (sel.top_h, sel.depth) == (4, 4)
    all_names = [n for n, _ in bert.named_parameters()]
    assert list(sel.names) == [n for n in all_names if not n.startswith("bert.embeddings.")]
    llama_sel = select_top_h(tiny_llama(), 10)
    assert llama_sel.top_h == 4
    assert [n for n, _ in tiny_llama().named_parameters() if n not in llama_sel.names] == ["model.embed_tokens.weight"]


def test_select_top_h_one_and_invalid(bert):
    sel = select_top_h(bert, 1)
    assert sel.names[0].startswith("bert.encoder.layer.3.")
    assert not any(n.startswith("bert.encoder.layer.2.") for n in sel.names)
    for h in (0, -1):
        with pytest.raises(ConfigError):
            select_top_h(bert, h)
    with pytest.raises(ConfigError):
        select_top_h(torch.nn.Linear(3, 2), 2)  # no block stack


# --------------------------------------------------------------------------------------------------
# clip_rho
# --------------------------------------------------------------------------------------------------


def test_clip_rho_identity_within_bound():
    t = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    ref = float(t.norm())
    assert torch.equal(clip_rho(t, ref, 1.5), t)
    assert torch.equal(clip_rho(t * 1.5, ref, 1.5), t * 1.5)  # exactly on the bound
    assert torch.equal(clip_rho(t * 0.1, ref, 1.0), t * 0.1)


def test_clip_rho_scales_to_bound_and_is_idempotent():
    t = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    ref = float(t.norm())
    big = t * 4.0
    c = clip_rho(big, ref, 1.5)
    assert float(c.norm()) == pytest.approx(1.5 * ref, rel=1e-6)
    torch.testing.assert_close(c, t * 1.5, rtol=1e-6, atol=1e-7)  # same direction
    torch.testing.assert_close(clip_rho(c, ref, 1.5), c, rtol=1e-6, atol=0)
    c2 = clip_rho(big, ref, 0.5)
    assert float(c2.norm()) == pytest.approx(0.5 * ref, rel=1e-6)


def test_clip_rho_zero_reference_and_bad_rho():
    t = torch.randn(4, generator=torch.Generator().manual_seed(2)) * 100
    assert torch.equal(clip_rho(t, 0.0, 1.5), t)
    z = torch.zeros(4)
    assert torch.equal(clip_rho(z, 1.0, 1.5), z)
    for rho in (0.0, -1.0):
        with pytest.raises(ConfigError):
            clip_rho(t, 1.0, rho)


# --------------------------------------------------------------------------------------------------
# apply_clip_ (the centre of Eq. 5; voters and their noise: tests/test_voter_pool.py)
# --------------------------------------------------------------------------------------------------


def test_apply_clip_makes_the_centre(bert):
    sel = select_top_h(bert, 2)
    norms = reference_norms(bert, sel)
    with torch.no_grad():  # fine-tuning moved the head and one block weight outside rho x pre-trained norm
        dict(bert.named_parameters())["classifier.weight"].mul_(3.0)
        dict(bert.named_parameters())["bert.encoder.layer.3.output.dense.weight"].mul_(2.0)
    before = params(bert)
    apply_clip_(bert, sel, norms, 1.5)
    now = params(bert)
    for n in sel.names:
        torch.testing.assert_close(now[n], clip_rho(before[n], norms[n], 1.5), rtol=1e-6, atol=0)
    assert float(now["classifier.weight"].norm()) == pytest.approx(1.5 * norms["classifier.weight"], rel=1e-5)
    assert torch.equal(now["bert.encoder.layer.2.output.dense.weight"], before["bert.encoder.layer.2.output.dense.weight"])
    others = [n for n in before if n not in sel.names]
    assert others and all(torch.equal(now[n], before[n]) for n in others)


# --------------------------------------------------------------------------------------------------
# perturbed (fine-tuning phase, default variant)
# --------------------------------------------------------------------------------------------------


def test_perturbed_restores_weights_and_gradient_is_at_noisy_point(bert):
    sel = select_top_h(bert, 2)
    before = params(bert)
    gen = torch.Generator().manual_seed(0)
    sigma = 0.05
    with perturbed(bert, sel, sigma, gen):
        p = dict(bert.named_parameters())
        noisy = {n: p[n].detach().clone() for n in sel.names}
        for n in sel.names:
            assert not torch.equal(noisy[n], before[n])
        for n in before:
            if n not in sel.names:
                assert torch.equal(p[n].detach(), before[n])
        deltas = torch.cat([(noisy[n] - before[n]).flatten() for n in sel.names])
        assert float(deltas.std()) == pytest.approx(sigma, rel=0.1)
        loss = sum((p[n] ** 2).sum() for n in sel.names)
        loss.backward()
    p = dict(bert.named_parameters())
    assert all(torch.equal(p[n].detach(), before[n]) for n in before)
    for n in sel.names:  # d/dtheta sum(theta^2) = 2 theta, evaluated at theta + eps
        torch.testing.assert_close(p[n].grad, 2 * noisy[n], rtol=1e-6, atol=1e-7)
        assert not torch.allclose(p[n].grad, 2 * before[n])


def test_perturbed_model_gradient_matches_model_at_noisy_weights(bert):
    sel = select_top_h(bert, 2)
    before = params(bert)
    labels = torch.tensor([0, 1])
    with perturbed(bert, sel, 0.05, torch.Generator().manual_seed(3)):
        noisy_state = copy.deepcopy(bert.state_dict())
        loss = torch.nn.functional.cross_entropy(bert(input_ids=INPUT_IDS).logits, labels)
        loss.backward()
    grads = {n: p.grad.clone() for n, p in bert.named_parameters() if p.grad is not None}
    assert all(torch.equal(p.detach(), before[n]) for n, p in bert.named_parameters())

    at_noisy = copy.deepcopy(bert)
    at_noisy.zero_grad(set_to_none=True)
    at_noisy.load_state_dict(noisy_state)
    torch.nn.functional.cross_entropy(at_noisy(input_ids=INPUT_IDS).logits, labels).backward()
    at_clean = copy.deepcopy(bert)
    at_clean.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(at_clean(input_ids=INPUT_IDS).logits, labels).backward()
    pn, pc = dict(at_noisy.named_parameters()), dict(at_clean.named_parameters())
    for n, g in grads.items():
        torch.testing.assert_close(g, pn[n].grad, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(grads["classifier.weight"], pc["classifier.weight"].grad)


def test_perturbed_fresh_noise_each_call_and_restores_on_exception(bert):
    sel = select_top_h(bert, 1)
    gen = torch.Generator().manual_seed(5)
    name = sel.names[0]
    seen = []
    for _ in range(2):
        with perturbed(bert, sel, 0.1, gen):
            seen.append(dict(bert.named_parameters())[name].detach().clone())
    assert not torch.equal(seen[0], seen[1])
    before = params(bert)
    with pytest.raises(ValueError):
        with perturbed(bert, sel, 0.1, gen):
            raise ValueError("x")
    assert all(torch.equal(p.detach(), before[n]) for n, p in bert.named_parameters())


# --------------------------------------------------------------------------------------------------
# finetune_noise_step (literal Eq. 4)
# --------------------------------------------------------------------------------------------------


def test_finetune_noise_accumulates_like_sqrt_n(bert):
    sel = select_top_h(bert, 2)
    before = params(bert)
    gen = torch.Generator().manual_seed(0)
    sigma = 0.01
    steps = 0
    for n in (1, 4, 16):
        while steps < n:
            # zero learning signal: the optimizer step leaves theta unchanged; no clipping (no reference norms)
            finetune_noise_step(bert, sel, {}, 1.5, sigma, gen)
            steps += 1
        p = dict(bert.named_parameters())
        dev = torch.cat([(p[k].detach() - before[k]).flatten() for k in sel.names])
        assert dev.numel() > 4000
        assert float(dev.std()) == pytest.approx(sigma * n**0.5, rel=0.05), n
        assert abs(float(dev.mean())) < 5 * sigma * n**0.5 / dev.numel() ** 0.5
        assert all(torch.equal(p[k].detach(), before[k]) for k in before if k not in sel.names)


def test_finetune_noise_step_clips_before_adding_noise(bert):
    sel = select_top_h(bert, 2)
    norms = reference_norms(bert, sel)
    before = params(bert)
    # sigma = 0: the step is Clip_rho alone; rho = 0.5 halves every tensor with a positive reference norm
    finetune_noise_step(bert, sel, norms, 0.5, 0.0, torch.Generator().manual_seed(0))
    p = dict(bert.named_parameters())
    for n in sel.names:
        if norms[n] > 0:
            assert float(p[n].detach().norm()) == pytest.approx(0.5 * norms[n], rel=1e-5)
        else:
            assert torch.equal(p[n].detach(), before[n])
    # rho large and real reference norms: the step is theta + eps
    bert2 = copy.deepcopy(bert)
    sel2 = select_top_h(bert2, 2)
    start = params(bert2)
    finetune_noise_step(bert2, sel2, reference_norms(bert2, sel2), 100.0, 0.02, torch.Generator().manual_seed(1))
    dev = torch.cat([(dict(bert2.named_parameters())[n].detach() - start[n]).flatten() for n in sel2.names])
    assert float(dev.std()) == pytest.approx(0.02, rel=0.05)
