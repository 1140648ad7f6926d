"""The labelled text dataset every loader returns."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from frs_ray.errors import ConfigError


@dataclass(frozen=True)
class TextDataset:
    """Texts with integer labels, and where they came from.

    ``sha256`` is the checksum of the file bytes that were read (for hub datasets: of the
    downloaded files, concatenated in the order they were read).
    """

    texts: list[str]
    labels: list[int]
    source: str
    sha256: str
    label_names: list[str] | None = None

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"TextDataset: {len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_labels(self) -> int:
        """Number of classes: ``len(label_names)`` when known, else ``max(label) + 1``."""
        if self.label_names is not None:
            return len(self.label_names)
        return max(self.labels) + 1 if self.labels else 0

    def subset(self, n: int | None, seed: int = 0) -> TextDataset:
        """Return a seeded random sample of ``n`` rows, kept in their original order.

        ``n`` of ``None`` or at least ``len(self)`` returns ``self``. ``source`` and ``sha256``
        are unchanged (they identify the file the rows came from).
        """
        if n is None or n >= len(self):
            return self
        if n < 0:
            raise ConfigError(f"subset size must be >= 0, got {n}")
        indices = sorted(random.Random(seed).sample(range(len(self)), n))
        return dataclasses.replace(
            self,
            texts=[self.texts[i] for i in indices],
            labels=[self.labels[i] for i in indices],
        )
