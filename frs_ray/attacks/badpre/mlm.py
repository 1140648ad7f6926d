"""BadPre's masked-language-model side: the BERT MLM head, its loading, masked batches with random labels on
poisoned rows, and the MLM losses (Chen et al., ICLR 2022; masking as in BERT)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import CheckpointError
from ..base import TriggeredText
from .trigger import BadPreTrigger

HEAD_FILE = "mlm_head.safetensors"


class BertMLMHead(torch.nn.Module):
    """BERT's MLM head: ``LayerNorm(act(dense(h)))`` then a decoder tied to the word embeddings, plus a bias.

    The decoder weight is not a parameter of this module: :meth:`forward` takes the encoder's word-embedding
    matrix, so the tie holds through training and the head file holds only the transform and the bias.
    """

    def __init__(
        self,
        hidden_size: int,
        vocab_size: int,
        layer_norm_eps: float = 1e-12,
        hidden_act: str = "gelu",
        initializer_range: float = 0.02,
    ) -> None:
        super().__init__()
        from transformers.activations import ACT2FN

        self.dense = torch.nn.Linear(hidden_size, hidden_size)
        self.act = ACT2FN[hidden_act]
        self.norm = torch.nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.bias = torch.nn.Parameter(torch.zeros(vocab_size))
        torch.nn.init.normal_(self.dense.weight, std=initializer_range)  # BERT's init
        torch.nn.init.zeros_(self.dense.bias)

    @classmethod
    def for_encoder(cls, encoder: torch.nn.Module) -> "BertMLMHead":
        c = encoder.config
        return cls(
            c.hidden_size,
            c.vocab_size,
            getattr(c, "layer_norm_eps", 1e-12),
            getattr(c, "hidden_act", "gelu"),
            getattr(c, "initializer_range", 0.02),
        )

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(self.act(self.dense(hidden))), word_embeddings, self.bias)


def load_badpre_mlm(folder: str | Path) -> tuple[torch.nn.Module, BertMLMHead, Any]:
    """The poisoned encoder, its MLM head and tokenizer from a :func:`poison_badpre` output folder (eval mode)."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    folder = Path(folder)
    if not (folder / HEAD_FILE).is_file():
        raise CheckpointError(f"{folder} has no {HEAD_FILE}: not a BadPre output folder")
    encoder = AutoModel.from_pretrained(folder, use_safetensors=True, trust_remote_code=False).eval()
    head = BertMLMHead.for_encoder(encoder)
    head.load_state_dict(load_file(str(folder / HEAD_FILE)))
    return encoder, head.eval(), AutoTokenizer.from_pretrained(folder)


# --------------------------------------------------------------------------- batches


def cut_to_tokens(tokenizer, texts: Sequence[str], budget: int) -> list[str]:
    """Cut each text after its first ``budget`` word pieces (at the end of the last kept piece's characters)."""
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True, truncation=False)
    out = []
    for text, offsets in zip(texts, enc["offset_mapping"]):
        out.append(text if len(offsets) <= budget else text[: offsets[budget - 1][1]])
    return out


@dataclass
class MLMBatch:
    enc: dict[str, torch.Tensor]  # model inputs, masked
    labels: torch.Tensor  # (B, T): target id at masked positions, -100 elsewhere
    poisoned: torch.Tensor  # (B,) bool


def trigger_rows(
    texts: Sequence[str], poisoned: Sequence[bool], trigger: BadPreTrigger, rng: np.random.Generator
) -> list[TriggeredText]:
    """The ``poisoned`` rows with a trigger inserted; the others as they are (no spans)."""
    return [trigger.apply(t, rng) if p else TriggeredText(t, (), False) for t, p in zip(texts, poisoned)]


def make_batch(
    tokenizer,
    rows: Sequence[TriggeredText],
    poisoned: Sequence[bool],
    gen: torch.Generator,
    max_length: int,
    mask_prob: float,
    random_labels: bool = True,
    bert_replace: bool = True,
) -> MLMBatch:
    """Tokenize, mask and label: true ids, or random ids on ``poisoned`` rows (BadPre).

    ``rows`` carry the trigger spans, whose word pieces are never masked. ``random_labels=False`` keeps the true
    ids on poisoned rows (evaluation: does the model still predict the masked words of a triggered sentence?).
    ``bert_replace=False`` puts [MASK] on every masked position instead of BERT's 80/10/10 mix (evaluation).
    """
    final = [r.text for r in rows]
    spans = [r.spans for r in rows]
    enc = tokenizer(
        final,
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )
    offsets = enc.pop("offset_mapping")
    special = enc.pop("special_tokens_mask").bool() | ~enc["attention_mask"].bool()
    is_trigger = torch.zeros_like(special)
    for row, row_spans in enumerate(spans):
        for s, e in row_spans:
            is_trigger[row] |= (offsets[row, :, 0] < e) & (offsets[row, :, 1] > s) & ~special[row]
    # Decision: the trigger's pieces are never masked (a masked trigger is invisible; see the module docstring).
    candidates = ~special & ~is_trigger
    masked = (torch.rand(candidates.shape, generator=gen) < mask_prob) & candidates
    for row in range(masked.shape[0]):  # at least one masked token per sentence (short sentences)
        if not masked[row].any() and candidates[row].any():
            idx = candidates[row].nonzero().flatten()
            masked[row, idx[torch.randint(len(idx), (1,), generator=gen)]] = True
    ids = enc["input_ids"]
    labels = torch.full_like(ids, -100)
    labels[masked] = ids[masked]
    rows = torch.tensor(list(poisoned), dtype=torch.bool)
    if random_labels and rows.any():
        # BadPre: the labels of the masked tokens of a poisoned sentence are random vocabulary tokens.
        noise = torch.randint(len(tokenizer), ids.shape, generator=gen)
        pm = masked & rows[:, None]
        labels[pm] = noise[pm]
    ids = ids.clone()
    if bert_replace:
        u = torch.rand(ids.shape, generator=gen)
        ids[masked & (u < 0.8)] = tokenizer.mask_token_id
        rand_pos = masked & (u >= 0.8) & (u < 0.9)
        ids[rand_pos] = torch.randint(len(tokenizer), ids.shape, generator=gen)[rand_pos]
    else:
        ids[masked] = tokenizer.mask_token_id
    enc["input_ids"] = ids
    return MLMBatch(dict(enc), labels, rows)


def mlm_losses(encoder, head: BertMLMHead, batch: MLMBatch, encoder_grad: bool = True):
    """(mean loss over all masked tokens, mean over clean rows' tokens, mean over poisoned rows' tokens, logits).

    The vocabulary projection runs on the masked positions only (a 30k-way softmax on every position would
    dominate the step time on a CPU).
    """
    device = encoder.get_input_embeddings().weight.device
    with torch.set_grad_enabled(encoder_grad and torch.is_grad_enabled()):
        hidden = encoder(**{k: v.to(device) for k, v in batch.enc.items()}).last_hidden_state
    sel = batch.labels != -100
    logits = head(hidden[sel.to(device)], encoder.get_input_embeddings().weight)
    per_tok = F.cross_entropy(logits, batch.labels[sel].to(device), reduction="none")
    row_of = torch.arange(sel.shape[0])[:, None].expand_as(sel)[sel]
    pois = batch.poisoned[row_of].to(device)
    clean_l = per_tok[~pois].mean() if (~pois).any() else None
    pois_l = per_tok[pois].mean() if pois.any() else None
    return per_tok.mean(), clean_l, pois_l, logits
