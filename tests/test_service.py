"""The FRS service on the real Ray and Serve, in-process, at small scale (K=4 voters over 2 actors)."""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request

import pytest

from frs_ray.runtime import configure_process

configure_process(quiet=False, ray=True)

PORT = 8123
BASE = f"http://127.0.0.1:{PORT}"
# Candidate texts: sentiment-laden and neutral ones. With 8 selection and 40 estimation votes some of them certify
# and some abstain on the session checkpoint (at the default K = 4 votes, 0.05**(1/4) < 0.5, so every certificate
# would abstain and the certified label and radius paths would never be compared). Which ones do depends on the
# voters' noise, so the `texts` fixture picks certified and abstained ones from the reference `frs certify` path.
POOL = [
    "awful , boring , stupid and ugly .",
    "a gorgeous , witty , seductive movie .",
    "it runs 90 minutes .",
    "the film is strictly routine and dull .",
    "an utterly charming film .",
    "a tedious , plodding mess .",
    "a fine film .",
    "bad acting .",
    "it is a film .",
    "the movie has actors .",
    "the plot .",
    "a masterpiece : brilliant , moving and beautiful .",
    "it 's a mn charming and often affecting journey .",
    "the actors .",
    "there is a movie .",
    "a film about people .",
    "the characters talk .",
    "this is a movie with actors in it .",
    "a story about a man and a dog .",
    "the movie , the actors , the plot .",
]
SETTINGS = {
    "k": 4,
    "voter_actors": 2,
    "fuzz_actors": 1,
    "max_texts_per_request": 8,
    "max_chars_per_text": 300,
    "request_timeout_s": 400,
    "max_n_max": 200,
    "max_target_radius": 3,
    "certify": {"seed": 1, "n_select": 8, "n_estimate": 40, "fuzzing": {"budget": 5}},
}
USER_CONFIG = {"budget": 2, "alpha": 0.05}  # applied by reconfigure(): the effective budget is 2


@pytest.fixture(scope="module")
def service(minilm_checkpoint, tmp_path_factory):
    ray = pytest.importorskip("ray")
    from ray import serve

    from frs_ray.serving.router import make_app

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024, _temp_dir=None, ignore_reinit_error=True)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    app = make_app({"checkpoint": str(minilm_checkpoint), **SETTINGS}, user_config=USER_CONFIG)
    handle = serve.run(app, name="frs", route_prefix="/")
    yield handle
    serve.shutdown()
    ray.shutdown()


def _post(path: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    req = urllib.request.Request(BASE + path, data=body, method="POST", headers={"Content-Type": content_type})
    try:  # generous: after an actor kill the restarted actor reloads its model, slow on a busy 2-core machine
        with urllib.request.urlopen(req, timeout=450) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except json.JSONDecodeError:
            return e.code, {"raw": raw.decode("utf-8", "replace")}


def _local_certificates(checkpoint, texts):
    from frs_ray.certify.smooth import FRSClassifier
    from frs_ray.config import CertifyConfig

    cfg = CertifyConfig.model_validate({**SETTINGS["certify"], "k": SETTINGS["k"], "fuzzing": {"budget": USER_CONFIG["budget"]}})
    return [c.to_dict() for c in FRSClassifier.from_checkpoint(checkpoint, cfg).certify(texts)]


@pytest.fixture(scope="module")
def texts(minilm_checkpoint) -> list[str]:
    """Two texts the reference path certifies and one it abstains on (fewer if the pool has fewer)."""
    certs = _local_certificates(minilm_checkpoint, POOL)
    certified = [c["text"] for c in certs if not c["abstained"]]
    abstained = [c["text"] for c in certs if c["abstained"]]
    assert certified and abstained, (
        f"the pool gave {len(certified)} certified and {len(abstained)} abstained "
        "certificates; both are needed to compare the service on both paths"
    )
    return certified[:2] + abstained[:1]


def _strip(cert: dict) -> dict:
    return {k: v for k, v in cert.items() if k not in ("seconds", "index")}


def _same(xs: list[dict], ys: list[dict]) -> bool:
    from frs_ray.certify.smooth import certificates_match

    return len(xs) == len(ys) and all(certificates_match(x, y) for x, y in zip(xs, ys))


def _content_sha256(folder) -> str:
    """sha256 over every file of ``folder`` (sorted relative path, size, bytes), computed here independently."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = f.read_bytes()
        h.update(f"{f.relative_to(folder).as_posix()}\0{len(data)}\0".encode() + data)
    return h.hexdigest()


def test_health_and_info(service, minilm_checkpoint):
    with urllib.request.urlopen(BASE + "/healthz", timeout=30) as r:
        assert json.loads(r.read()) == {"status": "ok"}
    from frs_ray.serving.client import FRSClient

    info = FRSClient(BASE).info()
    assert info.k == 4 and info.voter_actors == 2 and info.voters_per_actor == [[0, 2], [1, 3]]
    assert info.budget == USER_CONFIG["budget"] and info.sigma == 0.01
    assert (info.n_select, info.n_estimate) == (8, 40)
    # the checkpoint by name and content hash, never by where it is stored
    assert info.checkpoint == minilm_checkpoint.name and info.model == "minilm"
    assert str(minilm_checkpoint.parent) not in json.dumps(info.model_dump())
    assert info.checkpoint_sha256 == _content_sha256(minilm_checkpoint)
    with urllib.request.urlopen(BASE + "/docs", timeout=30) as r:
        assert r.status == 200


def test_http_client_and_handle_match_local_certify(service, minilm_checkpoint, texts):
    import asyncio

    from frs_ray.serving.client import FRSClient, classify_with_handle

    local = [_strip(c) for c in _local_certificates(minilm_checkpoint, texts)]
    # both paths occur: certified (label and radii compared) and abstained
    assert {c["abstained"] for c in local} == {False, True}
    for c in local:
        assert (c["certified_label"] == -1) == c["abstained"] == (c["radius"]["conditional"]["tokens"] is None)
    status, body = _post("/v1/classify", json.dumps({"texts": texts}).encode())
    assert status == 200
    assert [(r["certified_label"], r["vote_label"], r["radius"]) for r in body["results"]] == [
        (c["certified_label"], c["vote_label"], c["radius"]) for c in local
    ]
    assert _same(body["results"], local)
    client_results = FRSClient(BASE).classify(texts)
    assert _same([r.model_dump() for r in client_results], local)
    via_async = asyncio.run(FRSClient(BASE).aclassify(texts))
    assert _same([r.model_dump() for r in via_async], local)
    via_handle = asyncio.run(classify_with_handle(service, texts))
    assert _same([r.model_dump() for r in via_handle], local)


MALFORMED = [
    b'{"texts": []}',
    b'{"texts": [""]}',
    b'{"texts": ["   "]}',
    b'{"texts": ["' + b"x" * 400 + b'"]}',
    b'{"texts": ["' + b"a " * 140 + b'"]}',  # under the 300-character limit, over the 128 model tokens
    b'{"texts": "not a list"}',
    b'{"texts": [1, 2]}',
    b'{"texts": [null]}',
    b'{"texts": [["nested"]]}',
    b'{"text": ["typo in field"]}',
    b"{}",
    b"[]",
    b'"just a string"',
    b"not json at all",
    b'{"texts": ["a"]',
    b'{"texts": ["\xff\xfe invalid utf8"]}',
    b'{"texts": ["ok"], "options": {"k": 0}}',
    b'{"texts": ["ok"], "options": {"k": 99}}',
    b'{"texts": ["ok"], "options": {"k": "many"}}',
    b'{"texts": ["ok"], "options": {"budget": -1}}',
    b'{"texts": ["ok"], "options": {"budget": 100000}}',
    b'{"texts": ["ok"], "options": {"alpha": 0}}',
    b'{"texts": ["ok"], "options": {"alpha": 1.5}}',
    b'{"texts": ["ok"], "options": {"unknown": 1}}',
    b'{"texts": ["ok"], "options": "fast"}',
    b'{"texts": ["ok"], "extra": true}',
    json.dumps({"texts": ["t"] * 10_000}).encode(),
    json.dumps({"texts": ["t"] * 9}).encode(),
    b"",
    b'{"texts": ["ok"], "options": {"return_spans": "maybe"}}',
    # sequential CERTIFY options (first estimation round: n_estimate = 40 votes; max_n_max 200, max_target_radius 3)
    b'{"texts": ["ok"], "options": {"n_max": 0}}',
    b'{"texts": ["ok"], "options": {"n_max": -5}}',
    b'{"texts": ["ok"], "options": {"n_max": "lots"}}',
    b'{"texts": ["ok"], "options": {"n_max": 2.5}}',
    b'{"texts": ["ok"], "options": {"n_max": 201}}',
    b'{"texts": ["ok"], "options": {"n_max": 3}}',
    b'{"texts": ["ok"], "options": {"target_radius": 1}}',
    b'{"texts": ["ok"], "options": {"n_max": 160, "target_radius": -1}}',
    b'{"texts": ["ok"], "options": {"n_max": 160, "target_radius": 4}}',
    b'{"texts": ["ok"], "options": {"n_max": 160, "target_kind": "sideways"}}',
]

# the message names what is wrong
SEQUENTIAL_MESSAGES = [
    ({"n_max": 201}, "max_n_max = 200"),
    ({"n_max": 3}, "n_max (3) must be >= the first round's votes n_estimate (40)"),
    ({"target_radius": 1}, "target_radius needs n_max"),
    ({"n_max": 160, "target_radius": 4}, "max_target_radius = 3"),
]


@pytest.mark.parametrize("body", MALFORMED)
def test_malformed_requests_get_4xx_with_message(service, body):
    status, payload = _post("/v1/classify", body)
    assert 400 <= status < 500, (status, payload)
    assert payload.get("error"), payload


@pytest.mark.parametrize("options, message", SEQUENTIAL_MESSAGES)
def test_bad_sequential_options_name_the_problem(service, options, message):
    status, payload = _post("/v1/classify", json.dumps({"texts": ["ok"], "options": options}).encode())
    assert status == 422 and message in payload["error"], payload


def test_wrong_content_type_and_method(service):
    status, payload = _post("/v1/classify", b"texts=hello", content_type="application/x-www-form-urlencoded")
    assert 400 <= status < 500 and payload.get("error")
    req = urllib.request.Request(BASE + "/v1/classify", method="GET")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 405


def test_still_healthy_after_bad_input(service):
    status, body = _post("/v1/classify", json.dumps({"texts": ["a fine film ."], "options": {"return_spans": False}}).encode())
    assert status == 200 and body["results"][0]["spans"] == []


def test_killed_voter_and_fuzzer_are_restarted_with_identical_votes(service, minilm_checkpoint, texts):
    import asyncio

    before = _post("/v1/classify", json.dumps({"texts": texts}).encode())[1]["results"]
    pids = asyncio.run(_pids(service))
    os.kill(pids["voters"][0], signal.SIGKILL)
    os.kill(pids["fuzzers"][0], signal.SIGKILL)
    status, after = _post("/v1/classify", json.dumps({"texts": texts}).encode())
    assert status == 200
    assert _same(after["results"], before)
    new = asyncio.run(_pids(service))
    assert new["voters"][0] != pids["voters"][0] and new["fuzzers"][0] != pids["fuzzers"][0]


async def _pids(handle):
    return await handle.actor_pids.remote()


# ---------------------------------------------------------------------------------------------- sequential CERTIFY
SEQ_TEXTS = POOL[:6]  # sentiment-laden and neutral: some stop at the first look, some go on
SEQ_OPTIONS = {"n_max": 160, "target_radius": 1}  # looks at 40, 80, 160 estimation votes, alpha / 3 each


@pytest.fixture(scope="module")
def cli_sequential(minilm_checkpoint, tmp_path_factory):
    """`frs certify --n-max 160 --target-radius 1` with the service's effective settings (seed 1, budget 2,
    8 selection votes, a first round of 40)."""
    from frs_ray.cli import main

    d = tmp_path_factory.mktemp("seq")
    (d / "in.txt").write_text("\n".join(SEQ_TEXTS) + "\n")
    rc = main(
        [
            "certify",
            "--checkpoint",
            str(minilm_checkpoint),
            "--input",
            str(d / "in.txt"),
            "--out",
            str(d / "out.jsonl"),
            "--no-progress",
            "--k",
            str(SETTINGS["k"]),
            "--seed",
            "1",
            "--budget",
            str(USER_CONFIG["budget"]),
            "--n-select",
            str(SETTINGS["certify"]["n_select"]),
            "--n-estimate",
            str(SETTINGS["certify"]["n_estimate"]),
            "--n-max",
            "160",
            "--target-radius",
            "1",
        ]
    )
    assert rc == 0
    return [_strip(json.loads(line)) for line in (d / "out.jsonl").read_text().splitlines()]


def test_sequential_request_equals_frs_certify_n_max(service, cli_sequential):
    status, body = _post("/v1/classify", json.dumps({"texts": SEQ_TEXTS, "options": SEQ_OPTIONS}).encode())
    assert status == 200, body
    results = body["results"]
    assert _same(results, cli_sequential)
    seq = [r["sequential"] for r in results]
    assert all(s["n_max"] == 160 and s["target_radius"] == 1 for s in seq), seq
    assert any(s["looks"] >= 2 for s in seq), seq  # some text went on to a later round
    n_sel = SETTINGS["certify"]["n_select"]
    assert all(sum(r["votes"]) == s["votes"] and r["queries"]["votes"] == n_sel + s["votes"] for r, s in zip(results, seq))


def test_concurrent_sequential_requests_share_voter_calls(service, cli_sequential):
    """Four one-text requests at once: their rounds are merged, so the shards serve fewer vote calls than the
    requests' looks added up (without merging, every look of every request is at least one call)."""
    import asyncio

    from frs_ray.serving.client import classify_with_handle

    async def run_all():
        before = await service.voter_calls.remote()
        results = await asyncio.gather(*[classify_with_handle(service, [t], **SEQ_OPTIONS) for t in SEQ_TEXTS])
        after = await service.voter_calls.remote()
        return [r[0].model_dump() for r in results], sum(after) - sum(before)

    # Merging needs the requests to meet within the router's batch window, which a loaded machine can stretch
    # apart: up to three tries (a router that never merges fails all three); every try's certificates must match.
    tries = []
    for _ in range(3):
        results, calls = asyncio.run(run_all())
        assert _same(results, cli_sequential)  # a request's certificate does not depend on who shares its calls
        tries.append((calls, sum(r["sequential"]["looks"] for r in results)))
        if calls < tries[-1][1]:
            break
    assert any(calls < looks for calls, looks in tries), tries


def test_user_config_sets_sequential_defaults(service, cli_sequential):
    """reconfigure (what Serve calls with user_config) switches the default protocol; null switches it back."""
    import asyncio

    from frs_ray.serving.client import FRSClient

    async def reconf(cfg):
        await service.reconfigure.remote(cfg)

    try:
        asyncio.run(reconf({**USER_CONFIG, **SEQ_OPTIONS}))
        info = FRSClient(BASE).info()
        assert (info.n_max, info.target_radius, info.max_n_max) == (160, 1, 200)
        status, body = _post("/v1/classify", json.dumps({"texts": SEQ_TEXTS}).encode())
        assert status == 200 and _same(body["results"], cli_sequential)
    finally:
        asyncio.run(reconf({**USER_CONFIG, "n_max": None, "target_radius": None}))
    assert FRSClient(BASE).info().n_max is None
    status, body = _post("/v1/classify", json.dumps({"texts": POOL[:1]}).encode())
    assert status == 200 and body["results"][0]["sequential"] is None


@pytest.mark.parametrize(
    "user_config, message",
    [
        ({"n_max": 201}, "max_n_max = 200"),
        ({"n_max": 3}, "must be >= the first round's votes"),
        ({"target_radius": 2}, "target_radius needs n_max"),
        ({"n_max": 160, "target_radius": 9}, "max_target_radius = 3"),
        ({"n_max": 160, "target_kind": "both"}, "target_kind"),
        ({"n_max": 160, "futility": 1.0}, "futility"),
        ({"n_max": 160, "round_growth": 1.0}, "round_growth"),
        ({"n_max": "many"}, "n_max"),
        ({"k": 2}, "unknown fields ['k']"),
        ({"span_rate": "loose"}, "span_rate"),
    ],
)
def test_bad_user_config_is_rejected_with_the_field(user_config, message):
    from frs_ray.config import CertifyConfig
    from frs_ray.serving.settings import ServiceSettings, apply_user_config

    settings = ServiceSettings.model_validate({"checkpoint": "unused", **SETTINGS})
    base = CertifyConfig.model_validate({**SETTINGS["certify"], "k": SETTINGS["k"]})
    with pytest.raises(ValueError) as e:
        apply_user_config(base, settings, user_config)
    assert message in str(e.value), str(e.value)
    good = apply_user_config(base, settings, {"n_max": 200, "target_radius": 3, "target_kind": "unconditional"})
    assert (good.n_max, good.target_radius, good.target_kind) == (200, 3, "unconditional")
    assert apply_user_config(base, settings, {"span_rate": "fixed"}).randomize.span_rate == "fixed"


def test_deployment_certify_n_max_obeys_the_limit():
    from frs_ray.serving.settings import ServiceSettings

    with pytest.raises(ValueError, match="certify.n_max = 256 exceeds this deployment's max_n_max = 200"):
        ServiceSettings.model_validate({"checkpoint": "unused", **SETTINGS, "certify": {"n_max": 256}})
