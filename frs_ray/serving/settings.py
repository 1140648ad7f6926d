"""Typed settings of the FRS service (the ``args`` of ``deployments/frs.yaml``) and voter placement."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ..config import CertifyConfig, RandomizeConfig, StrictConfig, build
from ..errors import ConfigError
from ..fuzzing.strata import check_edges


class ServiceSettings(StrictConfig):
    """The ``args`` of a deployment file: the checkpoint, the voter and fuzzing actors, the limits of a request,
    and ``certify``, the :class:`~frs_ray.config.CertifyConfig` that `frs certify` uses (its ``k`` and
    ``voters.backend`` are this model's ``k`` and ``voter_backend``). Unknown keys, at any depth, are rejected
    when the file is loaded."""

    checkpoint: str = Field(..., description="checkpoint folder written by `frs finetune`")
    k: int = Field(20, ge=1, le=1000, description="voters K hosted by the service (requests may ask for fewer)")
    voter_actors: int = Field(2, ge=1, description="R: actors the K voters are sharded over (1..K)")
    fuzz_actors: int = Field(1, ge=1, le=64, description="fuzzing workers in the pool")
    max_budget: int = Field(50, ge=0, le=10_000, description="largest MCTS budget a request may ask for")
    max_n_max: int = Field(
        640,
        ge=1,
        le=1_000_000,
        description="largest sequential n_max (estimation votes per text) "
        "a request or user_config may ask for; also bounds certify.n_max",
    )
    max_target_radius: int = Field(
        16, ge=0, le=10_000, description="largest target_radius (tokens) a request or user_config may ask for"
    )
    max_texts_per_request: int = Field(32, ge=1, le=10_000)
    max_chars_per_text: int = Field(2000, ge=1, le=1_000_000)
    max_inflight_requests: int = Field(16, ge=1, description="requests certified at once; more get 503 + Retry-After")
    max_ongoing_requests: int = Field(64, ge=1, description="Serve: requests a router replica accepts")
    max_queued_requests: int = Field(128, ge=-1, description="Serve: requests queued before Serve itself answers 503")
    request_timeout_s: float = Field(120.0, gt=0, description="per-request limit; past it the request gets 503")
    num_cpus_per_actor: float = Field(0.25, gt=0, description="CPU share each voter/fuzzing actor asks for")
    num_gpus_per_actor: float = Field(
        0.0,
        ge=0,
        description="GPU share each actor asks for (0 on CPU machines); "
        "with voter_backend 'vllm', 1 gives each voter shard's engine a GPU of its own",
    )
    num_gpus_per_fuzz_actor: float | None = Field(
        None, ge=0, description="GPU share of each fuzzing worker (its own torch centre model); default: num_gpus_per_actor"
    )
    voter_backend: Literal["torch", "vllm"] = Field(
        "torch",
        description="what runs each voter shard's voters: 'torch' "
        "(a voter pool over the checkpoint's transformers model) or 'vllm' "
        "(one vLLM engine per shard, voters switched in place; decoder "
        "checkpoints). Engine settings: certify.voters.vllm",
    )
    device: str | None = Field(None, description="torch device in the actors (default: cuda if present)")
    torch_threads: int | None = Field(1, ge=1, description="torch threads per actor (1 avoids oversubscribing small machines)")
    max_restarts: int = Field(-1, ge=-1, description="restarts of a dead actor (-1: unlimited)")
    certify: CertifyConfig = Field(
        default_factory=CertifyConfig,
        description="the service's certify settings "
        "(alpha, seed, fuzzing, randomize, ...); k and voters.backend come from k and "
        "voter_backend",
    )
    span_check: Literal["none", "fluency", "transplant", "fluency+transplant"] = Field(
        "none",
        description="check on T(x') before randomization (extensions, not the paper's method): 'fluency' "
        "keeps a span only where deleting it makes the text more fluent to span_check_lm "
        "(frs_ray/fuzzing/fluency.py); 'transplant' keeps a span only where inserting it into clean reference texts "
        "of other labels moves them to the input's label (frs_ray/fuzzing/transplant.py); 'fluency+transplant' "
        "keeps a span where either keeps it (frs_ray/fuzzing/union.py); 'none' is FRS",
    )
    span_check_threshold: float | None = Field(
        None,
        allow_inf_nan=False,
        description="fluency: keep a span when "
        "log ppl(x') - log ppl(x' without it) exceeds this (default 0); "
        "transplant and fluency+transplant: the transplant score threshold (default: calibrated on clean data)",
    )
    span_check_fluency_threshold: float | None = Field(
        None, allow_inf_nan=False, description="fluency+transplant: the fluency check's threshold (default 0)"
    )
    span_check_lm: str = Field("smollm2", description="fluency check: 'smollm2' or a local causal-LM folder")
    span_check_data: str | None = Field(
        None,
        description="transplant check: clean data (dataset name or file, dev "
        "split) for references and calibration (default: the dev.tsv beside the "
        "checkpoint's training data)",
    )
    span_check_m: int | None = Field(
        None, ge=1, le=512, description="transplant check: references per span (default: calibrated)"
    )
    span_check_grow: int = Field(
        0,
        ge=0,
        le=64,
        description="transplant check: grow each span by up to this many adjacent tokens while each raises its "
        "transplant score (frs_ray/fuzzing/growth.py); 0: no growth",
    )
    span_check_combine: Literal["each", "joint"] = Field(
        "each",
        description="transplant check: 'joint' also transplants the words of all spans of T(x') together and keeps "
        "them all when that passes (combination triggers; needs certify.fuzzing.num_spans >= 2)",
    )
    span_check_length_strata: list[int] = Field(
        [],
        max_length=16,
        description="transplant check: one calibrated threshold per span-length stratum, given by the longest span "
        "(tokens) of each stratum but the last ([1, 3]: 1 token, 2-3, 4 or more; frs_ray/fuzzing/strata.py); "
        "[]: one threshold. Needs span_check_threshold unset",
    )

    def span_check_options(self) -> dict[str, Any] | None:
        """What the fuzzing workers need to build the span check
        (:func:`frs_ray.fuzzing.checks.build_span_check`'s arguments), or None for plain FRS."""
        if self.span_check == "none":
            return None
        return {
            "kind": self.span_check,
            "threshold": self.span_check_threshold,
            "fluency_threshold": self.span_check_fluency_threshold,
            "lm": self.span_check_lm,
            "data": self.span_check_data,
            "m": self.span_check_m,
            "grow": self.span_check_grow,
            "combine": self.span_check_combine,
            "length_strata": tuple(self.span_check_length_strata),
        }

    @model_validator(mode="before")
    @classmethod
    def _certify_k_and_backend(cls, data: Any) -> Any:
        """``certify`` gets ``k`` and ``voters.backend`` from ``k`` and ``voter_backend``; a contradicting value
        in ``certify`` is an error."""
        if not isinstance(data, dict):
            return data
        certify = data.get("certify") or {}
        certify = certify.model_dump() if isinstance(certify, CertifyConfig) else dict(certify)
        if not isinstance(certify.get("voters") or {}, dict):
            return data  # CertifyConfig's validation names the bad value
        k = data.get("k", cls.model_fields["k"].default)
        backend = data.get("voter_backend", cls.model_fields["voter_backend"].default)
        voters = dict(certify.get("voters") or {})
        if voters.get("backend", backend) != backend:
            raise ValueError(
                f"certify.voters.backend ({voters['backend']!r}) contradicts voter_backend ({backend!r}); set voter_backend only"
            )
        if certify.get("k", k) != k:
            raise ValueError(f"certify.k ({certify['k']!r}) contradicts k ({k!r}); set k only")
        return {**data, "certify": {**certify, "k": k, "voters": {**voters, "backend": backend}}}

    @model_validator(mode="after")
    def _check(self) -> "ServiceSettings":
        if self.voter_actors > self.k:
            raise ValueError(f"voter_actors ({self.voter_actors}) must be <= k ({self.k})")
        if self.span_check_combine == "joint" and self.certify.fuzzing.num_spans < 2:
            raise ValueError(
                "span_check_combine: joint transplants the spans of T(x') together and needs certify.fuzzing.num_spans "
                f">= 2, got {self.certify.fuzzing.num_spans}"
            )
        if self.span_check_length_strata:
            try:
                check_edges(self.span_check_length_strata)
            except ConfigError as e:
                raise ValueError(str(e).replace("transplant: length_strata", "span_check_length_strata")) from None
            if self.span_check_threshold is not None:
                raise ValueError(
                    "span_check_length_strata calibrates one threshold per span-length stratum; unset span_check_threshold"
                )
        check_sequential_limits(self.certify, self, "certify")
        return self

    def actor_options(self, fuzz: bool = False) -> dict[str, Any]:
        """Ray options of a voter shard (or, with ``fuzz``, a fuzzing worker)."""
        opts: dict[str, Any] = {"num_cpus": self.num_cpus_per_actor, "max_restarts": self.max_restarts, "max_task_retries": -1}
        gpus = self.num_gpus_per_actor if not fuzz or self.num_gpus_per_fuzz_actor is None else self.num_gpus_per_fuzz_actor
        if gpus > 0:
            opts["num_gpus"] = gpus
            opts["scheduling_strategy"] = "SPREAD"  # voters spread over the GPUs of the cluster
        return opts


def check_sequential_limits(cfg: CertifyConfig, settings: "ServiceSettings", where: str) -> None:
    """Raise ValueError when ``cfg``'s n_max or target_radius exceed the deployment's limits; ``where`` names
    the source of the values in the message (``options``, ``user_config``, ``certify``)."""
    if cfg.n_max is not None and cfg.n_max > settings.max_n_max:
        raise ValueError(f"{where}.n_max = {cfg.n_max} exceeds this deployment's max_n_max = {settings.max_n_max}")
    if cfg.target_radius is not None and cfg.target_radius > settings.max_target_radius:
        raise ValueError(
            f"{where}.target_radius = {cfg.target_radius} exceeds this deployment's max_target_radius = "
            f"{settings.max_target_radius}"
        )


RECONFIGURABLE = (
    "alpha",
    "budget",
    "omega_m",
    "omega_h",
    "max_distance",
    "span_rate",
    "n_max",
    "target_radius",
    "target_kind",
    "round_growth",
    "futility",
)
"""Fields of a Serve ``user_config``: they change the router's certify settings without reloading any model."""


def apply_user_config(base: CertifyConfig, settings: ServiceSettings, user_config: dict[str, Any] | None) -> CertifyConfig:
    """``base`` with the :data:`RECONFIGURABLE` fields of ``user_config`` applied (``budget`` is the fuzzing
    budget, the :class:`~frs_ray.config.RandomizeConfig` fields the randomization's, the rest CertifyConfig fields).

    ``n_max`` / ``target_radius`` obey the deployment's ``max_n_max`` / ``max_target_radius``; ``n_max: null``
    (with ``target_radius: null``) is the fixed protocol. Raises ValueError, naming the field, for unknown fields,
    out-of-range values or combinations CertifyConfig rejects, and values over the deployment's limits.
    """
    unknown = set(user_config or {}) - set(RECONFIGURABLE)
    if unknown:
        raise ValueError(f"user_config: unknown fields {sorted(unknown)}; allowed: {sorted(RECONFIGURABLE)}")
    cfg = base.model_dump()
    for key, value in (user_config or {}).items():
        if key == "budget":
            cfg["fuzzing"]["budget"] = value
        elif key in RandomizeConfig.model_fields:
            cfg["randomize"][key] = value
        else:
            cfg[key] = value
    try:
        new = build(CertifyConfig, cfg)
    except ConfigError as exc:
        raise ValueError(f"user_config: {exc}") from None
    check_sequential_limits(new, settings, "user_config")
    return new


def placement(k: int, shards: int) -> list[list[int]]:
    """Voters of each shard: shard r holds {k' : k' mod R == r}, so any K' <= K uses every shard evenly."""
    return [[v for v in range(k) if v % shards == r] for r in range(shards)]
