"""BKI: find the words that sway the model most and most often, drop the training texts that hold them, retrain.

Paper: Chuanshuai Chen, Jiazhu Dai. "Mitigating backdoor attacks in LSTM-based text classification systems by
Backdoor Keyword Identification." Neurocomputing 452 (2021). A training-time (data sanitization) defense, as the
FRS paper lists it (Sec. 5.1, Table 1); empirical (uncertified).

BKI assumes the backdoor comes in through poisoned training texts. It scores every word of every training text by
how far deleting the word moves the trained model's internal representation, keeps each text's most influential
words, ranks those words over the whole training set by influence and frequency, takes the top-ranked word(s) as
the backdoor keyword(s), removes every training text that holds one, and trains again on the rest.

In this project's threat model (FRS's: the backdoor is planted in the *pre-trained* model and the victim's own
fine-tuning data is clean) there is no poisoned training text to find: whatever BKI flags is an ordinary word, and
removing its texts only costs training data. That is what it is measured for here: the faithful training-time
procedure, run on the victim's real (clean) data, as the paper ran it among its baselines. Results (the words it
flags, the texts it drops, CA / PA / ASR): ``docs/results/eval_v1.md``, summary in ``docs/results/notes.md``.

Decisions (where the paper, written for LSTMs, leaves room):

- Representation: the last layer's hidden state at the first position (the [CLS] state the encoder classifier's
  head reads), from the victim's plain checkpoint ``ctx.plain_checkpoint`` (the model trained on the data).
  Decoder backends (last-token pooling) are not supported.
- Influence of word i of text x (project word tokens, punctuation excluded):
  ``p_i = || r(x) - r(x without word i) ||_inf`` (:func:`word_influence`), the paper's "global" term.
- Each text contributes its ``top_p`` most influential words (ties: earlier word first), lower-cased.
- Ranking (:func:`keyword_scores`): ``g(k) = mean influence of k x log10(f_k)``, with f_k the number of texts in
  which k is among the top words; a word that is a top word only once scores 0 and is never flagged. The
  ``n_keywords`` highest g are the backdoor keywords.
- Sanitizing: a training text is removed when any of its word tokens, lower-cased, is a keyword.
- Retraining: from ``ctx.base_model`` (the possibly poisoned pre-trained model) with the victim's own fine-tuning
  settings (``ctx.finetune``) on the remaining texts, without smoothing. The retrained model is cached under
  ``<work_dir>/bki/<hash>/``, keyed by the settings, the base model, the keywords and the sha256 of the data.
- Inference: the retrained model's argmax, one query per input; no spans, no radius.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from pydantic import Field
from tqdm.auto import tqdm

from ..config import FinetuneConfig, SmoothingConfig, StrictConfig, build
from ..data import TextDataset
from ..errors import ConfigError
from ..storage import build_once
from ..text.tokens import render, tokenize
from .base import Defense, DefenseContext, DefensePrediction
from .registry import register


class BKIConfig(StrictConfig):
    """Settings of :class:`BKI` (unknown fields are rejected)."""

    top_p: int = Field(5, ge=1, le=100, description="most influential words kept per training text (paper: 5)")
    n_keywords: int = Field(1, ge=1, le=100, description="top-ranked words flagged as backdoor keywords")
    n_score: int | None = Field(
        None,
        ge=1,
        description="score a seeded subset of this many training texts "
        "(default: all of ctx.train); every text is still checked when sanitizing",
    )
    seed: int | None = Field(None, description="seed of the scoring subset (default: the context's seed)")
    batch_size: int = Field(64, ge=1, le=4096, description="texts per forward pass when scoring")
    max_length: int | None = Field(
        None, ge=8, le=8192, description="classifier tokens per text (default: the victim's fine-tuning max_length, else 128)"
    )


def content_positions(words: Sequence[str]) -> list[int]:
    """Indices of the word tokens BKI scores: those with a letter or digit (punctuation is never a keyword)."""
    return [i for i, w in enumerate(words) if any(c.isalnum() for c in w)]


def word_influence(full: np.ndarray, without: np.ndarray) -> np.ndarray:
    """BKI's influence of each deleted word: ``||r(x) - r(x without word i)||_inf`` for every row i of ``without``
    (``full``: r(x), shape (d,); ``without``: shape (n, d))."""
    return (
        np.abs(np.asarray(without, dtype=np.float64) - np.asarray(full, dtype=np.float64)[None, :]).max(axis=1)
        if len(without)
        else np.zeros(0)
    )


def top_words(words: Sequence[str], positions: Sequence[int], influence: np.ndarray, top_p: int) -> list[tuple[str, float]]:
    """The ``top_p`` most influential (lower-cased word, influence) pairs of one text; ties keep the earlier word."""
    order = sorted(range(len(positions)), key=lambda j: (-float(influence[j]), j))[:top_p]
    return [(words[positions[j]].lower(), float(influence[j])) for j in order]


def keyword_scores(per_text: Sequence[Sequence[tuple[str, float]]]) -> dict[str, dict[str, float]]:
    """BKI's ranking over a corpus: per word, ``mean`` influence where it was a top word, its count ``f`` (texts)
    and ``g = mean * log10(f)``. A word counted twice in one text counts once, with its larger influence."""
    best: dict[str, list[float]] = defaultdict(list)
    for pairs in per_text:
        seen: dict[str, float] = {}
        for w, p in pairs:
            seen[w] = max(p, seen.get(w, -math.inf))
        for w, p in seen.items():
            best[w].append(p)
    return {w: {"mean": float(np.mean(v)), "f": len(v), "g": float(np.mean(v)) * math.log10(len(v))} for w, v in best.items()}


def flag_keywords(scores: dict[str, dict[str, float]], n_keywords: int) -> list[str]:
    """The ``n_keywords`` words of highest g (ties: alphabetical); words with g <= 0 are never flagged."""
    ranked = sorted((w for w, s in scores.items() if s["g"] > 0), key=lambda w: (-scores[w]["g"], w))
    return ranked[:n_keywords]


def sanitize(data: TextDataset, keywords: Sequence[str]) -> tuple[TextDataset, int]:
    """``data`` without the texts holding a keyword (as a lower-cased word token); returns (kept, removed count)."""
    flagged = {k.lower() for k in keywords}
    keep = [i for i, t in enumerate(data.texts) if not any(tok.text.lower() in flagged for tok in tokenize(t))]
    kept = dataclasses.replace(data, texts=[data.texts[i] for i in keep], labels=[data.labels[i] for i in keep])
    return kept, len(data) - len(keep)


def _sha(texts: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()


@register("bki")
class BKI(Defense):
    """BKI (Chen & Dai 2021): flag the backdoor keyword(s) of the training data, drop their texts, fine-tune again.

    ``ctx.plain_checkpoint`` scores the words, ``ctx.train`` is sanitized, ``ctx.base_model`` is fine-tuned again
    with ``ctx.finetune`` (cached in ``ctx.work_dir``); ``params``: see :class:`BKIConfig`. Example::

        bki = BKI(ctx, top_p=5, n_keywords=1)
        bki.keywords                 # e.g. ['bad'] on clean SST-2: no trigger to find in clean data
        [p] = bki.predict(["a gripping cf story ."])
    """

    params_model = BKIConfig

    name = "bki"
    certified = False

    def __init__(self, ctx: DefenseContext, **params: Any) -> None:
        from ..backends.hf import HFClassifier

        self.ctx = ctx
        self.config: BKIConfig = build(BKIConfig, params)  # type: ignore[assignment]
        cfg = self.config
        if len(ctx.train) < 2:
            raise ConfigError(f"BKI needs at least 2 training texts (ctx.train has {len(ctx.train)})")
        self.seed = cfg.seed if cfg.seed is not None else int(ctx.seed)
        self.max_length = int(cfg.max_length or ctx.finetune.get("max_length", 128))
        scored = ctx.train.subset(cfg.n_score, seed=self.seed) if cfg.n_score else ctx.train
        self.scored_n = len(scored)
        victim = ctx.plain_classifier(self.max_length, batch_size=cfg.batch_size)
        per_text = self.score_texts(victim, scored.texts)
        del victim
        self.scores = keyword_scores(per_text)
        self.keywords = flag_keywords(self.scores, cfg.n_keywords)
        self.train, self.removed = sanitize(ctx.train, self.keywords)
        if len(self.train) == 0:
            raise ConfigError(f"BKI's keywords {self.keywords} hold every training text: nothing left to retrain on")
        self.checkpoint = self._retrain()
        self.model = HFClassifier(self.checkpoint, max_length=self.max_length, device=ctx.device, batch_size=cfg.batch_size)

    @torch.inference_mode()
    def representations(self, clf, texts: Sequence[str]) -> np.ndarray:
        """Last-layer hidden state at the first position ([CLS]) of each text, shape (n, d)."""
        out: list[np.ndarray] = []
        for s in range(0, len(texts), self.config.batch_size):
            enc = clf.encode(list(texts[s : s + self.config.batch_size]))
            hidden = clf.torch_model(**enc, output_hidden_states=True).hidden_states[-1][:, 0]
            out.append(hidden.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))

    def score_texts(self, clf, texts: Sequence[str]) -> list[list[tuple[str, float]]]:
        """Each text's ``top_p`` (word, influence) pairs; all deletions of a chunk of texts in batched passes."""
        per_text: list[list[tuple[str, float]]] = []
        bar = tqdm(total=len(texts), desc="bki: word influence", unit="text", disable=not self.ctx.progress)
        chunk = max(1, self.config.batch_size // 8)
        for s in range(0, len(texts), chunk):
            batch, plans = [], []
            for x in texts[s : s + chunk]:
                words = [t.text for t in tokenize(x)]
                pos = content_positions(words)
                plans.append((words, pos, len(batch)))
                batch.append(x)
                batch += [render(words[:i] + words[i + 1 :]) for i in pos]
            reps = self.representations(clf, batch)
            for words, pos, at in plans:
                infl = word_influence(reps[at], reps[at + 1 : at + 1 + len(pos)])
                per_text.append(top_words(words, pos, infl, self.config.top_p))
            bar.update(len(plans))
        bar.close()
        return per_text

    def _retrain(self) -> str:
        """Fine-tune ``ctx.base_model`` on the sanitized data with the victim's settings (cached)."""
        from ..smoothing.finetune import META_FILE, finetune

        fields = {
            k: v
            for k, v in self.ctx.finetune.items()
            if k in FinetuneConfig.model_fields and k not in ("model", "max_train_examples", "smoothing")
        }
        ft = build(
            FinetuneConfig,
            {
                **fields,
                "model": str(self.ctx.base_model),
                "max_length": self.max_length,
                "seed": int(self.ctx.finetune.get("seed", self.seed)),
                "smoothing": SmoothingConfig(finetune_mode="none").model_dump(),
            },
        )
        key = {
            "finetune": ft.model_dump(),
            "keywords": self.keywords,
            "train_sha256": _sha(self.train.texts),
            "labels": list(map(int, self.train.labels)),
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
        out = Path(self.ctx.work_dir) / "bki" / digest

        def build_into(tmp: Path) -> None:
            finetune(ft, self.train, tmp, device=self.ctx.device, progress=self.ctx.progress)
            (tmp / "bki.json").write_text(json.dumps({**key, "removed": self.removed}, indent=2, default=str))

        build_once(out, META_FILE, build_into)
        return str(out)

    def describe(self) -> dict[str, Any]:
        top = sorted(self.scores, key=lambda w: (-self.scores[w]["g"], w))[:10]
        return {
            **super().describe(),
            **self.config.model_dump(),
            "seed": self.seed,
            "keywords": self.keywords,
            "removed_texts": self.removed,
            "kept_texts": len(self.train),
            "scored_texts": self.scored_n,
            "top_ranked": {w: self.scores[w] for w in top},
            "retrained_checkpoint": self.checkpoint,
        }

    def predict(self, texts: Sequence[str]) -> list[DefensePrediction]:
        texts = list(texts)
        if not texts:
            return []
        t0 = time.perf_counter()
        labels = self.model.predict_proba(texts).argmax(axis=1)
        dt = (time.perf_counter() - t0) / len(texts)
        return [DefensePrediction(int(y), len(tokenize(x)), 1, dt) for x, y in zip(texts, labels)]
