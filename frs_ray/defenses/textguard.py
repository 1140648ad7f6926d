"""TextGuard: split a text's words into m hash groups, let each group's sub-sentence vote, certify by the margin.

Paper: Hengzhi Pei, Jinyuan Jia, Wenbo Guo, Bo Li, Dawn Song. "TextGuard: Provable Defense against Backdoor
Attacks on Text Classification." NDSS 2024, arXiv:2311.11225. The certified baseline of the FRS paper
(Tables 1, 2, 4, 5).

Each word token w goes to group ``h(w) = md5(seed : lower(w)) mod m``; group g's sub-sentence is the text's
group-g words in their original order. A classifier labels each non-empty sub-sentence; the label with most votes
wins, ties going to the smallest label. One word token that is inserted, deleted or substituted (or two adjacent
tokens swapped) changes the sub-sentence of at most one group, so a trigger of r word tokens moves at most r
votes, each from the winner to a rival in the worst case. Hence the label is certified for r while
``N_y - r > N_c + r`` for every rival c, with equality allowed when y < c (the tie-break favours y): see
:func:`textguard_certified_radius`.

Decisions (where the paper or this project leaves room):

- Words are the project's word tokens (punctuation is a token), lower-cased before hashing; the hash is md5 of
  ``"<seed>:<word>"`` (stable across processes and machines, unlike Python's ``hash``).
- ``shared=True`` (default): ONE classifier, fine-tuned from ``ctx.base_model`` on the pooled non-empty
  sub-sentences of all groups of the clean training texts (one fine-tune instead of m; its data is about m
  times larger). ``shared=False``: the paper's m classifiers, classifier g trained on group-g sub-sentences only.
  Both give the same certificate: each vote still depends only on its own group's words.
- An empty group does not vote (its "sub-sentence" carries no information about the input; voting the model's
  label for the empty string would add a constant bias). The certificate stays valid: an edit that fills or
  empties a group adds or removes one vote, which is weaker than moving one. A text with no word tokens abstains.
  Empty training sub-sentences are dropped likewise.
- Training uses the victim's fine-tuning settings (``ctx.finetune``: epochs, learning_rate, max_length,
  batch_size, max_train_examples, seed, ...) with parameter smoothing off; ``max_train_examples`` takes a seeded
  subset of the original texts before they are split into groups.
- Trained models are cached under ``<work_dir>/textguard/`` keyed by (m, shared, seed, data checksum, fine-tuning
  settings, base model); a second build with the same key loads them instead of fine-tuning again.
- Cost: ``queries`` = number of group-model queries (non-empty groups); ``seconds`` = batch time / batch size.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pydantic import Field
from tqdm.auto import tqdm

from ..backends.hf import HFClassifier, resolve_model_path
from ..certify.certificate import ABSTAIN
from ..config import FinetuneConfig, StrictConfig, build
from ..data import TextDataset
from ..errors import ConfigError
from ..smoothing.finetune import META_FILE, finetune, read_meta
from ..storage import build_once
from ..text.tokens import Token, render, tokenize
from .base import Defense, DefenseContext, DefensePrediction
from .registry import register

RADIUS_ASSUMES = (
    "a change of at most `radius` word tokens (inserted, deleted or substituted words, or swapped neighbours; e.g. "
    "a trigger of that many words anywhere in the text) alters at most that many groups' sub-sentences and so "
    "moves at most that many votes (TextGuard, Pei et al. 2023, Theorem 1); the group classifiers are "
    "deterministic; no assumption on where the trigger is"
)


class TextGuardConfig(StrictConfig):
    """Settings of :class:`TextGuard` (unknown fields are rejected)."""

    m: int = Field(3, ge=1, le=256, description="number of word groups / votes (paper: 3 for certified runs)")
    shared: bool = Field(
        True,
        description="one classifier trained on the pooled sub-sentences of all groups "
        "(one fine-tune) instead of one classifier per group (m fine-tunes, the paper's setup)",
    )
    seed: int | None = Field(None, description="salt of the word-to-group hash (default: the context's seed)")
    max_pooled_examples: int | None = Field(
        None,
        ge=1,
        description="train each model on a seeded subset of this many "
        "sub-sentences (the pooled set of the shared model is m times the training "
        "set; capping it keeps TextGuard's training cost at one fine-tune)",
    )


# --------------------------------------------------------------------------- grouping and certificate


def word_group(word: str, m: int, seed: int = 0) -> int:
    """Group of ``word``: md5 of ``"<seed>:<lower-cased word>"`` modulo ``m`` (stable everywhere).

    >>> word_group("Movie", 3) == word_group("movie", 3)
    True
    """
    digest = hashlib.md5(f"{seed}:{word.lower()}".encode("utf-8")).hexdigest()
    return int(digest, 16) % m


def split_groups(text: str, m: int, seed: int = 0) -> list[list[Token]]:
    """The word tokens of ``text`` in m groups, each in text order (a partition of the tokens)."""
    groups: list[list[Token]] = [[] for _ in range(m)]
    for tok in tokenize(text):
        groups[word_group(tok.text, m, seed)].append(tok)
    return groups


def sub_sentences(text: str, m: int, seed: int = 0) -> list[str]:
    """Group g's sub-sentence for g = 0..m-1 (``""`` for an empty group)."""
    return [render([t.text for t in g]) for g in split_groups(text, m, seed)]


def vote_label(votes: Sequence[int]) -> int:
    """The label with most votes, ties to the smallest label (TextGuard's rule; ``np.argmax`` order)."""
    return int(np.argmax(np.asarray(votes)))


def textguard_certified_radius(votes: Sequence[int]) -> int:
    """TextGuard's certificate (Pei et al. 2023, arXiv:2311.11225, Theorem 1): word tokens an attacker may change.

    With vote counts ``N`` (one per label) and ``y`` = :func:`vote_label`, changing r words moves at most r
    votes; in the worst case each moves from y to one rival c, giving ``N_y - r`` against ``N_c + r``. y survives
    iff ``N_y - r > N_c + r``, or ``N_y - r == N_c + r`` and ``y < c``. So the certified radius is

        r* = min over c != y of floor((N_y - N_c - [c < y]) / 2),

    which is the paper's ``floor((N_top - N_second - 1[second < top]) / 2)`` with the runner-up taken as the rival
    that needs the fewest changes. It is 0 when the margin is 0 or 1 (or 2 against a smaller label).

    Args:
        votes: non-negative vote count per label (at least 2 labels).

    Example::

        textguard_certified_radius([3, 0])     # 1: one moved vote leaves 2 vs 1
        textguard_certified_radius([0, 2, 0])  # 0: one moved vote to label 0 ties 1 vs 1, and 0 < 1 wins
    """
    n = np.asarray(votes, dtype=np.int64)
    if n.ndim != 1 or len(n) < 2 or (n < 0).any():
        raise ValueError(f"votes must be >= 0 counts for at least 2 labels, got {list(votes)}")
    y = vote_label(n)
    return int(min((n[y] - n[c] - (1 if c < y else 0)) // 2 for c in range(len(n)) if c != y))


# --------------------------------------------------------------------------- training and caching


def _data_checksum(ds: TextDataset) -> str:
    h = hashlib.sha256()
    for text, label in zip(ds.texts, ds.labels):
        h.update(f"{label}\t{text}\n".encode("utf-8"))
    return h.hexdigest()


@register("textguard")
class TextGuard(Defense):
    """TextGuard (Pei et al. 2023): m hash groups of words, one vote per group, certified by the vote margin.

    Args:
        ctx: the defense context; models are fine-tuned from ``ctx.base_model`` on ``ctx.train`` with the
            settings in ``ctx.finetune`` and cached under ``ctx.work_dir``.
        m: number of groups (default 3).
        shared: one model for all groups (default True) or one per group.
        seed: salt of the word hash (default ``ctx.seed``).

    Example::

        tg = TextGuard(ctx, m=3)
        [p] = tg.predict(["a gripping , funny story ."])
        p.vote_label, p.radius  # radius r: any change of <= r word tokens keeps p.vote_label
    """

    params_model = TextGuardConfig

    name = "textguard"
    certified = True

    def __init__(self, ctx: DefenseContext, **params: Any) -> None:
        self.ctx = ctx
        self.config: TextGuardConfig = build(TextGuardConfig, params)  # type: ignore[assignment]
        self.m = self.config.m
        self.seed = self.config.seed if self.config.seed is not None else int(ctx.seed)
        ft = {k: v for k, v in dict(ctx.finetune).items() if k not in ("data", "data_dir", "model", "smoothing")}
        self.ft_config: FinetuneConfig = build(  # type: ignore[assignment]
            FinetuneConfig, {**ft, "model": str(ctx.base_model), "smoothing": {"finetune_mode": "none"}}
        )
        self.train = ctx.train.subset(self.ft_config.max_train_examples, seed=self.ft_config.seed)
        if len(self.train) == 0:
            raise ConfigError("TextGuard needs clean training data (ctx.train is empty)")
        self.data_sha256 = _data_checksum(self.train)
        key = {
            "m": self.m,
            "shared": self.config.shared,
            "seed": self.seed,
            "max_pooled": self.config.max_pooled_examples,
            "data_sha256": self.data_sha256,
            "num_labels": self.train.num_labels,
            "base_model": str(resolve_model_path(str(ctx.base_model)).resolve()),
            "finetune": self.ft_config.model_dump(exclude={"data", "data_dir", "model"}),
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
        kind = "shared" if self.config.shared else "pergroup"
        self.cache_dir = Path(ctx.work_dir) / "textguard" / f"m{self.m}-{kind}-seed{self.seed}-{digest}"
        self.trained: list[Path] = []  # model folders fine-tuned by this build (empty when all were cached)
        self.model_dirs = self._build_models(key)
        self.classifiers = [HFClassifier(d, max_length=self.ft_config.max_length, device=ctx.device) for d in self.model_dirs]

    # training ---------------------------------------------------------------------------------------
    def _group_dataset(self, groups: Sequence[int], tag: str) -> TextDataset:
        texts, labels = [], []
        for text, label in zip(self.train.texts, self.train.labels):
            subs = sub_sentences(text, self.m, self.seed)
            for g in groups:
                if subs[g]:
                    texts.append(subs[g])
                    labels.append(label)
        # label_names fixed so that a group missing the largest label still gets a head of num_labels outputs
        names = self.train.label_names or [str(i) for i in range(self.train.num_labels)]
        ds = TextDataset(
            texts=texts,
            labels=labels,
            source=f"{self.train.source} [textguard {tag}]",
            sha256=self.data_sha256,
            label_names=names,
        )
        return ds.subset(self.config.max_pooled_examples, seed=self.seed)

    def _build_models(self, key: dict[str, Any]) -> list[Path]:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        (self.cache_dir / "key.json").write_text(json.dumps(key, indent=2, sort_keys=True, default=str))
        if self.config.shared:
            plan = [("model", list(range(self.m)))]
        else:
            plan = [(f"group-{g}", [g]) for g in range(self.m)]
        dirs = []
        for name, groups in plan:
            target = self.cache_dir / name
            if (target / META_FILE).is_file():
                read_meta(target)  # raises CheckpointError on a corrupt cache entry
                dirs.append(target)
                continue
            ds = self._group_dataset(groups, name)
            if len(ds) == 0:
                raise ConfigError(f"TextGuard {name}: no training words fall into this group; lower m or give more training data")
            # built in a private folder; a copy another process finished meanwhile is kept, ours dropped
            build_once(
                target,
                META_FILE,
                lambda tmp, ds=ds: finetune(self.ft_config, ds, tmp, device=self.ctx.device, progress=self.ctx.progress),
            )
            self.trained.append(target)
            dirs.append(target)
        return dirs

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "m": self.m,
            "shared": self.config.shared,
            "seed": self.seed,
            "base_model": str(self.ctx.base_model),
            "data_sha256": self.data_sha256,
            "train_examples": len(self.train),
            "cache_dir": str(self.cache_dir),
            "finetune": self.ft_config.model_dump(exclude={"data", "data_dir"}),
        }

    # prediction -------------------------------------------------------------------------------------
    def group_votes(self, texts: Sequence[str]) -> list[list[int | None]]:
        """Per text, the label each group votes (``None`` for an empty group)."""
        subs = [sub_sentences(x, self.m, self.seed) for x in texts]
        votes: list[list[int | None]] = [[None] * self.m for _ in texts]
        if self.config.shared:
            jobs = [[(i, g) for i in range(len(texts)) for g in range(self.m) if subs[i][g]]]
        else:
            jobs = [[(i, g) for i in range(len(texts)) if subs[i][g]] for g in range(self.m)]
        for model_idx, job in enumerate(jobs):
            if not job:
                continue
            probs = self.classifiers[model_idx].predict_proba([subs[i][g] for i, g in job])
            for (i, g), p in zip(job, probs):
                votes[i][g] = int(np.argmax(p))
        return votes

    def predict(self, texts: Sequence[str]) -> list[DefensePrediction]:
        texts = list(texts)
        num_labels = self.classifiers[0].num_labels
        out: list[DefensePrediction] = []
        step = 64
        bar = tqdm(total=len(texts), desc="textguard", unit="text", disable=not self.ctx.progress)
        for s in range(0, len(texts), step):
            chunk = texts[s : s + step]
            started = time.perf_counter()
            votes = self.group_votes(chunk)
            seconds = (time.perf_counter() - started) / max(1, len(chunk))
            for x, vs in zip(chunk, votes):
                cast = [v for v in vs if v is not None]
                counts = np.bincount(np.asarray(cast, dtype=np.int64), minlength=num_labels)
                if not cast:
                    label, radius = ABSTAIN, 0.0
                else:
                    label, radius = vote_label(counts), float(textguard_certified_radius(counts))
                out.append(
                    DefensePrediction(
                        vote_label=label,
                        length_tokens=len(tokenize(x)),
                        queries=len(cast),
                        seconds=seconds,
                        radius=radius,
                        radius_assumes=RADIUS_ASSUMES,
                        radius_unconditional=radius,
                        spans=[],
                        certified_label=label,
                    )
                )
            bar.update(len(chunk))
        bar.close()
        return out


__all__ = [
    "TextGuard",
    "TextGuardConfig",
    "sub_sentences",
    "split_groups",
    "textguard_certified_radius",
    "vote_label",
    "word_group",
]
