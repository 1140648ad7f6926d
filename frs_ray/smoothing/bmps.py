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

Voter noise. eps_k is a Gaussian N(0, sigma^2) draw over the smoothed tensors. Each tensor has its own
generator, seeded with ``parameter_seed(seed, k, name)`` where ``name`` is the tensor's Hugging Face parameter
name. Voter k is therefore the triple (checkpoint, seed, k) and is rebuilt in any process, whatever order the
parameters are visited in, whichever subset of voters a process hosts, and however a backend stores the tensors
(vLLM fuses q/k/v into ``qkv_proj``: the draws are made per HF name and copied into the fused slices).
Equalities: on the same device type the draws are bit-identical across processes and machines (CPU: the
Mersenne-Twister generator, tested against stored values; CUDA: Philox, the same for every CUDA device). A CPU
draw and a CUDA draw for the same key come from different generators, so they are different samples of the same
distribution and the K voters of a GPU host are not those of a CPU host (the certificate's guarantee holds for
either: it only needs the voters fixed before the votes are drawn).
``VOTER_DEFINITION`` names this definition; caches of results that depend on voters include it in their keys.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from .layers import SmoothedParameters

VOTER_DEFINITION = "v2-keyed-by-name"
"""Version of the voter definition (how eps_k is drawn); v1 drew one CPU stream per voter over the tensors in order."""


def parameter_seed(seed: int, k: int, name: str) -> int:
    """A 63-bit seed for the noise of parameter ``name`` (its Hugging Face name) in voter ``k``."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, (int(seed) >> 32) & 0xFFFFFFFF, int(k), 0x5F53, *words])
    a, b = state.generate_state(2)
    return int((int(a) << 31) ^ int(b)) & ((1 << 63) - 1)


def parameter_noise(
    name: str, shape: Sequence[int], seed: int, k: int, sigma: float, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """eps_k of Eq. 5 restricted to one smoothed tensor: N(0, sigma^2) in float32, drawn on ``device``."""
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(parameter_seed(seed, k, name))
    eps = torch.randn(tuple(shape), generator=gen, dtype=torch.float32, device=device)
    return eps.mul_(sigma)


def voter_noise(
    named_shapes: Sequence[tuple[str, Sequence[int]]], seed: int, k: int, sigma: float, device: str | torch.device = "cpu"
) -> list[torch.Tensor]:
    """eps_{k, top-H} of Eq. 5: one N(0, sigma^2) tensor per smoothed parameter ``(name, shape)``, keyed by name."""
    return [parameter_noise(name, shape, seed, k, sigma, device) for name, shape in named_shapes]


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
