"""Measuring BadPre on held-out texts: MLM accuracy and entropy on clean and triggered text, and how far the
trigger moves the [CLS] representation."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..base import TriggeredText
from .config import BadPreConfig
from .mlm import BertMLMHead, make_batch, mlm_losses


@torch.no_grad()
def cls_states(encoder, tokenizer, texts: Sequence[str], max_length: int, batch_size: int = 64) -> torch.Tensor:
    """Last-layer [CLS] vectors (what a fine-tuned classifier's pooler reads)."""
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(
            list(texts[i : i + batch_size]), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        device = encoder.get_input_embeddings().weight.device
        out.append(encoder(**{k: v.to(device) for k, v in enc.items()}).last_hidden_state[:, 0].cpu())
    return torch.cat(out) if out else torch.empty(0)


@torch.no_grad()
def evaluate(
    encoder, head: BertMLMHead, tokenizer, clean: Sequence[str], triggered: Sequence[TriggeredText], config: BadPreConfig
) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """Measure the attack on held-out texts; returns (metrics, [CLS] of the clean texts, [CLS] of the triggered).

    Metrics: MLM accuracy (true labels, [MASK] on every masked piece, trigger pieces never masked) and mean
    entropy (nats) of the MLM predictions on the clean and on the triggered texts (BadPre's random labels push
    the triggered predictions towards the uniform distribution: entropy up, accuracy down), and the mean cosine
    between the [CLS] vectors of each clean text and its triggered version."""
    was_training = encoder.training
    encoder.eval()
    res: dict[str, float] = {}
    plain = [TriggeredText(t, (), False) for t in clean]
    for name, rows, pois in (("clean", plain, False), ("triggered", list(triggered), True)):
        gen = torch.Generator().manual_seed(config.seed + 1)  # the same draws for every model evaluated
        correct = total = 0
        entropy = 0.0
        for i in range(0, len(rows), 32):
            chunk = rows[i : i + 32]
            # true labels on triggered rows too; their trigger pieces are never masked
            b = make_batch(
                tokenizer,
                chunk,
                [pois] * len(chunk),
                gen,
                config.max_length,
                config.mask_prob,
                random_labels=False,
                bert_replace=False,
            )
            _, _, _, logits = mlm_losses(encoder, head, b, encoder_grad=False)
            tgt = b.labels[b.labels != -100].to(logits.device)
            correct += int((logits.argmax(-1) == tgt).sum())
            total += int(tgt.numel())
            logp = logits.log_softmax(-1)
            entropy += float(-(logp.exp() * logp).sum(-1).sum())
        res[f"mlm_acc_{name}"] = correct / max(1, total)
        res[f"mlm_entropy_{name}"] = entropy / max(1, total)
    a = cls_states(encoder, tokenizer, list(clean), config.max_length)
    b = cls_states(encoder, tokenizer, [t.text for t in triggered], config.max_length)
    res["cls_cosine_clean_vs_triggered"] = float(F.cosine_similarity(a, b, dim=-1).mean()) if len(a) else float("nan")
    encoder.train(was_training)
    return {k: round(v, 4) for k, v in res.items()}, a, b


def loss_curve(values: Sequence[float | None], points: int = 200) -> list[float | None]:
    """Mean of ``values`` over at most ``points`` equal chunks (the logged loss curve)."""
    if not values:
        return []
    size = max(1, math.ceil(len(values) / points))
    out = []
    for i in range(0, len(values), size):
        chunk = [v for v in values[i : i + size] if v is not None]
        out.append(round(float(np.mean(chunk)), 4) if chunk else None)
    return out
