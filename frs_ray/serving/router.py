"""The FRS router: a Ray Serve deployment with a FastAPI ingress that turns votes into certificates.

Request path for ``POST /v1/classify``:
1. validate (pydantic models, limits on texts and characters, model-token length) -> 4xx with a message;
2. admission control: more than ``max_inflight_requests`` in flight -> 503 with ``Retry-After``;
3. a fuzzing worker (round robin over the pool) fuzzes the texts and draws every vote's randomized text;
4. the votes of all requests that arrive within ``batch_wait_s`` are merged (``serve.batch``) and each voter
   shard gets ONE call for them, i.e. one forward pass per voter for the whole batch of requests;
5. the router counts votes and runs the CERTIFY protocol (``finalize_certificate``), exactly as `frs certify`.

Sequential CERTIFY (``n_max`` set by the request, ``user_config`` or the deployment's ``certify``): the request's
texts go through a :class:`~frs_ray.certify.rounds.SequentialBatch`; its first voter call holds the selection votes
and first estimation round, each later call the next round of every text still running. Every call goes through the
same ``serve.batch`` voter path, so a request waiting for its next round is merged with the other requests' calls of
that moment (first rounds and later rounds alike) into one call per voter shard. Later rounds are drawn in the
router from the plan's words and T(x') mask, seeded by (seed, text, look), so the certificates equal
`frs certify --n-max`'s on the same texts.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import ray
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..backends.hf import filler_token_of
from ..certify.rounds import SequentialBatch, draw_round
from ..certify.smooth import finalize_plans
from ..config import CertifyConfig, build
from ..errors import ConfigError
from ..fuzzing import FuzzedRandomizer
from ..runtime import configure_process
from ..smoothing.finetune import read_meta
from .actors import remote_fuzz_worker, remote_voter_shard
from .metrics import ServiceMetrics
from .schemas import ClassifyRequest, ClassifyResponse, ErrorResponse, InfoResponse
from .settings import ServiceSettings, apply_user_config, placement

logger = logging.getLogger("ray.serve")
app = FastAPI(
    title="FRS-Ray",
    version="0.1.0",
    description="Certified backdoor defense: Fuzzed Randomized Smoothing (ICLR 2025) served by Ray",
)


class RequestError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def _error(status: int, message: str, request_id: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(ErrorResponse(error=message, request_id=request_id).model_dump(), status_code=status, headers=headers)


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    parts = []
    for err in exc.errors()[:10]:
        if err.get("type") == "json_invalid":
            where = err.get("loc", ("body", "?"))[-1]
            parts.append(f"body is not valid JSON (error at character {where}: {err.get('ctx', {}).get('error', 'invalid')})")
            continue
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        msg = "unknown field" if err.get("type") == "extra_forbidden" else err.get("msg", "invalid")
        parts.append(f"{where}: {msg}")
    return _error(422, "invalid request: " + "; ".join(parts))


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = str(exc.detail)
    if exc.status_code == 400 and "parsing the body" in detail:
        detail = "could not parse the request body: send UTF-8 encoded JSON"
    return _error(exc.status_code, detail)


@app.exception_handler(RequestError)
async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    return _error(exc.status, exc.message, headers=exc.headers)


def _request_id() -> str:
    """Serve's id of the current request (the one in the structured logs), or a fresh one outside Serve."""
    try:
        from ray.serve.context import _get_serve_request_context

        rid = _get_serve_request_context().request_id
    except Exception:  # noqa: BLE001 - private Serve API; fall back to our own id
        rid = ""
    return rid or uuid.uuid4().hex


def checkpoint_digest(path: str | Path) -> str:
    """sha256 of a checkpoint folder's content: for every file (sorted by relative path), its relative path, its
    size and its bytes. Identifies the model without revealing where it is stored."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        h.update(f"{rel}\0{f.stat().st_size}\0".encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def public_name(model: str) -> str:
    """A model as ``/v1/info`` names it: a folder's last component (``/srv/x/victim`` -> ``victim``), a bare name
    (``minilm``) unchanged."""
    return Path(model).name or str(model)


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64, health_check_period_s=5)
@serve.ingress(app)
class FRSRouter:
    """Certified classification over a pool of fuzzing workers and R voter shards."""

    def __init__(self, settings: dict[str, Any]) -> None:
        configure_process()  # a Serve replica is a process: set it up
        self.settings = ServiceSettings.model_validate(settings)
        s = self.settings
        meta = read_meta(s.checkpoint)
        self.meta = meta
        self.label_names = meta["data"].get("label_names") or [str(i) for i in range(meta["num_labels"])]
        self.base = s.certify
        self.checkpoint_sha = checkpoint_digest(s.checkpoint)
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(s.checkpoint)
        # the filler of insertion/substitution mutations, as HFClassifier.filler_token (later sequential rounds
        # are randomized here, with the same filler the fuzzing workers use)
        self.filler = filler_token_of(self.tokenizer)
        self.max_tokens = int(meta["max_length"])
        self.layout = placement(s.k, s.voter_actors)
        actor_opts = s.actor_options()
        self.shards = [
            remote_voter_shard(**actor_opts).remote(
                s.checkpoint, ids, s.k, self.base.seed, s.device, s.torch_threads, self.base.voters.model_dump()
            )
            for ids in self.layout
        ]
        self.shard_of = {k: r for r, ids in enumerate(self.layout) for k in ids}
        self.fuzzers = [
            remote_fuzz_worker(**s.actor_options(fuzz=True)).remote(
                s.checkpoint, s.device, s.torch_threads, s.span_check_options()
            )
            for _ in range(s.fuzz_actors)
        ]
        ray.get([a.pid.remote() for a in self.shards + self.fuzzers])  # wait until every model is loaded
        pools = ray.get([a.describe.remote() for a in self.shards])
        self.voter_pool = {
            key: pools[0][key] for key in ("backend", "implementation", "noise", "device", "voter_definition") if key in pools[0]
        }
        self.voter_pool["shards"] = [{"voter_ids": p["voter_ids"], "device": p["device"], "pid": p.get("pid")} for p in pools]
        if "engine" in pools[0]:
            self.voter_pool["engine"] = pools[0]["engine"]
        self._next_fuzzer = 0
        self._inflight = 0
        self.metrics = ServiceMetrics()

    # ------------------------------------------------------------------ settings without reload
    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve ``user_config``: see :func:`~frs_ray.serving.settings.apply_user_config` (no model reloads;
        a ValueError keeps the replica's previous settings)."""
        self.base = apply_user_config(self.base, self.settings, user_config)

    # ------------------------------------------------------------------ endpoints
    @app.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @app.get("/v1/info", response_model=InfoResponse)
    async def info(self) -> InfoResponse:
        b, s = self.base, self.settings
        sm = self.meta["config"]["smoothing"]
        return InfoResponse(
            model=public_name(self.meta["config"]["model"]),
            checkpoint=public_name(s.checkpoint),
            checkpoint_sha256=self.checkpoint_sha,
            labels=self.label_names,
            k=b.k,
            sigma=sm["sigma"],
            top_h=self.meta["smoothing"]["top_h"],
            budget=b.fuzzing.budget,
            max_budget=s.max_budget,
            alpha=b.alpha,
            omega_m=b.randomize.omega_m,
            omega_h=b.randomize.omega_h,
            max_distance=b.randomize.max_distance,
            span_rate=b.randomize.span_rate,
            n_select=b.votes_select,
            n_estimate=b.votes_estimate,
            n_max=b.n_max,
            target_radius=b.target_radius,
            target_kind=b.target_kind,
            round_growth=b.round_growth,
            futility=b.futility,
            max_n_max=s.max_n_max,
            max_target_radius=s.max_target_radius,
            seed=b.seed,
            voter_actors=len(self.shards),
            fuzz_actors=len(self.fuzzers),
            voters_per_actor=self.layout,
            max_texts_per_request=s.max_texts_per_request,
            max_chars_per_text=s.max_chars_per_text,
            span_check=s.span_check,
            voter_pool=self.voter_pool,
        )

    @app.post("/v1/classify", response_model=ClassifyResponse)
    async def classify_http(self, body: ClassifyRequest) -> ClassifyResponse:
        return await self.classify(body)

    # ------------------------------------------------------------------ the work
    def _request_config(self, body: ClassifyRequest) -> CertifyConfig:
        o, s = body.options, self.settings
        if o.k is not None and o.k > s.k:
            raise RequestError(422, f"options.k = {o.k} exceeds this deployment's K = {s.k}")
        if o.budget is not None and o.budget > s.max_budget:
            raise RequestError(422, f"options.budget = {o.budget} exceeds the maximum {s.max_budget}")
        cfg = self.base.model_dump()
        if o.k is not None:
            cfg["k"] = o.k
            # the default vote counts follow K, as in `frs certify --k`
            cfg["n_select"] = self.settings.certify.n_select
            cfg["n_estimate"] = self.settings.certify.n_estimate
        if o.budget is not None:
            cfg["fuzzing"]["budget"] = o.budget
        if o.alpha is not None:
            cfg["alpha"] = o.alpha
        if o.n_max is not None and o.n_max > s.max_n_max:
            raise RequestError(422, f"options.n_max = {o.n_max} exceeds this deployment's max_n_max = {s.max_n_max}")
        if o.target_radius is not None and o.target_radius > s.max_target_radius:
            raise RequestError(
                422,
                f"options.target_radius = {o.target_radius} exceeds this deployment's max_target_radius = {s.max_target_radius}",
            )
        for key in ("n_max", "target_radius", "target_kind"):
            if getattr(o, key) is not None:
                cfg[key] = getattr(o, key)
        try:  # combinations (n_max below the first round, target_radius without n_max, too many looks)
            return build(CertifyConfig, cfg)
        except ConfigError as exc:
            raise RequestError(422, f"invalid options: {exc}") from None

    def _validate_texts(self, texts: list[str]) -> None:
        s = self.settings
        if len(texts) > s.max_texts_per_request:
            raise RequestError(413, f"{len(texts)} texts in one request; the limit is {s.max_texts_per_request}")
        for i, t in enumerate(texts):
            if not t.strip():
                raise RequestError(422, f"texts[{i}] is empty or whitespace-only")
            if len(t) > s.max_chars_per_text:
                raise RequestError(413, f"texts[{i}] has {len(t)} characters; the limit is {s.max_chars_per_text}")
        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]]
        for i, n in enumerate(lengths):
            if n > self.max_tokens:
                raise RequestError(422, f"texts[{i}] has {n} model tokens; this model accepts at most {self.max_tokens}")

    async def classify(self, body: ClassifyRequest | dict) -> ClassifyResponse:
        """Certify the texts of one request (also callable through a DeploymentHandle)."""
        if isinstance(body, dict):
            body = ClassifyRequest.model_validate(body)
        request_id = _request_id()
        started = time.perf_counter()
        self.metrics.requests.inc()
        if self._inflight >= self.settings.max_inflight_requests:
            self.metrics.errors.inc(tags={"kind": "overloaded"})
            raise RequestError(503, "the service is at capacity; retry later", {"Retry-After": "1"})
        self._inflight += 1
        try:
            self._validate_texts(body.texts)
            cfg = self._request_config(body)
            result = await asyncio.wait_for(
                self._certify(body.texts, cfg, body.options.return_spans, request_id), timeout=self.settings.request_timeout_s
            )
            self.metrics.latency.observe(time.perf_counter() - started, tags={"stage": "total"})
            return result
        except RequestError:
            self.metrics.errors.inc(tags={"kind": "client"})
            raise
        except asyncio.TimeoutError:
            self.metrics.errors.inc(tags={"kind": "timeout"})
            raise RequestError(
                503, f"request timed out after {self.settings.request_timeout_s} s; retry later", {"Retry-After": "2"}
            ) from None
        finally:
            self._inflight -= 1

    async def _certify(self, texts: list[str], cfg: CertifyConfig, return_spans: bool, request_id: str) -> ClassifyResponse:
        t0 = time.perf_counter()
        plans = await self._prepare_batched((tuple(texts), cfg.model_dump_json()))
        t1 = time.perf_counter()
        if cfg.n_max is None:
            jobs = [(k, x) for p in plans for k, x in p.select + p.estimate]
            labels = await self._vote_batched(jobs)
            t2 = time.perf_counter()
            certs = finalize_plans(plans, labels, cfg, self.label_names, {"vote": (t2 - t1) / len(texts)})
        else:
            randomizer = FuzzedRandomizer(cfg.randomize, filler=self.filler)
            batch = SequentialBatch(plans, lambda p, look, n: draw_round(p, look, n, cfg, randomizer), cfg, self.label_names)
            while not batch.done:  # each round joins the next merged voter call with the other requests'
                batch.deliver(await self._vote_batched(batch.pending_jobs()))
            t2 = time.perf_counter()
            certs = batch.certificates({"vote": (t2 - t1) / len(texts)})
        results = [cert if return_spans else cert.model_copy(update={"spans": []}) for cert in certs]
        for cert in results:
            self.metrics.certificates.inc(tags={"outcome": "abstain" if cert.abstained else "certified"})
        self.metrics.latency.observe(t1 - t0, tags={"stage": "fuzz_and_randomize"})
        self.metrics.latency.observe(t2 - t1, tags={"stage": "vote"})
        logger.info("classified", extra={"texts": len(texts), "fuzz_s": round(t1 - t0, 3), "vote_s": round(t2 - t1, 3)})
        return ClassifyResponse(
            request_id=request_id,
            results=results,
            timings={
                "fuzz_and_randomize": round(t1 - t0, 4),
                "vote": round(t2 - t1, 4),
                "total": round(time.perf_counter() - t0, 4),
            },
        )

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01, max_concurrent_batches=4)
    async def _prepare_batched(self, items: list[tuple[tuple[str, ...], str]]) -> list[list]:
        """Merge the texts of concurrent requests with the same settings into one fuzzing call (one MCTS run in
        lock-step, so each of its ``budget`` model queries serves all of them); plans are per text, so merging
        does not change any result. Calls go round robin over the fuzzing pool."""
        groups: dict[str, list[int]] = {}
        for i, (_, cfg_json) in enumerate(items):
            groups.setdefault(cfg_json, []).append(i)
        refs = []
        for cfg_json, idx in groups.items():
            fuzzer = self.fuzzers[self._next_fuzzer % len(self.fuzzers)]
            self._next_fuzzer += 1
            texts = [t for i in idx for t in items[i][0]]
            refs.append(fuzzer.prepare.remote(texts, CertifyConfig.model_validate_json(cfg_json).model_dump()))
        results = await asyncio.gather(*refs)
        out: list[list] = [[] for _ in items]
        for idx, plans in zip(groups.values(), results):
            pos = 0
            for i in idx:
                n = len(items[i][0])
                out[i] = plans[pos : pos + n]
                pos += n
        return out

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _vote_batched(self, requests: list[list[tuple[int, str]]]) -> list[list[int]]:
        """Merge the vote jobs of concurrent requests; one call (one forward pass per voter) per shard."""
        per_shard: dict[int, list[tuple[int, int, int, str]]] = {}
        for r, jobs in enumerate(requests):
            for j, (k, x) in enumerate(jobs):
                per_shard.setdefault(self.shard_of[k], []).append((r, j, k, x))
        shard_ids = sorted(per_shard)
        answers = await asyncio.gather(*[self.shards[s].vote.remote([(k, x) for _, _, k, x in per_shard[s]]) for s in shard_ids])
        out = [[0] * len(jobs) for jobs in requests]
        for s, labels in zip(shard_ids, answers):
            for (r, j, _, _), y in zip(per_shard[s], labels):
                out[r][j] = y
        return out

    async def actor_pids(self) -> dict[str, list[int]]:
        """Process ids of the voter shards and fuzzing workers (for fault-injection tests)."""
        return {
            "voters": await asyncio.gather(*[a.pid.remote() for a in self.shards]),
            "fuzzers": await asyncio.gather(*[a.pid.remote() for a in self.fuzzers]),
        }

    async def voter_calls(self) -> list[int]:
        """Per voter shard, the vote calls it has served since it (re)started (for batching tests)."""
        return list(await asyncio.gather(*[a.vote_calls.remote() for a in self.shards]))


def build_app(args: dict[str, Any]) -> serve.Application:
    """Application builder for ``serve run deployments/frs.yaml`` (``import_path: frs_ray.serving.router:build_app``)."""
    return make_app(args)


def make_app(args: dict[str, Any], user_config: dict[str, Any] | None = None) -> serve.Application:
    """The router application from service settings (and an optional Serve ``user_config``), for Python callers."""
    args = dict(args)
    if "checkpoint" in args and Path(str(args["checkpoint"])).exists():  # actors may run in another cwd
        args["checkpoint"] = str(Path(str(args["checkpoint"])).resolve())
    settings = ServiceSettings.model_validate(args)
    read_meta(settings.checkpoint)  # fail fast with a clear message when the checkpoint is missing
    apply_user_config(settings.certify, settings, user_config)  # and when user_config is invalid
    options: dict[str, Any] = {
        "max_ongoing_requests": settings.max_ongoing_requests,
        "max_queued_requests": settings.max_queued_requests,
    }
    if user_config is not None:
        options["user_config"] = user_config
    return FRSRouter.options(**options).bind(settings.model_dump())
