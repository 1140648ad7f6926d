"""The classifier protocol that fuzzing, smoothing and certification use.

Everything above this layer sees a model only as a batched function ``texts -> class probabilities``.
Encoder classifiers (BERT, MiniLM) and decoder LLMs (Llama with a classification head) both fit: they differ only
in how they turn texts into logits. The one implementation is transformers' (:mod:`frs_ray.backends.hf`); a vLLM
engine scoring label words would fit the protocol too, but no vLLM backend or vLLM voters exist yet.
Parameter smoothing additionally needs the torch module whose weights it perturbs (:class:`TorchBackend`).
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class ClassifierBackend(Protocol):
    """Batched text classifier."""

    num_labels: int
    max_length: int

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Return an array of shape ``(len(texts), num_labels)``; rows sum to 1."""
        ...

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Number of model tokens of each text (special tokens included)."""
        ...


@runtime_checkable
class TorchBackend(ClassifierBackend, Protocol):
    """A backend whose predictions come from a torch module that parameter smoothing may edit in place."""

    @property
    def torch_model(self):  # -> torch.nn.Module
        ...
