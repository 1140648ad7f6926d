"""Biphased model parameter smoothing (BMPS), Sec. 4.2 of the FRS paper, Eq. 4 and Eq. 5.

Clip_rho (the paper names it, but does not define it). Decision: a per-tensor L2 projection relative to the
pre-trained weights,

    Clip_rho(theta)_t = theta_t * min(1, rho * ||theta^P_t|| / ||theta_t||),

for every smoothed tensor t, where theta^P_t is that tensor at the start of fine-tuning (the downloaded
checkpoint; for a freshly initialised head, its initial value). A tensor whose reference norm is 0 (e.g. a
zero-initialised bias) is not clipped. It is scale-aware (LayerNorm gains near 1, biases near 0, and weights
near 0.05 each get their own bound), idempotent, and the identity while fine-tuning stays within
rho x the pre-trained norm. The reference norms are saved with the checkpoint so any process can rebuild
Clip_rho(theta) exactly.

Voter noise. eps_k is a Gaussian N(0, sigma^2) draw over the smoothed tensors, generated on the CPU by a
torch generator seeded with ``voter_seed(seed, k)``: voter k is the pair (checkpoint, k) and is rebuilt
bit-identically in any process, so the K copies are never stored.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from .layers import SmoothedParameters


def voter_seed(seed: int, k: int) -> int:
    """A 63-bit seed for voter ``k`` derived from the ensemble seed (stable across processes and machines)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, (int(seed) >> 32) & 0xFFFFFFFF, int(k), 0x5F52]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def voter_noise(shapes: Sequence[torch.Size], seed: int, k: int, sigma: float) -> list[torch.Tensor]:
    """eps_{k, top-H} of Eq. 5: one N(0, sigma^2) tensor per smoothed parameter, from ``(seed, k)``."""
    gen = torch.Generator(device="cpu").manual_seed(voter_seed(seed, k))
    return [torch.randn(tuple(shape), generator=gen, dtype=torch.float32) * sigma for shape in shapes]


def clip_rho(tensor: torch.Tensor, reference_norm: float, rho: float) -> torch.Tensor:
    """Clip_rho of Eq. 4 and Eq. 5 for one tensor (see the module docstring for the definition)."""
    if rho <= 0:
        raise ConfigError(f"rho must be > 0, got {rho}")
    if reference_norm <= 0:
        return tensor
    norm = float(torch.linalg.vector_norm(tensor.detach().float()))
    bound = rho * reference_norm
    if norm <= bound or norm == 0.0:
        return tensor
    return tensor * (bound / norm)


def reference_norms(model: nn.Module, selection: SmoothedParameters) -> dict[str, float]:
    """||theta^P_t|| for every smoothed tensor: the scale Clip_rho is relative to."""
    return {n: float(torch.linalg.vector_norm(t.detach().float())) for n, t in zip(selection.names, selection.tensors(model))}


@torch.no_grad()
def apply_clip_(model: nn.Module, selection: SmoothedParameters, norms: dict[str, float], rho: float) -> None:
    """Replace every smoothed tensor by its Clip_rho in place."""
    for name, t in zip(selection.names, selection.tensors(model)):
        t.copy_(clip_rho(t, norms.get(name, 0.0), rho))


@torch.no_grad()
def finetune_noise_step(
    model: nn.Module,
    selection: SmoothedParameters,
    norms: dict[str, float],
    rho: float,
    sigma: float,
    generator: torch.Generator,
) -> None:
    """Eq. 4, literal: after the optimizer step, theta^i = Clip_rho(theta^i) + eps^i_{top-H}.

    The noise is kept in the weights, so over I iterations it accumulates to std sigma * sqrt(I).
    """
    for name, t in zip(selection.names, selection.tensors(model)):
        clipped = clip_rho(t, norms.get(name, 0.0), rho)
        noise = torch.randn(t.shape, generator=generator, dtype=torch.float32).to(t.device, t.dtype) * sigma
        t.copy_(clipped + noise)


@contextmanager
def perturbed(model: nn.Module, selection: SmoothedParameters, sigma: float, generator: torch.Generator) -> Iterator[None]:
    """Variant of Eq. 4 used by default: fresh noise for one forward/backward pass, then the exact weights back.

    Inside the block the smoothed tensors hold theta + eps (eps fresh each call); on exit they hold theta again,
    so the gradient computed at the noisy point is applied to the un-noised weights. This minimises
    E_eps[loss(theta + eps)], the expected loss of the voters of Eq. 5, and the noise never accumulates.
    """
    tensors = selection.tensors(model)
    saved = [t.detach().clone() for t in tensors]
    with torch.no_grad():
        for t in tensors:
            t.add_(torch.randn(t.shape, generator=generator, dtype=torch.float32).to(t.device, t.dtype) * sigma)
    try:
        yield
    finally:
        with torch.no_grad():
            for t, s in zip(tensors, saved):
                t.copy_(s)


class VoterEnsemble:
    """The K smoothed voters of Eq. 5 over one torch model, materialised one at a time.

    On construction the smoothed tensors are replaced by Clip_rho(theta^I) (the centre). ``with
    ensemble.voter(k):`` turns the model into voter k = Clip_rho(theta^I) + eps_k for the block and restores
    the centre after it. With ``cache_noise=True`` the K noise tensors are kept in memory after their first use
    (K x |top-H| floats) instead of being regenerated; either way the voter is the same.
    """

    def __init__(
        self,
        model: nn.Module,
        selection: SmoothedParameters,
        k: int,
        sigma: float,
        seed: int,
        norms: dict[str, float] | None = None,
        rho: float = 1.5,
        cache_noise: bool = False,
    ) -> None:
        if k < 1:
            raise ConfigError(f"K (number of voters) must be >= 1, got {k}")
        if sigma < 0:
            raise ConfigError(f"sigma must be >= 0, got {sigma}")
        self.model, self.selection, self.k, self.sigma, self.seed = model, selection, k, sigma, seed
        if norms is not None:
            apply_clip_(model, selection, norms, rho)
        self._tensors = selection.tensors(model)
        self._centre = [t.detach().clone() for t in self._tensors]
        self._cache: dict[int, list[torch.Tensor]] | None = {} if cache_noise else None

    def noise(self, k: int) -> list[torch.Tensor]:
        if not 0 <= k < self.k:
            raise ConfigError(f"voter index {k} out of range 0..{self.k - 1}")
        if self._cache is not None and k in self._cache:
            return self._cache[k]
        eps = voter_noise([t.shape for t in self._tensors], self.seed, k, self.sigma)
        if self._cache is not None:
            self._cache[k] = eps
        return eps

    @contextmanager
    def voter(self, k: int) -> Iterator[nn.Module]:
        """Make the model voter ``k`` for the duration of the block."""
        eps = self.noise(k)
        with torch.no_grad():
            for t, c, e in zip(self._tensors, self._centre, eps):
                t.copy_(c + e.to(t.device, t.dtype))
        try:
            yield self.model
        finally:
            with torch.no_grad():
                for t, c in zip(self._tensors, self._centre):
                    t.copy_(c)
