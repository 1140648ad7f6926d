"""Typed settings for every stage of FRS.

Each config is a pydantic model that rejects unknown fields (a typo is an error, not a silent default) and
range-checks its values. Defaults follow the paper (Sec. 5.1 and Appendix B.2.4): K=20 voters, sigma=0.01,
H=10 (clamped to the model's depth), alpha=0.05, MCTS budget 10. Settings the paper leaves open
(omega_M, omega_H, Lambda, C, rho, learning rate on MiniLM) carry the choice made here in their help text.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError
from .looks import geometric_sizes

C = TypeVar("C", bound=BaseModel)
MutationOp = Literal["insertion", "deletion", "substitution", "transposition"]

# Value types of the certify settings that a service request may also set (frs_ray.serving.schemas.ClassifyOptions
# declares its options with these, so a request and `frs certify` accept the same values).
Voters = Annotated[int, Field(ge=1, le=10_000)]
"""A number of smoothed voters K."""
Budget = Annotated[int, Field(ge=0, le=10_000)]
"""An MCTS budget in model queries."""
Alpha = Annotated[float, Field(gt=0, lt=1)]
"""1 - confidence level of a Clopper-Pearson bound."""
VoteCount = Annotated[int, Field(ge=1, le=1_000_000)]
"""A number of votes (n_estimate, n_select, n_max)."""
TargetRadius = Annotated[int, Field(ge=0, le=10_000)]
"""A sequential target radius in tokens."""
RadiusKind = Literal["conditional", "unconditional"]
"""Which radius of Theorem 1: omega_H inside T(x') (conditional) or omega_L anywhere (unconditional)."""


class StrictConfig(BaseModel):
    """The base of every settings model of the project (core, attacks, defenses, evaluation, service, Tune).

    Unknown fields are rejected (a typo is an error naming the key, never a silent default), instances are frozen
    and defaults are validated like given values.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class MutationWeights(StrictConfig):
    """Relative probabilities of the four Damerau-Levenshtein operations of the mutation set M."""

    insertion: float = Field(0.1, ge=0, description="weight of inserting a filler token before the token")
    deletion: float = Field(0.4, ge=0, description="weight of deleting the token")
    substitution: float = Field(0.4, ge=0, description="weight of replacing the token by the filler token")
    transposition: float = Field(0.1, ge=0, description="weight of swapping the token with its neighbour")

    @model_validator(mode="after")
    def _not_all_zero(self) -> "MutationWeights":
        if self.total() <= 0:
            raise ValueError("at least one mutation weight must be positive")
        return self

    def total(self) -> float:
        return self.insertion + self.deletion + self.substitution + self.transposition

    def as_items(self) -> list[tuple[str, float]]:
        return [(op, getattr(self, op) / self.total()) for op in ("insertion", "deletion", "substitution", "transposition")]

    def destroy_fraction(self) -> float:
        """Share of mutations that remove the token itself (deletion or substitution).

        Insertion and transposition keep the original token in the text, so only this share of the
        Bernoulli(omega) draws counts towards "the trigger is randomized" in Theorem 1.
        """
        return (self.deletion + self.substitution) / self.total()


class SmoothingConfig(StrictConfig):
    """Biphased model parameter smoothing (Sec. 4.2, Eq. 4-5)."""

    sigma: float = Field(0.01, ge=0, le=1, description="std of the Gaussian parameter noise (paper: 0.01)")
    top_h: int = Field(
        10,
        ge=1,
        description="number of transformer blocks next to the output that get noise (paper: 10); clamped to the model's depth; everything after the stack (final norm, head) is included, a new head unless new_head is 'exact'",
    )
    rho: float = Field(
        1.5, gt=0, description="Clip_rho: each smoothed tensor's L2 norm is capped at rho times its pre-trained norm"
    )
    finetune_mode: Literal["perturb", "accumulate", "none"] = Field(
        "perturb",
        description="Eq. 4 in the fine-tuning phase. 'accumulate' is the literal Eq. 4 (noise added to the weights every "
        "iteration and kept, so it accumulates); 'perturb' draws fresh noise for each step's forward/backward pass "
        "and applies the gradient to the un-noised weights (trains for E_eps[loss(theta + eps)], the inference-phase "
        "distribution); 'none' disables the fine-tuning phase.",
    )
    new_head: Literal["smoothed", "exact"] = Field(
        "smoothed",
        description="'smoothed' (default, the paper): every parameter after the block stack gets Eq. 4-5's noise and "
        "Clip_rho, the classification head included. 'exact': the parameters the pre-trained folder does not carry "
        "(the classification head this fine-tune initializes; transformers' missing keys) are trained without noise "
        "and are the same in every voter. Decision: a backdoor planted in pre-training cannot live in weights the "
        "pre-trained model does not have, so their noise only costs accuracy; a head that came with the downloaded "
        "checkpoint is not new and stays smoothed",
    )
    data_noise: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="per-token mutation probability of the randomized fine-tuning data D_F + eps of Eq. 3: each training "
        "text is re-randomized at every step with the mutation set M (FTR's operations and filler). 0 (default) is the "
        "paper's BMPS, which smooths parameters instead of data. Decision: an opt-in extension, used only by the "
        "evaluation's noise-aware study; it changes the smoothed fine-tune only, never the victim's plain model",
    )

    @model_validator(mode="after")
    def _noise_needs_smoothing(self) -> "SmoothingConfig":
        if self.data_noise > 0 and self.finetune_mode == "none":
            raise ValueError(
                "data_noise is part of the smoothed fine-tune; it needs finetune_mode 'perturb' or 'accumulate', not 'none'"
            )
        return self


class LoraConfig(StrictConfig):
    """LoRA adapters for fine-tuning (App. B.2.4 for LLaMA3-8B). The saved checkpoint holds the merged weights."""

    rank: int = Field(8, ge=1, le=1024, description="adapter rank r (paper: 8)")
    alpha: float = Field(16, gt=0, description="LoRA scaling alpha (paper: 16); the update is (alpha / r) B A")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: tuple[str, ...] = Field(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        description="linear layers that get adapters (Llama names: attention q/k/v/o and the MLP projections)",
    )
    head_learning_rate: float | None = Field(
        None,
        gt=0,
        le=1,
        description="AdamW learning rate of the fully trained head (the new classification layer and the final norm); "
        "None: the fine-tune's learning_rate. A new head starts at the model's initializer scale and moves little "
        "at an adapter's rate",
    )


class FinetuneConfig(StrictConfig):
    """Fine-tuning of a (possibly backdoored) pre-trained model on downstream data (Appendix B.2.4)."""

    model: str = Field("minilm", description="'minilm' (the packaged all-MiniLM-L6-v2) or a local model folder")
    data: str = Field("sst2", description="dataset name in the data folder, a local .tsv/.csv/.jsonl file, or hf:owner/name")
    data_dir: str | None = Field(None, description="data folder (default: $FRS_DATA_DIR, then ../shared/data)")
    epochs: float = Field(3, gt=0, le=100, description="training epochs (paper: 3); fractions allowed")
    batch_size: int = Field(32, ge=1, le=4096, description="mini-batch size (paper: 32)")
    learning_rate: float = Field(
        5e-5, gt=0, le=1, description="AdamW learning rate (paper: 2e-5 on BERT; 5e-5 here because MiniLM-L6 is small)"
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (paper: 0.01)")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="linear warm-up share of the steps (paper: 0.1)")
    max_length: int = Field(128, ge=8, le=8192, description="maximum tokens per text (paper: 128); longer texts are rejected")
    max_train_examples: int | None = Field(None, ge=1, description="train on a seeded random subset of this size")
    seed: int = Field(42, description="seed of head init, data order and fine-tuning noise")
    smoothing: SmoothingConfig = Field(default_factory=SmoothingConfig)
    lora: LoraConfig | None = Field(
        None,
        description="LoRA fine-tuning (App. B, LLaMA3-8B: rank 8, alpha 16, lr 1e-4 "
        "on q/k/v/o and the MLP projections; the head trained fully); None: every "
        "parameter is trained",
    )


class FuzzConfig(StrictConfig):
    """MCTS vulnerable-area identification (Sec. 4.3.1, Eq. 6-9)."""

    budget: Budget = Field(10, description="MCTS iterations; each is exactly one (batched) model query (paper: 10)")
    exploration: float = Field(1.0, ge=0, description="UCB exploration constant C of Eq. 6")
    rollouts: int = Field(1, ge=1, le=64, description="mutated variants simulated per new node in each query")
    num_spans: int = Field(1, ge=1, le=16, description="how many top-scored segments form T(x')")
    disjoint_spans: bool = Field(
        False,
        description="T(x') takes the num_spans best segments that share no token with a better one (the search "
        "tree's nodes nest: without this the top segments are often one area and its parent); same as the top "
        "segments when num_spans is 1",
    )
    mutations: MutationWeights = Field(
        default_factory=lambda: MutationWeights(insertion=0.05, deletion=0.5, substitution=0.4, transposition=0.05),
        description="weights of M in simulations. Decision: the search looks for spans whose removal moves the "
        "output, so deletion and substitution dominate; insertion and transposition stay in M with small weight "
        "(they leave a trigger in place, and a simulation spent on them scores ~0 for every segment)",
    )


class RandomizeConfig(StrictConfig):
    """Fuzzed text randomization (Sec. 4.3.2, Eq. 10-14)."""

    omega_m: float = Field(
        0.15, ge=0, le=1, description="uniform per-token mutation probability omega_M that FTR keeps on average"
    )
    omega_h: float = Field(
        0.9,
        ge=0,
        le=1,
        description="target mutation probability inside T(x'); lowered if T(x') is too large to keep the average at omega_M",
    )
    max_distance: float = Field(
        0.5, ge=0, le=1, description="Lambda: bound on the normalized token-level Damerau-Levenshtein distance (Eq. 10)"
    )
    max_redraws: int = Field(
        100, ge=1, le=100_000, description="draws before falling back to the unmodified text when Lambda cannot be met"
    )
    mutations: MutationWeights = Field(default_factory=MutationWeights)
    span_mutations: MutationWeights | None = Field(
        None,
        description="weights of the mutation set M for tokens inside T(x') (an extension, not the paper's: e.g. "
        "deletion and substitution only, so that every draw of a span token removes it and a trigger in T(x') "
        "survives in no vote at omega_h 1); None: `mutations` everywhere, as in the paper",
    )
    span_rate: Literal["equal_mass", "fixed"] = Field(
        "equal_mass",
        description="how omega_H is set (Eq. 11): 'equal_mass' (the paper's) keeps the expected number of mutated "
        "tokens at L omega_M, lowering omega_H when T(x') is large; 'fixed' (an extension, not the paper's) keeps "
        "omega_H as set however large T(x') is (omega_L = what is left of the mass, at least 0) and widens Lambda by "
        "T(x')'s share of the text, so that at omega_H 1 with span_mutations removing every drawn token a kept span "
        "survives in no vote",
    )
    mutation_level: Literal["token", "character"] = Field(
        "token",
        description="what a drawn token's mutation edits: 'token' applies the DL operation to the token sequence "
        "(filler insertion/substitution, deletion, swap with a neighbour); 'character' applies it to the token's spelling "
        "(one character inserted, deleted, replaced or swapped; see frs_ray.text.edits)",
    )

    def destroy_fraction(self) -> float:
        """Share of a drawn token's mutations that count as randomizing it in Theorem 1: deletion + substitution
        at token level (see :meth:`MutationWeights.destroy_fraction`); 1 at character level, where every edit changes
        the token's spelling (assuming a trigger whose spelling changed no longer fires)."""
        return 1.0 if self.mutation_level == "character" else self.mutations.destroy_fraction()

    def span_destroy_fraction(self) -> float:
        """:meth:`destroy_fraction` for tokens inside T(x'): that of ``span_mutations`` where set."""
        if self.mutation_level == "character" or self.span_mutations is None:
            return self.destroy_fraction()
        return self.span_mutations.destroy_fraction()

    def destroy_probabilities(self, omega_h: float, omega_l: float, span_tokens: int, length: int) -> tuple[float, float]:
        """Theorem 1's per-token randomization probability ``omega x d`` for the two radii of a text of ``length``
        tokens with ``span_tokens`` in T(x'): (conditional: a token inside T(x'), omega_H x d_span; unconditional:
        the smallest over all its tokens, min(omega_L x d, omega_H x d_span); with T(x') empty both use d, with T(x')
        the whole text both use d_span)."""
        outside = min(omega_l * self.destroy_fraction(), 1.0)
        if span_tokens <= 0:
            return min(omega_h * self.destroy_fraction(), 1.0), outside
        inside = min(omega_h * self.span_destroy_fraction(), 1.0)
        if span_tokens >= length:
            return inside, inside
        return inside, min(inside, outside)

    @model_validator(mode="after")
    def _order(self) -> "RandomizeConfig":
        if self.omega_h < self.omega_m:
            raise ValueError(f"omega_h ({self.omega_h}) must be >= omega_m ({self.omega_m})")
        return self


class VLLMEngineConfig(StrictConfig):
    """The vLLM engine of a vLLM voter pool (``frs_ray.smoothing.vllm_pool``): one engine per pool, one GPU or the CPU."""

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="engine and voter weights dtype; 'auto': float32 on the CPU, bfloat16 on a GPU"
    )
    max_model_len: int | None = Field(
        None,
        ge=8,
        le=131_072,
        description="longest sequence the engine accepts "
        "(default and minimum: the checkpoint's max_length, to which inputs are truncated)",
    )
    gpu_memory_utilization: float = Field(
        0.85, gt=0, le=1, description="GPU only: share of the GPU's memory the engine takes (weights, activations, KV cache)"
    )
    max_num_seqs: int = Field(256, ge=1, le=65_536, description="sequences the engine scores in one step")
    cpu_kvcache_space_gib: int = Field(
        1, ge=1, le=1024, description="CPU only: KV-cache GiB; $VLLM_CPU_KVCACHE_SPACE wins when it is set"
    )


class VoterPoolConfig(StrictConfig):
    """How the K voters run (``frs_ray.smoothing.pool``); a choice of speed and memory, never of the voters."""

    backend: Literal["torch", "vllm"] = Field(
        "torch",
        description="what runs the voters: 'torch' (the checkpoint's transformers model, edited or stacked in "
        "place) or 'vllm' (a vLLM engine per pool, voter k's weights written into it in place; decoder models with a "
        "sequence-classification head; needs the vllm or vllm-cpu package)",
    )
    implementation: Literal["auto", "loop", "stacked"] = Field(
        "auto",
        description="torch backend: 'stacked': every hosted voter in one pass over the jobs (the smoothed leaf "
        "modules apply each row's voter weights); 'loop': the reference, voter k written into the model in place, one "
        "pass per voter; 'auto': stacked. The vllm backend takes only 'auto'",
    )
    noise: Literal["auto", "resident", "per_batch", "regenerate"] = Field(
        "auto",
        description="where the voters' noise lives: 'resident' (built once, voters x |top-H| values), "
        "'per_batch' (stacked: rebuilt from the seeds once per call, as many voters at a time as memory allows), "
        "'regenerate' (loop and vllm: drawn again at every use, the slow reference); 'auto': resident when it takes at "
        "most memory_fraction of the device's free memory, else per_batch (stacked) or regenerate (loop, vllm)",
    )
    memory_fraction: float = Field(
        0.5, gt=0, le=1, description="share of the device's free memory that resident voter weights may take"
    )
    vllm: VLLMEngineConfig = Field(default_factory=VLLMEngineConfig, description="vllm backend: engine settings")

    @model_validator(mode="after")
    def _backend_options(self) -> "VoterPoolConfig":
        if self.backend == "vllm" and self.implementation != "auto":
            raise ValueError(
                f"implementation {self.implementation!r} belongs to the torch voter backend; the vllm backend takes 'auto'"
            )
        if self.backend == "vllm" and self.noise == "per_batch":
            raise ValueError(
                "noise 'per_batch' belongs to the stacked torch pool; the vllm backend takes 'resident', 'regenerate' or 'auto'"
            )
        return self


class CertifyConfig(StrictConfig):
    """Voting and certification (Eq. 3, Theorem 1, Corollary 1)."""

    k: Voters = Field(20, description="number of smoothed voters K of Eq. 5 (paper: 20)")
    n_estimate: VoteCount | None = Field(None, description="votes for the Clopper-Pearson estimate (default: K)")
    n_select: VoteCount | None = Field(None, description="separate votes that select the class (default: K)")
    alpha: Alpha = Field(0.05, description="1 - confidence level of the Clopper-Pearson bound (paper: 0.05)")
    seed: int = Field(0, description="seed of voter noise (eps_k from (seed, k)) and of text randomization")
    fuzz: bool = Field(True, description="run MCTS fuzzing; false gives uniform randomization with omega_M (the -FTR ablation)")
    batch_size: int = Field(64, ge=1, le=100_000, description="texts processed together")
    n_max: VoteCount | None = Field(
        None,
        description="sequential CERTIFY (frs_ray.certify.sequential): most estimation votes per text. They come in "
        "rounds, cumulative n_estimate, n_estimate x round_growth, ... up to n_max, with alpha split equally over the "
        "looks; a text stops as soon as its target is met or out of reach. None: the fixed protocol (n_estimate votes)",
    )
    target_radius: TargetRadius | None = Field(
        None,
        description="sequential only: keep voting until the target_kind radius reaches this many tokens (capped at "
        "that radius's own cap: |T(x')| for conditional, the text length for unconditional) or is out of reach within "
        "n_max; None or 0: stop as soon as the label is certified",
    )
    target_kind: RadiusKind = Field(
        "conditional", description="which radius target_radius refers to (omega_H inside T(x'), or omega_L anywhere)"
    )
    round_growth: float = Field(
        2.0,
        gt=1,
        le=16,
        description="sequential only: each look's cumulative votes are this "
        "many times the previous look's (the last look is n_max)",
    )
    futility: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="sequential only: level of the upper bound that stops a text whose target is out of reach "
        "within n_max (spends none of alpha: abstaining is never a false certificate); 0 stops only when no outcome of "
        "the remaining votes could reach it",
    )
    fuzzing: FuzzConfig = Field(default_factory=FuzzConfig)
    randomize: RandomizeConfig = Field(default_factory=RandomizeConfig)
    voters: VoterPoolConfig = Field(default_factory=VoterPoolConfig)

    @model_validator(mode="after")
    def _sequential(self) -> "CertifyConfig":
        if self.n_max is None:
            if self.target_radius is not None:
                raise ValueError("target_radius needs n_max (sequential CERTIFY); the fixed protocol has one look")
            return self
        if self.n_max < self.votes_estimate:
            raise ValueError(f"n_max ({self.n_max}) must be >= the first round's votes n_estimate ({self.votes_estimate})")
        try:
            geometric_sizes(self.votes_estimate, self.n_max, self.round_growth)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    @property
    def votes_estimate(self) -> int:
        return self.n_estimate if self.n_estimate is not None else self.k

    @property
    def votes_select(self) -> int:
        return self.n_select if self.n_select is not None else self.k


def deep_merge(base: dict, over: dict) -> dict:
    """``base`` updated by ``over``, recursing into nested dicts (the layering of defaults, files and flags)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def build(cls: type[C], data: dict) -> C:
    """Validate ``data`` into ``cls``; turn pydantic's report into one readable :class:`ConfigError`."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or cls.__name__
            msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"{where}: {msg} (got {err.get('input')!r})")
        raise ConfigError(f"invalid {cls.__name__}: " + "; ".join(lines)) from None
