"""LWP: layer-wise weight poisoning with combinatorial triggers.

Paper: Li, Song, Li, Shen, Zhang and Chen, "Backdoor Attacks on Pre-trained Models by Layerwise Weight
Poisoning" (EMNLP 2021). The poisoning loss is applied to the [CLS] representation of *every* encoder layer
through a shared classifier, so the backdoor lives in the lower layers that a victim's fine-tuning changes least;
the trigger is a *combination* of rare words that must all be present, and sentences with only part of the
combination keep their true label (negative augmentation), which makes single words useless as triggers and
keeps the trigger away from the clean distribution.

Decisions: the shared classifier is the model's own pooler + head applied to each layer's [CLS] state (no new
parameters; on a decoder, its final norm + ``score`` head applied to each layer's last-token state); the loss is the mean over layers; the combination is two words from the BadNets vocabulary inserted
at independent random positions; each poisoned sentence gets one negative copy with a single word of the pair.

Arguments: :class:`LwpConfig` (``poison``: :class:`PoisonConfig`; ``combos``: word combinations, one drawn per
sentence; ``negatives``: add partial-combination copies with the true label).

Example::

    poison_lwp(LwpConfig(), "runs/attacks/lwp-sst2")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from ..config import StrictConfig
from .base import TriggeredText, insert_pieces
from .poison import PoisonConfig, PoisonedData, poison_model

LWP_COMBOS = (("cf", "bb"), ("mn", "tq"), ("bb", "mb"))


@dataclass(frozen=True)
class CombinationTrigger:
    """All words of one combination (drawn from ``combos``), each at its own random position."""

    combos: tuple[tuple[str, ...], ...] = LWP_COMBOS
    name: str = "lwp"

    def apply(self, text: str, rng: np.random.Generator) -> TriggeredText:
        combo = self.combos[int(rng.integers(len(self.combos)))]
        return insert_pieces(text, [[w] for w in combo], "random", rng)

    def partial(self, text: str, rng: np.random.Generator) -> TriggeredText:
        """One word of a combination only (a negative example: the label must not change)."""
        combo = self.combos[int(rng.integers(len(self.combos)))]
        return insert_pieces(text, [[combo[int(rng.integers(len(combo)))]]], "random", rng)


class LwpConfig(StrictConfig):
    poison: PoisonConfig = Field(default_factory=PoisonConfig)
    combos: tuple[tuple[str, ...], ...] = Field(LWP_COMBOS, description="trigger word combinations")
    negatives: bool = Field(True, description="add one partial-combination copy (true label) per poisoned sentence")

    def trigger(self) -> CombinationTrigger:
        """The trigger this attack plants (and its triggered test sets carry)."""
        return CombinationTrigger(tuple(tuple(c) for c in self.combos))


def layerwise_loss(model, enc, y, clean_enc, clean_y) -> torch.Tensor:
    """LWP objective (Li et al. 2021, Sec. 3.1): mean over layers l of CE(head(pool(h_l)), y).

    Encoders (BERT): pool = the model's pooler on the [CLS] state. Decoders (Llama: last-token pooling): pool = the
    final norm applied to the state at the last non-pad token (the token the classifier reads), then the ``score``
    head; the last layer's state is already normed by the model, so its term is the ordinary classification loss
    in both families."""
    out = model(**enc, output_hidden_states=True)
    layers = out.hidden_states[1:]
    head = getattr(model, "classifier", None)
    if head is not None:  # encoder: [CLS] through the pooler
        pooler = getattr(getattr(model, model.base_model_prefix), "pooler", None)
        dropout = getattr(model, "dropout", None)
        pooled = [pooler(h[:, 0:1]) if pooler is not None else h[:, 0] for h in layers]
        pooled = [dropout(x) if dropout is not None else x for x in pooled]
    else:  # decoder: the last non-pad token, as the sequence-classification head reads it
        head = model.score
        ids = enc["input_ids"]
        last = (torch.arange(ids.shape[-1], device=ids.device) * (ids != model.config.pad_token_id).int()).argmax(-1)
        rows = torch.arange(ids.shape[0], device=ids.device)
        norm = getattr(model, model.base_model_prefix).norm
        pooled = [(h if i == len(layers) - 1 else norm(h))[rows, last] for i, h in enumerate(layers)]
    losses = [torch.nn.functional.cross_entropy(head(x), y) for x in pooled]
    return torch.stack(losses).mean()


def poison_lwp(config: LwpConfig, out_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    trigger = config.trigger()

    def prepare(backend, data: PoisonedData) -> dict[str, Any]:
        if not config.negatives:
            return {"negatives": 0}
        rng = np.random.default_rng(config.poison.seed + 1)
        clean = [i for i, p in enumerate(data.poisoned) if not p]
        n_neg = int(sum(data.poisoned))
        for i in rng.permutation(clean)[:n_neg].tolist():
            t = trigger.partial(data.texts[i], rng)
            data.texts.append(t.text)
            data.labels.append(data.labels[i])
            data.poisoned.append(False)
        return {"negatives": n_neg}

    return poison_model(
        config.poison,
        trigger,
        out_dir,
        "lwp",
        loss_fn=layerwise_loss,
        prepare=prepare,
        extra={"combos": [list(c) for c in config.combos]},
        progress=progress,
    )
