"""Ray actors of the FRS service: voter shards (Eq. 5) and fuzzing workers (Sec. 4.3).

Each actor loads the checkpoint itself and rebuilds what it needs from (checkpoint, seed k): a voter shard
holds voters {k : k mod R == r}; a fuzzing worker holds the centre model Clip_rho(theta) and runs MCTS
fuzzing plus fuzzed randomization. Both are deterministic functions of their inputs, so a restarted actor
(``max_restarts``) that re-runs a retried call (``max_task_retries``) returns exactly the same votes.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import ray

from ..config import CertifyConfig
from ..runtime import configure_process


class VoterShard:
    """Voters ``voter_ids`` of the ensemble in one voter pool; ``vote`` scores all its jobs in one pool call.

    With ``voters["backend"] == "vllm"`` the pool is one vLLM engine in this actor (on its GPU when the actor has
    one); the torch copy of the checkpoint then stays on the CPU, as the source of the centre weights."""

    def __init__(
        self,
        checkpoint: str,
        voter_ids: Sequence[int],
        k: int,
        seed: int,
        device: str | None = None,
        torch_threads: int | None = None,
        voters: dict[str, Any] | None = None,
    ) -> None:
        # an actor is a process: set it up (offline, quiet, torch threads; the vLLM engine's variables)
        configure_process(threads=torch_threads or None, engine=(voters or {}).get("backend") == "vllm")
        from ..certify.smooth import FRSClassifier

        cfg = CertifyConfig(k=k, seed=seed, fuzz=False, voters=voters or {})
        if cfg.voters.backend == "vllm" and device is None:
            device = "cpu"  # the torch model only supplies the centre and tokenizer; the GPU is the engine's
        # the pool materialises its voters now (resident noise), not on the first request
        self.clf = FRSClassifier.from_checkpoint(checkpoint, cfg, device=device, voter_ids=list(voter_ids))
        self.voter_ids = set(self.clf.pool.voter_ids)
        self.calls = 0  # vote() calls served since the actor started (the service's batching is measured on it)

    def vote(self, jobs: Sequence[tuple[int, str]]) -> list[int]:
        """Predicted label for each (voter k, text) job; every k must belong to this shard."""
        wrong = {k for k, _ in jobs} - self.voter_ids
        if wrong:
            raise ValueError(f"voters {sorted(wrong)} are not hosted by this shard")
        self.calls += 1
        return self.clf.vote_labels(jobs)

    def vote_calls(self) -> int:
        """Number of :meth:`vote` calls since the actor (re)started."""
        return self.calls

    def describe(self) -> dict[str, Any]:
        """The shard's voter pool (implementation, noise mode, hosted voters, resident bytes)."""
        return {**self.clf.pool.describe(), "voter_ids": sorted(self.voter_ids), "pid": os.getpid()}

    def pid(self) -> int:
        return os.getpid()


class FuzzWorker:
    """The centre model; ``prepare`` runs MCTS fuzzing and draws the randomized texts of every vote."""

    def __init__(
        self,
        checkpoint: str,
        device: str | None = None,
        torch_threads: int | None = None,
        span_check: dict[str, Any] | None = None,
    ) -> None:
        configure_process(threads=torch_threads or None)  # an actor is a process: set it up
        from ..certify.smooth import FRSClassifier

        self.clf = FRSClassifier.from_checkpoint(checkpoint, CertifyConfig(k=1), device=device, voter_ids=None)
        if span_check is not None:
            # ServiceSettings.span_check_options(); the transplant check queries this worker's centre model, so the
            # check is built (and calibrated on clean data) once the model is loaded
            from ..fuzzing.checks import build_span_check

            self.clf.span_filter = build_span_check(self.clf, checkpoint=checkpoint, device=device, **span_check)

    def prepare(self, texts: Sequence[str], config: dict[str, Any]) -> list:
        from ..certify.smooth import FRSClassifier

        cfg = CertifyConfig.model_validate(config)
        if cfg != self.clf.config:
            self.clf = FRSClassifier(self.clf.backend, None, cfg, self.clf.label_names, span_filter=self.clf.span_filter)
        return self.clf.prepare(list(texts))

    def pid(self) -> int:
        return os.getpid()


def remote_voter_shard(**options: Any):
    return ray.remote(VoterShard).options(**options)


def remote_fuzz_worker(**options: Any):
    return ray.remote(FuzzWorker).options(**options)
