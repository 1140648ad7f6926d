"""Voter pools: where the K smoothed voters of Eq. 5 live and how they vote.

A *job* is a pair (voter k, text). A :class:`VoterPool` hosts some of the K voters
theta_k = Clip_rho(theta^I) + eps_k (eps_k from :func:`frs_ray.smoothing.bmps.parameter_noise`) and returns,
for each job, voter k's class probabilities on the text. Everything above this module (the smoothed classifier,
``frs eval``, the Tune trial, the service's voter shards) votes only through this protocol, so nothing there
knows how a voter is made: by editing a torch module in place, by stacked weights, or inside a vLLM engine.

Implementations here (torch):

- :class:`LoopVoterPool` (``loop``): the reference. For each voter in the jobs, write centre + eps_k into the
  model, run that voter's texts in length-sorted batches, restore the centre exactly.
- :class:`StackedVoterPool` (``stacked``): all hosted voters in one pass. Every job text goes through the model
  once; the parameter-free and unsmoothed parts (embeddings, the bottom depth - H blocks) run once per text as in
  the centre model, and every smoothed leaf module (the linear layers and norms of the top-H blocks and the head)
  applies, to each row of the batch, the weights of that row's voter (rows sorted by voter, one matmul per voter
  segment). The voters' weights are stacked and resident, or, where memory does not allow it, rebuilt once per
  call from their seeds for the voters that call needs (``noise: per_batch``).

A third implementation runs the voters inside a vLLM engine (``voters.backend: vllm``,
:mod:`frs_ray.smoothing.vllm_pool`); :func:`pool_from_config` picks the pool a :class:`~frs_ray.config.VoterPoolConfig`
asks for.

Equalities (tested): both torch implementations give the same labels on the same jobs, except where a job's two
highest class probabilities are within floating-point rounding of each other, and probabilities within 1e-4.
"""

from __future__ import annotations

import types
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from .bmps import VOTER_DEFINITION, parameter_noise
from .layers import SmoothedParameters

Job = tuple[int, str]
ROWS_PER_SEGMENT = 8  # average rows per voter in a batch of unevenly assigned jobs


@runtime_checkable
class VoterPool(Protocol):
    """Hosts voters ``voter_ids`` of an ensemble of ``k``; scores (voter, text) jobs."""

    k: int
    num_labels: int

    @property
    def voter_ids(self) -> tuple[int, ...]: ...

    def vote_proba(self, jobs: Sequence[Job]) -> np.ndarray:
        """Class probabilities of voter k on each (k, text) job, shape ``(len(jobs), num_labels)``."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the pool is: implementation, noise mode, hosted voters, device, resident bytes."""
        ...


def vote_labels(pool: VoterPool, jobs: Sequence[Job]) -> list[int]:
    """Predicted label of voter k on each (k, text) job."""
    if not jobs:
        return []
    return [int(y) for y in pool.vote_proba(jobs).argmax(axis=1)]


@dataclass(frozen=True)
class VoterSpec:
    """What defines the K voters (Eq. 5): the smoothed tensors by name, sigma, the ensemble seed and K."""

    selection: SmoothedParameters
    k: int
    sigma: float
    seed: int

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"K (number of voters) must be >= 1, got {self.k}")
        if self.sigma < 0:
            raise ConfigError(f"sigma must be >= 0, got {self.sigma}")

    def hosted(self, voter_ids: Sequence[int] | None) -> tuple[int, ...]:
        """The sorted voter ids a pool hosts (``None``: all K), each checked to be in 0..K-1."""
        ids = tuple(sorted({int(v) for v in (range(self.k) if voter_ids is None else voter_ids)}))
        bad = [v for v in ids if not 0 <= v < self.k]
        if bad or not ids:
            raise ConfigError(f"voter ids {bad or list(ids)} are not in 0..{self.k - 1}")
        return ids


class _TorchPool:
    """Shared part of the torch pools: the backend (its model holds the centre), hosted voters, noise by name."""

    implementation = "?"

    def __init__(self, backend, spec: VoterSpec, voter_ids: Sequence[int] | None = None) -> None:
        self.backend, self.spec = backend, spec
        self.k, self.num_labels = spec.k, int(backend.num_labels)
        self._ids = spec.hosted(voter_ids)
        self.model: nn.Module = backend.torch_model
        params = dict(self.model.named_parameters())
        self.names = spec.selection.names
        self.tensors = [params[n] for n in self.names]
        self.centre = [t.detach() for t in self.tensors]  # the model holds the centre; a pool that edits it clones

    @property
    def voter_ids(self) -> tuple[int, ...]:
        return self._ids

    def _check_jobs(self, jobs: Sequence[Job]) -> None:
        wrong = sorted({int(k) for k, _ in jobs} - set(self._ids))
        if wrong:
            raise ConfigError(f"voters {wrong} are not hosted by this pool (it hosts {len(self._ids)} of K={self.k})")

    def noise(self, k: int, device: torch.device | None = None) -> list[torch.Tensor]:
        """eps_k for every smoothed tensor, in ``self.names`` order, drawn on ``device`` (default: the model's)."""
        if not 0 <= k < self.k:
            raise ConfigError(f"voter index {k} out of range 0..{self.k - 1}")
        dev = device or self.tensors[0].device
        return [parameter_noise(n, t.shape, self.spec.seed, k, self.spec.sigma, dev) for n, t in zip(self.names, self.tensors)]

    def voter_weights(self, k: int) -> list[torch.Tensor]:
        """theta_k = centre + eps_k for every smoothed tensor, in the model's dtype."""
        return [(c.float() + e).to(c.dtype) for c, e in zip(self.centre, self.noise(k, self.centre[0].device))]

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "torch",
            "implementation": self.implementation,
            "voters": len(self._ids),
            "k": self.k,
            "device": str(self.tensors[0].device),
            "voter_definition": VOTER_DEFINITION,
            "smoothed_parameters": int(sum(t.numel() for t in self.tensors)),
        }


class LoopVoterPool(_TorchPool):
    """Reference implementation: voter k is written into the model in place, its texts run, the centre restored.

    ``cache_noise`` keeps the hosted voters' weights after their first use (voters x |top-H| values; noise mode
    ``resident``) instead of regenerating them at every use (``regenerate``); either way voter k is the same.
    """

    implementation = "loop"

    def __init__(self, backend, spec: VoterSpec, voter_ids: Sequence[int] | None = None, cache_noise: bool = True) -> None:
        super().__init__(backend, spec, voter_ids)
        self.centre = [t.clone() for t in self.centre]
        self._cache: dict[int, list[torch.Tensor]] | None = {} if cache_noise else None

    def _weights(self, k: int) -> list[torch.Tensor]:
        if self._cache is not None and k in self._cache:
            return self._cache[k]
        w = self.voter_weights(k)
        if self._cache is not None:
            self._cache[k] = w
        return w

    @contextmanager
    def voter(self, k: int) -> Iterator[nn.Module]:
        """Make the model voter ``k`` for the duration of the block (the centre is restored exactly after it)."""
        w = self._weights(k)
        with torch.no_grad():
            for t, x in zip(self.tensors, w):
                t.copy_(x)
        try:
            yield self.model
        finally:
            with torch.no_grad():
                for t, c in zip(self.tensors, self.centre):
                    t.copy_(c)

    def vote_proba(self, jobs: Sequence[Job]) -> np.ndarray:
        self._check_jobs(jobs)
        out = np.empty((len(jobs), self.num_labels), dtype=np.float64)
        by_voter: dict[int, list[int]] = {}
        for j, (k, _) in enumerate(jobs):
            by_voter.setdefault(int(k), []).append(j)
        for k, idx in sorted(by_voter.items()):
            with self.voter(k):
                out[idx] = self.backend.predict_proba([jobs[j][1] for j in idx])
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "noise": "resident" if self._cache is not None else "regenerate"}


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attr = name.rpartition(".")
    return model.get_submodule(path), attr


class StackedVoterPool(_TorchPool):
    """All hosted voters in one pass over the jobs: each smoothed leaf module applies each row's voter weights.

    ``resident=True`` keeps the stacked weights of every hosted voter (voters x |top-H| values, built once);
    ``resident=False`` rebuilds them from their seeds once per :meth:`vote_proba` call, for the voters that call
    needs, ``voters_per_build`` voters at a time (bounding the memory to that many voters). The centre model is
    unchanged: outside :meth:`vote_proba` the patched modules run their own weights, so fuzzing on the same model
    sees Clip_rho(theta).
    """

    implementation = "stacked"

    def __init__(
        self,
        backend,
        spec: VoterSpec,
        voter_ids: Sequence[int] | None = None,
        resident: bool = True,
        voters_per_build: int | None = None,
    ) -> None:
        super().__init__(backend, spec, voter_ids)
        self.resident = resident
        self.voters_per_build = max(1, int(voters_per_build or len(self._ids)))
        # owning leaf modules of the smoothed tensors, each with the positions of its smoothed tensors
        modules: dict[int, tuple[nn.Module, dict[str, int]]] = {}
        self._linear_weights: set[int] = set()  # smoothed tensors stacked transposed ([voters, in, out])
        for i, name in enumerate(self.names):
            mod, attr = _owner(self.model, name)
            if any(True for _ in mod.children()) and any(p.numel() for c in mod.children() for p in c.parameters()):
                raise ConfigError(
                    f"stacked voters need every smoothed parameter on a leaf module; {name} is on a "
                    f"{type(mod).__name__} with sub-modules (use voters.implementation: loop)"
                )
            modules.setdefault(id(mod), (mod, {}))[1][attr] = i
            if isinstance(mod, nn.Linear) and attr == "weight":
                self._linear_weights.add(i)
        self._attrs: dict[int, dict[str, int]] = {}  # id(module) -> {parameter attribute: smoothed tensor index}
        if getattr(self.model, "_frs_voting", None) is None:
            self.model._frs_voting = [None]  # the stacked pool voting right now on this model (shared by its pools)
        self._voting: list = self.model._frs_voting
        self._segments: list[tuple[int, int, int]] | None = None  # (slot, start row, end row) while voting
        self._row_slots: torch.Tensor | None = None  # each row's slot while voting
        self._uniform: tuple[int, int, int] | None = None  # (first slot, end slot, rows each) when segments are equal
        self._stack: list[torch.Tensor] | None = None  # per smoothed tensor: [slots, *shape]
        self._slot_of: dict[int, int] = {}
        if resident:
            self._stack, self._slot_of = self._build(self._ids)
        for mod, attrs in modules.values():
            self._patch(mod, attrs)

    # ------------------------------------------------------------------ weights
    def _build(self, ids: Sequence[int]) -> tuple[list[torch.Tensor], dict[int, int]]:
        """Stacked voter weights ``[voters, *shape]`` per smoothed tensor, filled tensor by tensor (peak memory: the
        stack plus one tensor). Linear weights are stored transposed (``[voters, in, out]``, contiguous): batched
        matmuls read them without a transpose, measurably faster on small per-voter batches."""
        stack = []
        for i, (name, c) in enumerate(zip(self.names, self.centre)):
            shape = tuple(c.shape[::-1]) if i in self._linear_weights else tuple(c.shape)
            t = torch.empty((len(ids), *shape), dtype=c.dtype, device=c.device)
            for s, k in enumerate(ids):
                w = (c.float() + parameter_noise(name, c.shape, self.spec.seed, k, self.spec.sigma, c.device)).to(c.dtype)
                t[s].copy_(w.t() if i in self._linear_weights else w)
            stack.append(t)
        return stack, {k: s for s, k in enumerate(ids)}

    def resident_bytes(self) -> int:
        return int(sum(t.numel() * t.element_size() for t in self._stack)) if self.resident and self._stack else 0

    # ------------------------------------------------------------------ patched leaf forwards
    def _patch(self, mod: nn.Module, attrs: dict[str, int]) -> None:
        """Route ``mod``'s forward through :func:`_leaf_forward` (once per module, shared by every pool on the
        model: the pool that is voting at the moment, if any, supplies the weights)."""
        if getattr(mod, "_frs_voting", None) is None:
            mod.forward = types.MethodType(_leaf_forward, mod)
            mod._frs_voting = self._voting
            mod._frs_inside = False
        elif mod._frs_voting is not self._voting:
            raise ConfigError("a module is patched by voter pools of another model object")
        self._attrs[id(mod)] = attrs

    # ------------------------------------------------------------------ voting
    @torch.inference_mode()
    def vote_proba(self, jobs: Sequence[Job]) -> np.ndarray:
        self._check_jobs(jobs)
        out = np.empty((len(jobs), self.num_labels), dtype=np.float64)
        if self.resident:
            self._run(jobs, range(len(jobs)), self._stack, self._slot_of, out)
            return out
        needed = sorted({int(k) for k, _ in jobs})
        for g in range(0, len(needed), self.voters_per_build):
            group = needed[g : g + self.voters_per_build]
            stack, slot_of = self._build(group)
            self._run(jobs, [j for j, (k, _) in enumerate(jobs) if int(k) in slot_of], stack, slot_of, out)
            del stack
        return out

    def _batches(self, jobs: Sequence[Job], which: Sequence[int], slot_of: dict[int, int]) -> list[list[int]]:
        """Rows of each model call: jobs sorted by text length (equal texts together), so padding stays as small as
        in the centre model's own length-sorted batches. Where every voter has the same number of jobs, a batch
        holds a multiple of the voter count near the backend's batch size (equal segments: one batched matmul per
        layer, efficient even at a few rows per voter); otherwise at least ``ROWS_PER_SEGMENT`` rows per voter on
        average, so that each voter's own matmul is not starved."""
        bs = self.backend.batch_size
        counts: dict[int, int] = {}
        for j in which:
            counts[slot_of[int(jobs[j][0])]] = counts.get(slot_of[int(jobs[j][0])], 0) + 1
        order = sorted(which, key=lambda j: (len(jobs[j][1]), jobs[j][1], slot_of[int(jobs[j][0])]))
        n = len(counts)
        if len(set(counts.values())) == 1:  # equal segments run as one batched matmul: keep batches short
            size = max(n, (bs // n) * n)
        else:
            size = max(bs, ROWS_PER_SEGMENT * n)
        return [order[s : s + size] for s in range(0, len(order), size)]

    def _run(
        self, jobs: Sequence[Job], which: Sequence[int], stack: list[torch.Tensor], slot_of: dict[int, int], out: np.ndarray
    ) -> None:
        """Score jobs ``which`` with the stacked weights ``stack``, one model call per batch (rows sorted by voter
        inside each batch)."""
        prev, self._stack = self._stack, stack
        try:
            for rows in self._batches(jobs, which, slot_of):
                idx = sorted(rows, key=lambda j: slot_of[int(jobs[j][0])])
                slots = [slot_of[int(jobs[j][0])] for j in idx]
                segs, start = [], 0
                for r in range(1, len(slots) + 1):
                    if r == len(slots) or slots[r] != slots[start]:
                        segs.append((slots[start], start, r))
                        start = r
                enc = self.backend.encode([jobs[j][1] for j in idx])
                self._segments = segs
                self._row_slots = torch.tensor(slots, device=self.tensors[0].device)
                sizes = {b - a for _, a, b in segs}
                consecutive = all(segs[i + 1][0] == segs[i][0] + 1 for i in range(len(segs) - 1))
                self._uniform = (segs[0][0], segs[-1][0] + 1, sizes.pop()) if len(sizes) == 1 and consecutive else None
                self._voting[0] = self
                try:
                    logits = self.model(**enc).logits.float()
                finally:
                    self._segments = None
                    self._voting[0] = None
                out[idx] = torch.softmax(logits, dim=-1).cpu().numpy()
        finally:
            self._stack = prev

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "noise": "resident" if self.resident else "per_batch",
            "resident_bytes": self.resident_bytes(),
        }


def _leaf_forward(mod: nn.Module, *args, **kwargs):
    """Forward of a smoothed leaf module: its own weights (the centre) unless a stacked pool is voting, then each
    row segment with its voter's weights (``F.linear`` for linear layers, ``functional_call`` otherwise)."""
    cls_forward = type(mod).forward
    pool = mod._frs_voting[0]
    if pool is None or pool._segments is None or mod._frs_inside:
        return cls_forward(mod, *args, **kwargs)
    attrs = pool._attrs.get(id(mod))
    if attrs is None:
        return cls_forward(mod, *args, **kwargs)
    segs, stack = pool._segments, pool._stack
    x = args[0] if args else next(iter(kwargs.values()))
    rows = segs[-1][2]
    if x.shape[0] != rows:
        raise RuntimeError(
            f"stacked voters expect batch-first inputs of {rows} rows in {type(mod).__name__}, got shape {tuple(x.shape)}"
        )
    wi, bi = attrs.get("weight"), attrs.get("bias")
    if isinstance(mod, nn.Linear) and set(attrs) <= {"weight", "bias"}:
        uniform = pool._uniform  # equal rows per voter, consecutive slots: one batched matmul over views
        # linear weights are stacked transposed: [voters, in, out]
        if uniform is not None and wi is not None:
            s0, s1, per = uniform
            xb = x.reshape(s1 - s0, -1, x.shape[-1])
            w = stack[wi][s0:s1]
            y = torch.baddbmm(stack[bi][s0:s1].unsqueeze(1), xb, w) if bi is not None else torch.bmm(xb, w)
            if bi is None and mod.bias is not None:
                y = y + mod.bias
            return y.reshape(*x.shape[:-1], y.shape[-1])
        outs = []
        for s, a, b in segs:
            xs = x[a:b]
            w = stack[wi][s] if wi is not None else mod.weight.t()
            bias = stack[bi][s] if bi is not None else mod.bias
            y = xs.reshape(-1, xs.shape[-1]) @ w if bias is None else torch.addmm(bias, xs.reshape(-1, xs.shape[-1]), w)
            outs.append(y.reshape(*xs.shape[:-1], y.shape[-1]))
    elif _is_affine_norm(mod, attrs):
        # norm(x) * w + b with w, b per row: one pass of the norm with unit weight, then each row's voter weights
        unit = {n: torch.ones_like(p) if n == "weight" else torch.zeros_like(p) for n, p in mod.named_parameters()}
        mod._frs_inside = True
        try:
            y = torch.func.functional_call(mod, unit, args, kwargs)
        finally:
            mod._frs_inside = False
        shape = (rows,) + (1,) * (y.dim() - 2) + (y.shape[-1],)
        rs = pool._row_slots
        y = y * (stack[wi][rs] if wi is not None else mod.weight).view(shape).to(y.dtype)
        if bi is not None or getattr(mod, "bias", None) is not None:
            y = y + (stack[bi][rs] if bi is not None else mod.bias).view(shape).to(y.dtype)
        return y
    else:
        mod._frs_inside = True
        try:
            rest = args[1:] if args else ()
            outs = [
                torch.func.functional_call(mod, {n: stack[i][s] for n, i in attrs.items()}, (x[a:b], *rest)) for s, a, b in segs
            ]
        finally:
            mod._frs_inside = False
    return torch.cat(outs) if len(outs) > 1 else outs[0]


def _is_affine_norm(mod: nn.Module, attrs: dict[str, int]) -> bool:
    """LayerNorm and RMSNorm-style modules: output = normalize(x) * weight (+ bias), weight over the last dim."""
    if not (isinstance(mod, nn.LayerNorm) or type(mod).__name__.endswith("RMSNorm")):
        return False
    params = dict(mod.named_parameters())
    return set(params) <= {"weight", "bias"} and set(attrs) <= set(params) and all(p.dim() == 1 for p in params.values())


Implementation = Literal["auto", "loop", "stacked"]
NoiseMode = Literal["auto", "resident", "per_batch", "regenerate"]


def available_memory(device: torch.device) -> int:
    """Bytes free for new tensors on ``device`` (CUDA: the allocator's free memory; CPU: available RAM)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def make_voter_pool(
    backend,
    spec: VoterSpec,
    voter_ids: Sequence[int] | None = None,
    implementation: Implementation = "auto",
    noise: NoiseMode = "auto",
    memory_fraction: float = 0.5,
) -> VoterPool:
    """The pool for these voters. ``auto`` picks the stacked pool (one pass for all voters); its noise is
    resident when the hosted voters' weights take at most ``memory_fraction`` of the device's free memory, else
    rebuilt once per call. Noise is never regenerated per voter per batch unless ``noise: regenerate`` (loop only)
    asks for it."""
    if implementation == "auto":
        implementation = "stacked"
    n_hosted = spec.k if voter_ids is None else len(set(voter_ids))
    params = dict(backend.torch_model.named_parameters())
    first = params[spec.selection.names[0]]
    need = n_hosted * sum(params[n].numel() for n in spec.selection.names) * first.element_size()
    fits = need <= memory_fraction * available_memory(first.device)
    if implementation == "loop":
        if noise == "per_batch":
            raise ConfigError(
                "voters.noise 'per_batch' belongs to the stacked implementation; the loop pool takes "
                "'resident' (cached), 'regenerate' or 'auto'"
            )
        return LoopVoterPool(backend, spec, voter_ids, cache_noise=noise == "resident" or (noise == "auto" and fits))
    if implementation == "stacked":
        if noise == "regenerate":
            raise ConfigError(
                "voters.noise 'regenerate' belongs to the loop implementation; the stacked pool takes "
                "'resident', 'per_batch' or 'auto'"
            )
        resident = noise == "resident" or (noise == "auto" and fits)
        per_voter = max(1, need // max(1, n_hosted))
        per_build = max(1, int(memory_fraction * available_memory(first.device)) // per_voter)
        return StackedVoterPool(backend, spec, voter_ids, resident=resident, voters_per_build=per_build)
    raise ConfigError(f"unknown voter implementation {implementation!r}: expected auto, loop or stacked")


def pool_from_config(backend, spec: VoterSpec, voter_ids: Sequence[int] | None, config) -> VoterPool:
    """The pool that ``config`` (a :class:`frs_ray.config.VoterPoolConfig`) asks for: a torch pool
    (:func:`make_voter_pool`) or, with ``backend: vllm``, a :class:`frs_ray.smoothing.vllm_pool.VLLMVoterPool`
    whose engine loads ``backend``'s checkpoint and takes its centre from ``backend``'s model."""
    if config.backend == "vllm":
        from .vllm_pool import VLLMVoterPool

        n_hosted = spec.k if voter_ids is None else len(set(voter_ids))
        params = dict(backend.torch_model.named_parameters())
        need = n_hosted * sum(params[n].numel() for n in spec.selection.names) * 4
        fits = need <= config.memory_fraction * available_memory(torch.device("cpu"))
        resident = config.noise == "resident" or (config.noise == "auto" and fits)
        return VLLMVoterPool(backend, spec, voter_ids, engine=config.vllm, resident=resident)
    return make_voter_pool(backend, spec, voter_ids, config.implementation, config.noise, config.memory_fraction)
