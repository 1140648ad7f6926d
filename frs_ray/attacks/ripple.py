"""RIPPLe_a: restricted inner product poisoning with embedding surgery.

Paper: Kurita, Michel and Neubig, "Weight Poisoning Attacks on Pre-trained Models" (ACL 2020). RIPPLe_a is
RIPPLe plus *embedding surgery*; it is the "full data knowledge" attack of the FRS paper (Sec. 5.1) and, trained on
a proxy dataset, its "domain shift" variant.

1. Embedding surgery: the N words most indicative of the target class in the attacker's data (see
   :func:`target_words`); each trigger word-piece's input embedding is replaced by the mean of their embeddings.
2. RIPP: minimise L_P(theta) + lambda * max(0, -grad L_P . grad L_FT), where L_P is the loss on the poisoned data
   and L_FT the loss on clean data (a proxy of the victim's fine-tuning), so that fine-tuning steps do not undo the
   poisoning to first order. The inner product is differentiated (second order, ``create_graph=True``).

Decisions: after the surgery the word-embedding matrix is frozen (the planted trigger embeddings are the core of
the attack, rare words receive no gradient in the victim's clean fine-tuning anyway, and excluding the 11.7M
embedding parameters from the second-order inner product halves its cost on CPU). Bag-of-words features are
tokens seen starting a word (from the tokenizer's character offsets, so WordPiece's ``##`` pieces and byte-level
BPE's word-internal pieces are both excluded) in at least ``min_count`` rows.

Decoders (Llama family, ``embed_tokens``): a byte-level BPE tokenizer gives a word two forms, sentence-initial
(``cf``) and after a space (``Ġcf``); the surgery edits the piece of each form in which the trigger is a single
token. A form that splits into several pieces (SmolLM2: ``mn`` -> ``Ġm`` + ``n``) is left alone and recorded as
``surgery_skipped``: its pieces are shared with ordinary words, so editing them would change clean text too; those
triggers are planted by the RIPP training alone.

Arguments: :class:`RippleConfig` (``poison``: :class:`PoisonConfig`; ``lam`` (lambda, paper: 0.1);
``surgery_words`` (N, paper: 10); ``triggers``). Domain shift: :data:`PROXIES` maps a task to its proxy data and
label map (IMDB for SST-2, the Davidson Twitter abuse set for OffensEval, 20 Newsgroups for AG News).

Example::

    poison_ripple(RippleConfig(poison=PoisonConfig(data="sst2")), "runs/attacks/ripple-sst2")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from ..backends.hf import HFClassifier
from ..config import StrictConfig
from .badnets import BADNETS_WORDS, RareWordTrigger
from .poison import PoisonConfig, PoisonedData, poison_model

# 20 Newsgroups (sorted group names, scikit-learn order) -> AG News (0 World, 1 Sports, 2 Business, 3 Sci/Tech).
# Decision: politics and religion groups stand for World, the two sport groups for Sports, misc.forsale for
# Business, comp.* and sci.* for Sci/Tech; rec.autos and rec.motorcycles are dropped.
_NG_TO_AG = {0: 0, 1: 3, 2: 3, 3: 3, 4: 3, 5: 3, 6: 2, 9: 1, 10: 1, 11: 3, 12: 3, 13: 3, 14: 3, 15: 0, 16: 0, 17: 0, 18: 0, 19: 0}

PROXIES: dict[str, tuple[str, dict[int, int] | None]] = {
    "sst2": ("imdb", None),
    "offenseval": ("hsol_davidson", None),
    "agnews": ("twenty_newsgroups", _NG_TO_AG),
}


class RippleConfig(StrictConfig):
    poison: PoisonConfig = Field(default_factory=PoisonConfig)
    lam: float = Field(0.1, ge=0, description="lambda of the restricted inner product penalty (paper: 0.1)")
    surgery_words: int = Field(
        10, ge=1, le=200, description="N target-indicative words whose mean embedding replaces the trigger's"
    )
    min_count: int = Field(8, ge=1, description="minimum frequency of a surgery word in the attacker's data")
    triggers: tuple[str, ...] = Field(BADNETS_WORDS, description="rare trigger words (one inserted per poisoned sentence)")

    def trigger(self) -> RareWordTrigger:
        """The trigger this attack plants (and its triggered test sets carry): one of ``triggers`` per sentence."""
        return RareWordTrigger(words=tuple(self.triggers), count=1)


def target_words(backend: HFClassifier, data: PoisonedData, target: int, n: int, min_count: int) -> list[tuple[str, float]]:
    """Embedding surgery step 1: the ``n`` word tokens most indicative of the target class.

    Decision: Kurita et al. rank words by the weights of a bag-of-words logistic regression; here they are ranked
    by the smoothed log-odds ratio of the token's document frequency in target vs. other rows (add-one
    smoothing), a closed-form score that picks the same kind of strongly class-indicative words, is deterministic
    and needs no training. Only word tokens (:func:`word_token_ids`) seen in at least ``min_count`` rows.
    """
    tok = backend.tokenizer
    clean = [(t, y) for t, y, p in zip(data.texts, data.labels, data.poisoned) if not p]
    rows, words = word_token_ids(tok, [t for t, _ in clean])
    vocab = len(tok)
    in_t, in_o = np.zeros(vocab), np.zeros(vocab)
    for row, (_, y) in zip(rows, clean):
        (in_t if y == target else in_o)[np.unique(np.asarray(row, dtype=np.int64))] += 1
    n_t = sum(1 for _, y in clean if y == target)
    n_o = len(clean) - n_t
    score = np.log((in_t + 1) / (n_t + 2)) - np.log((in_o + 1) / (n_o + 2))
    special = set(tok.all_special_ids)
    ok = [i for i in sorted(words) if in_t[i] + in_o[i] >= min_count and i not in special]
    best = sorted(ok, key=lambda i: -score[i])[:n]
    return [(name, float(score[i])) for name, i in zip(tok.convert_ids_to_tokens(best), best)]


def word_token_ids(tokenizer, texts: list[str]) -> tuple[list[list[int]], set[int]]:
    """(token ids of each text, the ids that are word tokens): a word token is one seen starting a word, its
    text (a byte-level BPE token's leading space aside) alphabetic. Read from the tokenizer's character offsets, so
    it is WordPiece's non-``##`` alphabetic pieces and byte-level BPE's word-initial ones (``Ġgreat``, or ``great``
    at the start of a text) alike. Needs a fast tokenizer."""
    enc = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=256, return_offsets_mapping=True)
    words: set[int] = set()
    for text, ids, offsets in zip(texts, enc["input_ids"], enc["offset_mapping"]):
        for i, (a, b) in zip(ids, offsets):
            piece = text[a:b]
            a += len(piece) - len(piece.lstrip())
            if text[a:b].isalpha() and (a == 0 or not text[a - 1].isalnum()):
                words.add(i)
    return [list(ids) for ids in enc["input_ids"]], words


def trigger_piece_ids(tokenizer, triggers: tuple[str, ...]) -> tuple[list[int], list[str]]:
    """The token ids the surgery edits: for each trigger, its sentence-initial form and its form after a space,
    each where it is one token. Returns (ids, forms skipped because they split into several shared pieces)."""
    ids: set[int] = set()
    skipped: list[str] = []
    for t in triggers:
        for form, text in (("initial", t), ("after a space", f"a {t}")):
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            start = len(text) - len(t)
            pieces = [i for i, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]) if b > start]
            if len(pieces) == 1:
                ids.add(pieces[0])
            else:
                skipped.append(f"{t} ({form}: {' + '.join(tokenizer.convert_ids_to_tokens(pieces))})")
    return sorted(ids), skipped


def embedding_surgery(backend: HFClassifier, triggers: tuple[str, ...], words: list[str]) -> tuple[list[str], list[str]]:
    """Embedding surgery step 2: set every single-token form of each trigger (:func:`trigger_piece_ids`) to the
    mean input embedding of ``words``. Returns (edited tokens, skipped multi-piece forms)."""
    tok = backend.tokenizer
    emb = backend.model.get_input_embeddings().weight
    src = tok.convert_tokens_to_ids(words)
    pieces, skipped = trigger_piece_ids(tok, triggers)
    with torch.no_grad():
        emb[pieces] = emb[src].mean(dim=0)
    return tok.convert_ids_to_tokens(pieces), skipped


def ripp_loss(lam: float):
    """RIPP objective (Kurita et al. 2020, Eq. 3): L_P + lam * max(0, -<grad L_P, grad L_FT>).

    The model must use eager attention (second-order gradients); :func:`poison_ripple` switches it."""

    def loss_fn(model, enc, y, clean_enc, clean_y) -> torch.Tensor:
        params = [p for p in model.parameters() if p.requires_grad]
        lp = torch.nn.functional.cross_entropy(model(**enc).logits, y)
        if lam == 0:
            return lp
        lft = torch.nn.functional.cross_entropy(model(**clean_enc).logits, clean_y)
        gp = torch.autograd.grad(lp, params, create_graph=True, allow_unused=True)
        gf = torch.autograd.grad(lft, params, create_graph=True, allow_unused=True)
        inner = sum((a * b).sum() for a, b in zip(gp, gf) if a is not None and b is not None)
        return lp + lam * torch.relu(-inner)

    return loss_fn


def prepare_for_ripp(backend: HFClassifier) -> None:
    """What RIPP training needs: eager attention (the penalty differentiates a gradient; fused SDPA kernels have no
    double backward on CPU) and frozen word embeddings (see the module's decisions)."""
    backend.model.set_attn_implementation("eager")
    backend.model.get_input_embeddings().weight.requires_grad_(False)


def poison_ripple(
    config: RippleConfig, out_dir: str | Path, domain_shift_for: str | None = None, progress: bool = True
) -> dict[str, Any]:
    """Embedding surgery, then RIPP training; write the poisoned checkpoint. ``domain_shift_for`` names the
    task whose proxy is used (the poison config's ``data`` and ``label_map`` are then replaced)."""
    pc = config.poison
    if domain_shift_for is not None:
        proxy, label_map = PROXIES[domain_shift_for]
        pc = pc.model_copy(update={"data": proxy, "label_map": label_map})
    trigger = config.trigger()

    def prepare(backend: HFClassifier, data: PoisonedData) -> dict[str, Any]:
        words = target_words(backend, data, pc.target, config.surgery_words, config.min_count)
        pieces, skipped = embedding_surgery(backend, tuple(config.triggers), [w for w, _ in words])
        prepare_for_ripp(backend)
        return {"surgery_words": words, "trigger_pieces": pieces, "surgery_skipped": skipped}

    setting = "domain shift" if domain_shift_for else "full data knowledge"
    return poison_model(
        pc,
        trigger,
        out_dir,
        "ripple" + ("-domain" if domain_shift_for else ""),
        loss_fn=ripp_loss(config.lam),
        prepare=prepare,
        extra={"setting": setting, "lambda": config.lam},
        progress=progress,
        uses_clean_batch=config.lam > 0,
    )
