"""The FRS service with vLLM voters (voter_backend: vllm) on the real Ray and Serve, and the two vLLM deployments."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from conftest import require_module

from frs_ray.runtime import configure_process

configure_process(quiet=False, ray=True)

ROOT = Path(__file__).resolve().parents[1]
PORT = 8124
BASE = f"http://127.0.0.1:{PORT}"
TEXTS = ["a gorgeous , witty , seductive movie .", "the film is strictly routine and dull ."]
SETTINGS = {
    "k": 3,
    "voter_actors": 1,
    "fuzz_actors": 1,
    "voter_backend": "vllm",
    "request_timeout_s": 400,
    "certify": {"seed": 2, "fuzzing": {"budget": 2}},
}


def _args(name: str) -> dict:
    import yaml

    doc = yaml.safe_load((ROOT / "deployments" / name).read_text())
    return doc["applications"][0]["args"]


@pytest.mark.parametrize("name", ["frs-smollm2.yaml", "frs-llama3-8b.yaml"])
def test_vllm_deployments_are_valid_settings(name):
    from frs_ray.serving.settings import ServiceSettings

    s = ServiceSettings.model_validate(_args(name))
    assert s.voter_backend == "vllm"
    cfg = s.certify
    assert cfg.voters.backend == "vllm" and cfg.k == s.k
    if name == "frs-llama3-8b.yaml":
        assert cfg.voters.vllm.dtype == "bfloat16" and s.num_gpus_per_actor == 1
        assert s.actor_options()["scheduling_strategy"] == "SPREAD" and s.actor_options(fuzz=True)["num_gpus"] == 1


def test_contradicting_voter_backend_is_rejected():
    from pydantic import ValidationError

    from frs_ray.serving.settings import ServiceSettings

    with pytest.raises(ValidationError, match="contradicts voter_backend"):
        ServiceSettings(checkpoint="x", voter_backend="torch", certify={"voters": {"backend": "vllm"}})
    with pytest.raises(ValidationError):
        ServiceSettings(checkpoint="x", voter_backend="onnx")


@pytest.fixture(scope="module")
def service(smollm2_checkpoint, vllm_env):
    require_module("vllm")
    ray = pytest.importorskip("ray")
    from ray import serve

    from frs_ray.serving.router import make_app

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024, ignore_reinit_error=True)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    handle = serve.run(make_app({"checkpoint": str(smollm2_checkpoint), **SETTINGS}), name="frs-vllm", route_prefix="/")
    yield handle
    serve.shutdown()
    ray.shutdown()


def test_service_with_vllm_voters_matches_torch_certificates(service, smollm2_checkpoint):
    from frs_ray.certify.smooth import FRSClassifier, certificates_match
    from frs_ray.config import CertifyConfig

    with urllib.request.urlopen(BASE + "/v1/info", timeout=60) as r:
        info = json.loads(r.read())
    pool = info["voter_pool"]
    assert pool["backend"] == "vllm" and pool["implementation"] == "vllm" and pool["engine"]["runner"] == "pooling"
    assert [s["voter_ids"] for s in pool["shards"]] == [[0, 1, 2]]
    req = urllib.request.Request(
        BASE + "/v1/classify",
        data=json.dumps({"texts": TEXTS}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=450) as r:
        body = json.loads(r.read())
    cfg = CertifyConfig.model_validate({**SETTINGS["certify"], "k": SETTINGS["k"]})  # torch voters, in this process
    local = [c.to_dict() for c in FRSClassifier.from_checkpoint(smollm2_checkpoint, cfg).certify(TEXTS)]
    assert len(body["results"]) == 2
    assert all(certificates_match({k: v for k, v in a.items() if k != "index"}, b) for a, b in zip(body["results"], local))
