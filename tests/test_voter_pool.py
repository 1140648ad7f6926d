"""Voter pools (frs_ray.smoothing.pool): every implementation is the same K voters of Eq. 5.

Real models only: the packaged MiniLM (BERT family; all 6 blocks smoothed, or the top 2 with the bottom 4 shared)
and a tiny random Llama with a tokenizer trained here offline (decoder family, top 2 of 3 blocks).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from frs_ray.errors import ConfigError
from frs_ray.smoothing import (
    LoopVoterPool,
    StackedVoterPool,
    VoterPool,
    VoterSpec,
    make_voter_pool,
    parameter_noise,
    parameter_seed,
    select_top_h,
    vote_labels,
    voter_noise,
)

K = 6


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def texts(data_dir):
    from frs_ray.data import load_dataset

    return load_dataset("sst2", "dev", data_dir).texts[:12]


@pytest.fixture(scope="module")
def minilm_backend():
    from frs_ray.backends.hf import HFClassifier

    return HFClassifier("minilm", num_labels=2, max_length=64, batch_size=16)


@pytest.fixture(scope="module")
def llama_backend(tmp_path_factory, texts, make_tiny_llama):
    from frs_ray.backends.hf import HFClassifier

    out = make_tiny_llama(tmp_path_factory.mktemp("pool-llama"), texts * 20, vocab_size=300, num_labels=3)
    return HFClassifier(out, max_length=64, batch_size=8)


CASES = [  # (backend fixture, top H, sigma): sigma large enough that voters disagree with the centre
    ("minilm_backend", 6, 0.02),
    ("minilm_backend", 2, 0.02),
    ("llama_backend", 2, 0.2),
]


def _jobs(texts, k=K, seed=0):
    """Certify-shaped jobs: each text several times, each vote with a uniformly drawn voter."""
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(k)), t) for t in texts for _ in range(3)]


@pytest.mark.parametrize("backend_name,top_h,sigma", CASES)
def test_every_implementation_gives_the_same_votes(request, texts, backend_name, top_h, sigma):
    backend = request.getfixturevalue(backend_name)
    spec = VoterSpec(select_top_h(backend.model, top_h), K, sigma, seed=5)
    jobs = _jobs(texts)
    centre = backend.predict_proba(texts)
    pools = {
        "loop, regenerated": LoopVoterPool(backend, spec, cache_noise=False),
        "loop, cached": LoopVoterPool(backend, spec, cache_noise=True),
        "stacked, resident": StackedVoterPool(backend, spec, resident=True),
        "stacked, per batch of 2 voters": StackedVoterPool(backend, spec, resident=False, voters_per_build=2),
    }
    ref = pools["loop, regenerated"].vote_proba(jobs)
    assert ref.shape == (len(jobs), backend.num_labels) and np.allclose(ref.sum(1), 1.0)
    for name, pool in pools.items():
        assert isinstance(pool, VoterPool)
        got = pool.vote_proba(jobs)
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0, err_msg=name)
        assert vote_labels(pool, jobs) == [int(y) for y in ref.argmax(1)], name
    # the voters are not the centre, and voting leaves the centre model exactly as it was
    by_text = np.repeat(centre, 3, axis=0)
    assert np.abs(ref - by_text).max() > 1e-3
    np.testing.assert_array_equal(backend.predict_proba(texts), centre)


@pytest.mark.parametrize("backend_name,top_h,sigma", CASES[:1] + CASES[2:])
def test_a_pool_hosting_some_voters_has_the_same_voters(request, texts, backend_name, top_h, sigma):
    backend = request.getfixturevalue(backend_name)
    spec = VoterSpec(select_top_h(backend.model, top_h), K, sigma, seed=5)
    jobs = _jobs(texts)
    full = StackedVoterPool(backend, spec).vote_proba(jobs)
    for ids, impl in (([1, 4], "stacked"), ([0, 2, 3, 5], "loop")):
        pool = make_voter_pool(backend, spec, ids, implementation=impl)
        assert pool.voter_ids == tuple(ids)
        which = [j for j, (k, _) in enumerate(jobs) if k in ids]
        np.testing.assert_allclose(pool.vote_proba([jobs[j] for j in which]), full[which], atol=1e-5, rtol=0)
        with pytest.raises(ConfigError, match="not hosted"):
            pool.vote_proba([(next(k for k in range(K) if k not in ids), texts[0])])


def test_loop_voter_is_centre_plus_noise_and_restores_the_centre(minilm_backend):
    model = minilm_backend.model
    spec = VoterSpec(select_top_h(model, 2), 3, 0.05, seed=11)
    pool = LoopVoterPool(minilm_backend, spec, cache_noise=False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for k in range(3):
        with pool.voter(k) as m:
            assert m is model
            now = dict(model.named_parameters())
            for n in spec.selection.names:
                eps = parameter_noise(n, before[n].shape, 11, k, 0.05)
                assert torch.equal(now[n].detach(), before[n] + eps)
            assert all(torch.equal(now[n].detach(), before[n]) for n in before if n not in spec.selection.names)
        assert all(torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())
    with pytest.raises(RuntimeError, match="boom"):
        with pool.voter(1):
            raise RuntimeError("boom")
    assert all(torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())
    with pytest.raises(ConfigError, match="out of range"):
        pool.noise(3)


def test_noise_is_keyed_by_parameter_name_not_order():
    named = [("a.weight", (3, 4)), ("b.bias", (5,)), ("c.weight", (2, 3, 2))]
    fwd = dict(zip([n for n, _ in named], voter_noise(named, 1234, 7, 0.01)))
    rev = dict(zip([n for n, _ in reversed(named)], voter_noise(list(reversed(named)), 1234, 7, 0.01)))
    assert all(torch.equal(fwd[n], rev[n]) for n in fwd)
    # a tensor alone is the same draw as inside the full list; names, voters and seeds each change it
    assert torch.equal(parameter_noise("b.bias", (5,), 1234, 7, 0.01), fwd["b.bias"])
    assert not torch.equal(parameter_noise("b.bias2", (5,), 1234, 7, 0.01), fwd["b.bias"])
    assert not torch.equal(parameter_noise("b.bias", (5,), 1234, 8, 0.01), fwd["b.bias"])
    assert not torch.equal(parameter_noise("b.bias", (5,), 1235, 7, 0.01), fwd["b.bias"])
    assert len({parameter_seed(s, k, n) for s in (0, 1, 2**40) for k in range(10) for n in ("x", "y")}) == 60
    assert all(0 <= parameter_seed(s, k, "x") < 2**63 for s in (0, 2**40) for k in range(5))


# Computed once in a separate Python process (torch 2.13.0 CPU generator): voter k is rebuilt bit-identically
# from (seed, k, parameter name) in any later process; voters are never stored.
EXPECTED_PARAMETER_SEED = {
    (1234, 7, "bert.encoder.layer.5.output.dense.weight"): 8060369064702790689,
    (0, 0, "score.weight"): 2491546103556287189,
}
EXPECTED_NOISE_SUMS = {"a.weight": -0.00019666961452458054, "b.bias": -0.05116233820444904}


def test_noise_is_identical_across_processes():
    for (seed, k, name), value in EXPECTED_PARAMETER_SEED.items():
        assert parameter_seed(seed, k, name) == value
    for name, total in EXPECTED_NOISE_SUMS.items():
        eps = parameter_noise(name, (64,), 1234, 7, 0.01)
        assert float(eps.double().sum()) == pytest.approx(total, rel=1e-12, abs=1e-15)


def test_noise_std_is_sigma():
    eps = parameter_noise("w", (200_000,), 3, 0, 0.01)
    assert eps.dtype == torch.float32
    assert float(eps.std()) == pytest.approx(0.01, rel=0.02)
    torch.testing.assert_close(parameter_noise("w", (10,), 3, 0, 0.03), parameter_noise("w", (10,), 3, 0, 0.01) * 3)
    assert torch.count_nonzero(parameter_noise("w", (10,), 3, 0, 0.0)) == 0


def test_bad_pool_settings_are_clear_errors(minilm_backend):
    sel = select_top_h(minilm_backend.model, 1)
    with pytest.raises(ConfigError, match="K"):
        VoterSpec(sel, 0, 0.01, 0)
    with pytest.raises(ConfigError, match="sigma"):
        VoterSpec(sel, 3, -0.1, 0)
    spec = VoterSpec(sel, 3, 0.01, 0)
    with pytest.raises(ConfigError, match="voter ids"):
        make_voter_pool(minilm_backend, spec, [3])
    with pytest.raises(ConfigError, match="per_batch"):
        make_voter_pool(minilm_backend, spec, implementation="loop", noise="per_batch")
    with pytest.raises(ConfigError, match="regenerate"):
        make_voter_pool(minilm_backend, spec, implementation="stacked", noise="regenerate")
    pool = make_voter_pool(minilm_backend, spec)
    d = pool.describe()
    assert d["implementation"] == "stacked" and d["noise"] == "resident" and d["voters"] == 3
    assert d["resident_bytes"] == 3 * 4 * sum(p.numel() for n, p in minilm_backend.model.named_parameters() if n in sel.names)
    assert make_voter_pool(minilm_backend, spec, memory_fraction=1e-12).describe()["noise"] == "per_batch"
    assert vote_labels(pool, []) == []


CLEAR_TEXTS = [
    "a gorgeous , witty , seductive movie .",
    "the film is strictly routine and dull .",
    "an utterly charming and hilarious film .",
    "a tedious , plodding and lifeless mess .",
    "it 's a mn charming and often affecting journey .",
    "not a bad film , but not a good one either .",
]


def test_cli_pools_eval_and_service_shard_give_the_same_certificates(minilm_checkpoint, tmp_path, data_dir):
    """One checkpoint, seed and text set: `frs certify`, FRSClassifier with each pool, the `frs` defense of
    `frs eval`, and a service voter shard (the actor class, hosting half of the voters) agree exactly."""
    import json

    from frs_ray.certify.smooth import FRSClassifier, certificates_match
    from frs_ray.cli import main
    from frs_ray.config import CertifyConfig
    from frs_ray.data import load_dataset
    from frs_ray.defenses.base import DefenseContext
    from frs_ray.defenses.registry import build_defense
    from frs_ray.serving.actors import VoterShard

    src = tmp_path / "in.txt"
    src.write_text("\n".join(CLEAR_TEXTS) + "\n")
    out = tmp_path / "out.jsonl"
    assert (
        main(
            [
                "certify",
                "--checkpoint",
                str(minilm_checkpoint),
                "--input",
                str(src),
                "--out",
                str(out),
                "--k",
                "20",
                "--budget",
                "4",
                "--seed",
                "3",
                "--no-progress",
            ]
        )
        == 0
    )
    cli = [json.loads(line) for line in out.read_text().splitlines()]
    assert any(not c["abstained"] for c in cli) and all(c["certified_label"] == -1 for c in cli if c["abstained"])

    certs = {}
    for impl, noise in (("loop", "regenerate"), ("stacked", "resident"), ("stacked", "per_batch")):
        cfg = CertifyConfig(k=20, seed=3, fuzzing={"budget": 4}, voters={"implementation": impl, "noise": noise})
        clf = FRSClassifier.from_checkpoint(minilm_checkpoint, cfg)
        certs[impl, noise] = [c.to_dict() for c in clf.certify(CLEAR_TEXTS)]
        for a, b in zip(cli, certs[impl, noise]):
            assert certificates_match(a, b), (impl, noise, a["text"])

    ctx = DefenseContext(
        plain_checkpoint=minilm_checkpoint,
        smoothed_checkpoint=minilm_checkpoint,
        base_model="minilm",
        train=load_dataset("sst2", "dev", data_dir),
        work_dir=tmp_path,
        certify=CertifyConfig(k=20, fuzzing={"budget": 4}),
        seed=3,
    )
    for pred, c in zip(build_defense("frs", ctx).predict(CLEAR_TEXTS), cli):
        assert pred.vote_label == c["vote_label"] and pred.certified_label == c["certified_label"]
        if not c["abstained"]:
            assert pred.radius == c["radius"]["conditional"]["tokens"] or c["omega_h"] == c["omega_l"]

    shard = VoterShard(str(minilm_checkpoint), [v for v in range(20) if v % 2 == 1], 20, 3, torch_threads=1)
    ref = FRSClassifier.from_checkpoint(minilm_checkpoint, CertifyConfig(k=20, seed=3, voters={"implementation": "loop"}))
    jobs = [(k, t) for t in CLEAR_TEXTS for k in range(1, 20, 2)]
    assert shard.vote(jobs) == ref.vote_labels(jobs)
    assert shard.describe()["implementation"] == "stacked" and shard.describe()["voters"] == 10
    with pytest.raises(ValueError, match="not hosted"):
        shard.vote([(0, CLEAR_TEXTS[0])])
