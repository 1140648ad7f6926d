"""Request and response models of the FRS service, shared by the router and the Python client.

Each result is the library's own :class:`frs_ray.certify.certificate.Certificate` (the same type
``FRSClassifier.certify`` returns and ``frs certify`` writes), not a copy of it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ..certify.certificate import Certificate
from ..config import Alpha, Budget, RadiusKind, StrictConfig, TargetRadius, VoteCount, Voters


class ClassifyOptions(StrictConfig):
    """Per-request settings, of the value types :class:`~frs_ray.config.CertifyConfig` declares for the same
    fields; each is also bounded by the deployment's limits (checked by the router), and the merged settings are
    validated as a CertifyConfig."""

    k: Voters | None = Field(None, description="voters K (at most the deployment's K)")
    budget: Budget | None = Field(None, description="MCTS budget in model queries (at most the deployment's max_budget)")
    alpha: Alpha | None = Field(None, description="1 - confidence of the Clopper-Pearson bound")
    n_max: VoteCount | None = Field(
        None,
        description="sequential CERTIFY: most estimation votes per text, spent in "
        "rounds until the target is met or out of reach (at most the deployment's "
        "max_n_max; at least the first round's n_estimate votes); omitted: the "
        "deployment's setting",
    )
    target_radius: TargetRadius | None = Field(
        None,
        description="sequential CERTIFY: keep voting until the "
        "target_kind radius reaches this many tokens (at most the deployment's "
        "max_target_radius; needs n_max, from the request or the deployment)",
    )
    target_kind: RadiusKind | None = Field(
        None, description="which radius target_radius means (default: the deployment's, normally conditional)"
    )
    return_spans: bool = Field(True, description="include the vulnerable spans in each result")


class ClassifyRequest(StrictConfig):
    texts: list[str] = Field(..., min_length=1, description="texts to classify")
    options: ClassifyOptions = Field(default_factory=ClassifyOptions)


class ClassifyResponse(BaseModel):
    """The answer to ``POST /v1/classify``: one :class:`~frs_ray.certify.certificate.Certificate` per text, in order
    (field for field what ``frs certify`` writes; spans empty when the request asked for none)."""

    request_id: str
    results: list[Certificate]
    timings: dict[str, float]


class InfoResponse(BaseModel):
    model: str = Field(
        description="the pre-trained model the checkpoint was fine-tuned from: its name or folder name (never a path)"
    )
    checkpoint: str = Field(description="the served checkpoint's folder name (never a path)")
    checkpoint_sha256: str = Field(
        description="sha256 of the checkpoint folder's content (every file's relative "
        "path, size and bytes; frs_ray.serving.router.checkpoint_digest)"
    )
    labels: list[str]
    k: int
    sigma: float
    top_h: int
    budget: int
    max_budget: int
    alpha: float
    omega_m: float
    omega_h: float
    max_distance: float
    span_rate: str = Field("equal_mass", description="how omega_H is set under a large T(x') (RandomizeConfig.span_rate)")
    n_select: int
    n_estimate: int
    n_max: int | None = Field(None, description="sequential CERTIFY's most estimation votes per text (null: fixed)")
    target_radius: int | None = None
    target_kind: str = "conditional"
    round_growth: float = 2.0
    futility: float = 0.05
    max_n_max: int = Field(0, description="largest n_max a request may ask for")
    max_target_radius: int = Field(0, description="largest target_radius a request may ask for")
    seed: int
    voter_actors: int
    fuzz_actors: int
    voters_per_actor: list[list[int]]
    max_texts_per_request: int
    max_chars_per_text: int
    span_check: str = "none"
    voter_pool: dict[str, Any] = Field(
        default_factory=dict,
        description="how the voters run: backend (torch "
        "or vllm), implementation (stacked, loop or vllm), noise (resident, per_batch or "
        "regenerate), device, voter_definition, shards (each voter shard's "
        "voter ids, device, pid) and, for vllm, the engine settings",
    )


class ErrorResponse(BaseModel):
    error: str
    request_id: str | None = None
    status: Literal["error"] = "error"
