"""Tests of frs_ray.smoothing (Sec. 4.2, Eq. 4-5) on tiny randomly initialised transformers models."""

from __future__ import annotations

import copy
import hashlib

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
)

from frs_ray.errors import ConfigError
from frs_ray.smoothing import (
    VoterEnsemble,
    clip_rho,
    finetune_noise_step,
    perturbed,
    select_top_h,
    voter_noise,
    voter_seed,
)
from frs_ray.smoothing.bmps import reference_norms

SHAPES = [torch.Size([3, 4]), torch.Size([5]), torch.Size([2, 3, 2])]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The models are tiny: intra-op threads only contend with other work on a small machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()



def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32, num_labels=2)
    return BertForSequenceClassification(cfg).eval()


def tiny_llama(seed: int = 0) -> LlamaForSequenceClassification:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=2,
        intermediate_size=32, num_labels=2, pad_token_id=0,
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
        n for n in all_names
        if n.startswith(("bert.encoder.layer.2.", "bert.encoder.layer.3.", "bert.pooler.", "classifier."))
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
    expected = [n for n in all_names if n.startswith(("model.layers.2.", "model.layers.3."))] + ["model.norm.weight", "score.weight"]
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
# voter_noise
# --------------------------------------------------------------------------------------------------


def test_voter_noise_reproducible_and_distinct():
    a = voter_noise(SHAPES, 1234, 7, 0.01)
    b = voter_noise(SHAPES, 1234, 7, 0.01)
    assert [t.shape for t in a] == SHAPES
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    for other in (voter_noise(SHAPES, 1234, 8, 0.01), voter_noise(SHAPES, 1235, 7, 0.01)):
        assert all(not torch.equal(x, y) for x, y in zip(a, other))
    assert voter_seed(1234, 7) == voter_seed(1234, 7)
    assert len({voter_seed(s, k) for s in (0, 1, 2**40) for k in range(20)}) == 60
    assert all(0 <= voter_seed(s, k) < 2**63 for s in (0, 2**40) for k in range(5))
    # sigma only scales the same draw
    torch.testing.assert_close(voter_noise(SHAPES, 1234, 7, 0.03)[0], a[0] * 3)
    assert all(torch.count_nonzero(t) == 0 for t in voter_noise(SHAPES, 1234, 7, 0.0))


# Computed once in a separate Python process (torch 2.13.0 as pinned in constraints.txt, CPU generator).
# Any later process must rebuild voter k bit-identically from (seed, k): voters are never stored.
EXPECTED_VOTER_SEED = {(1234, 7): 1492195953752704891, (0, 0): 321820618065231406}
EXPECTED_NOISE_SHA256 = "c166e435f623328c70c66dfe81e6d314790c30e042e1bbf65d4afaea352207d6"
EXPECTED_NOISE_SUMS = [0.014481763355433941, -0.01689306809566915, 0.07376412479788996]


def test_voter_noise_identical_across_processes():
    for (seed, k), value in EXPECTED_VOTER_SEED.items():
        assert voter_seed(seed, k) == value
    eps = voter_noise(SHAPES, 1234, 7, 0.01)
    assert [float(t.double().sum()) for t in eps] == pytest.approx(EXPECTED_NOISE_SUMS, rel=1e-12, abs=1e-15)
    assert _digest(eps) == EXPECTED_NOISE_SHA256


def test_voter_noise_std_is_sigma():
    (eps,) = voter_noise([torch.Size([200_000])], 3, 0, 0.01)
    assert eps.dtype == torch.float32
    assert float(eps.std()) == pytest.approx(0.01, rel=0.02)
    assert abs(float(eps.mean())) < 0.01 * 5 / 200_000**0.5


# --------------------------------------------------------------------------------------------------
# VoterEnsemble
# --------------------------------------------------------------------------------------------------


def test_voter_ensemble_voter_is_centre_plus_noise(bert):
    sel = select_top_h(bert, 2)
    norms = reference_norms(bert, sel)
    with torch.no_grad():  # fine-tuning moved the head and one block weight outside rho x pre-trained norm
        dict(bert.named_parameters())["classifier.weight"].mul_(3.0)
        dict(bert.named_parameters())["bert.encoder.layer.3.output.dense.weight"].mul_(2.0)
    before = params(bert)
    ens = VoterEnsemble(bert, sel, k=3, sigma=0.05, seed=11, norms=norms, rho=1.5)

    centre = {}
    for n in sel.names:
        expected = clip_rho(before[n], norms[n], 1.5)
        now = dict(bert.named_parameters())[n].detach()
        torch.testing.assert_close(now, expected, rtol=1e-6, atol=0)
        centre[n] = now.clone()
    assert float(centre["classifier.weight"].norm()) == pytest.approx(1.5 * norms["classifier.weight"], rel=1e-5)
    assert torch.equal(centre["bert.encoder.layer.2.output.dense.weight"], before["bert.encoder.layer.2.output.dense.weight"])
    others = [n for n in before if n not in sel.names]
    assert others and all(torch.equal(dict(bert.named_parameters())[n], before[n]) for n in others)

    for k in range(3):
        eps = voter_noise([centre[n].shape for n in sel.names], 11, k, 0.05)
        with ens.voter(k) as m:
            assert m is bert
            p = dict(bert.named_parameters())
            for n, e in zip(sel.names, eps):
                assert torch.equal(p[n].detach(), centre[n] + e)
            for n in others:
                assert torch.equal(p[n].detach(), before[n])
        p = dict(bert.named_parameters())
        assert all(torch.equal(p[n].detach(), centre[n]) for n in sel.names)
        assert all(torch.equal(p[n].detach(), before[n]) for n in others)


def test_voter_ensemble_restores_centre_on_exception(bert):
    sel = select_top_h(bert, 2)
    ens = VoterEnsemble(bert, sel, k=2, sigma=0.1, seed=0)
    before = params(bert)  # no norms: the centre is the model as given
    with pytest.raises(RuntimeError):
        with ens.voter(1):
            raise RuntimeError("boom")
    assert all(torch.equal(p.detach(), before[n]) for n, p in bert.named_parameters())


def test_two_ensembles_same_seed_same_outputs(bert_template):
    outs = []
    for cache in (False, False, True):
        model = copy.deepcopy(bert_template)
        sel = select_top_h(model, 2)
        ens = VoterEnsemble(model, sel, k=4, sigma=0.05, seed=99, norms=reference_norms(model, sel), cache_noise=cache)
        with torch.no_grad():
            centre = model(input_ids=INPUT_IDS).logits
            per_voter = []
            for k in range(4):
                with ens.voter(k):
                    per_voter.append(model(input_ids=INPUT_IDS).logits)
            if cache:  # second use comes from the cache and is the same voter
                with ens.voter(2):
                    torch.testing.assert_close(model(input_ids=INPUT_IDS).logits, per_voter[2], rtol=0, atol=0)
                assert ens.noise(2) is ens.noise(2)
        outs.append(per_voter)
        assert not torch.equal(per_voter[0], centre)
    for other in outs[1:]:
        assert all(torch.equal(x, y) for x, y in zip(outs[0], other))
    assert not torch.equal(outs[0][0], outs[0][1])
    # a different seed gives different voters
    model = copy.deepcopy(bert_template)
    sel = select_top_h(model, 2)
    ens = VoterEnsemble(model, sel, k=4, sigma=0.05, seed=100, norms=reference_norms(model, sel))
    with torch.no_grad(), ens.voter(0):
        assert not torch.equal(model(input_ids=INPUT_IDS).logits, outs[0][0])


def test_voter_ensemble_invalid(bert):
    sel = select_top_h(bert, 2)
    ens = VoterEnsemble(bert, sel, k=3, sigma=0.01, seed=0)
    for k in (-1, 3, 10):
        with pytest.raises(ConfigError):
            with ens.voter(k):
                pass
        with pytest.raises(ConfigError):
            ens.noise(k)
    for bad_k in (0, -2):
        with pytest.raises(ConfigError):
            VoterEnsemble(bert, sel, k=bad_k, sigma=0.01, seed=0)
    with pytest.raises(ConfigError):
        VoterEnsemble(bert, sel, k=3, sigma=-0.1, seed=0)


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
