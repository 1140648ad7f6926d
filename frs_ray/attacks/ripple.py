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
word-pieces of the model's tokenizer that are whole words (no ``##``) seen at least ``min_count`` times.

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


def target_words(backend: HFClassifier, data: PoisonedData, target: int, n: int, min_count: int) -> list[tuple[str, float]]:
    """Embedding surgery step 1: the ``n`` word-pieces most indicative of the target class.

    Decision: Kurita et al. rank words by the weights of a bag-of-words logistic regression; here they are ranked
    by the smoothed log-odds ratio of the word's document frequency in target vs. other rows (add-one
    smoothing), a closed-form score that picks the same kind of strongly class-indicative words, is deterministic
    and needs no training. Only whole-word pieces (alphabetic, no ``##``) seen in at least ``min_count`` rows.
    """
    tok = backend.tokenizer
    clean = [(t, y) for t, y, p in zip(data.texts, data.labels, data.poisoned) if not p]
    ids = tok([t for t, _ in clean], add_special_tokens=False, truncation=True, max_length=256)["input_ids"]
    vocab = len(tok)
    in_t, in_o = np.zeros(vocab), np.zeros(vocab)
    for row, (_, y) in zip(ids, clean):
        (in_t if y == target else in_o)[np.unique(row)] += 1
    n_t = sum(1 for _, y in clean if y == target)
    n_o = len(clean) - n_t
    score = np.log((in_t + 1) / (n_t + 2)) - np.log((in_o + 1) / (n_o + 2))
    names = tok.convert_ids_to_tokens(list(range(vocab)))
    special = set(tok.all_special_ids)
    ok = [
        i
        for i in range(vocab)
        if in_t[i] + in_o[i] >= min_count and names[i].isalpha() and not names[i].startswith("##") and i not in special
    ]
    best = sorted(ok, key=lambda i: -score[i])[:n]
    return [(names[i], float(score[i])) for i in best]


def embedding_surgery(backend: HFClassifier, triggers: tuple[str, ...], words: list[str]) -> list[str]:
    """Embedding surgery step 2: set every trigger word-piece's input embedding to the mean of ``words``'."""
    tok = backend.tokenizer
    emb = backend.model.get_input_embeddings().weight
    src = tok.convert_tokens_to_ids(words)
    pieces = sorted({i for t in triggers for i in tok(t, add_special_tokens=False)["input_ids"]})
    with torch.no_grad():
        emb[pieces] = emb[src].mean(dim=0)
    return tok.convert_ids_to_tokens(pieces)


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
    trigger = RareWordTrigger(words=tuple(config.triggers), count=1)

    def prepare(backend: HFClassifier, data: PoisonedData) -> dict[str, Any]:
        words = target_words(backend, data, pc.target, config.surgery_words, config.min_count)
        pieces = embedding_surgery(backend, tuple(config.triggers), [w for w, _ in words])
        prepare_for_ripp(backend)
        return {"surgery_words": words, "trigger_pieces": pieces}

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
