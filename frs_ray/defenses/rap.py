"""RAP: reject protected-label inputs whose prediction is too robust to a tuned rare-word perturbation.

Paper: Wenkai Yang, Yankai Lin, Peng Li, Jie Zhou, Xu Sun. "RAP: Robustness-Aware Perturbations for Defending
against Backdoor Attacks on NLP Models." EMNLP 2021 (arXiv:2110.07831). An empirical (uncertified) online detector.

A triggered input is predicted as the attacker's target label with a confidence that small perturbations hardly
move; clean inputs of that label are less robust. RAP builds one such perturbation: a rare word w (the "RAP
word") whose input-embedding row(s), and nothing else, are tuned on clean texts of the protected label y so that
the drop ``d(x) = p_y(x) - p_y(w + x)`` falls in ``[a, b]``. The loss is the paper's two-sided hinge
(``scale`` is its lambda):

    L = mean over clean training texts of label y of   scale * max(0, a - d(x)) + max(0, d(x) - b).

An input the plain model labels y is rejected when d(x) is below a threshold: the FRR-quantile of d over held-out
clean texts of label y.

Decisions (where the paper or this project leaves room):

- RAP word: default "rq", one WordPiece of the MiniLM/BERT vocabulary that occurs in none of the SST-2 files and
  is none of the project's attack triggers (cf mn bb tq mb; the paper's own "cf" is one of them). A word of
  several pieces is accepted: all its pieces' rows are tuned (those pieces then also shift inside other words that
  contain them). A word the tokenizer maps to its unknown token is refused (that row is shared by all unknown words).
- Insertion: at the start of the text (the official code always inserts at position 0), with
  :func:`frs_ray.attacks.base.insert_pieces`; the same in training, calibration and testing, so no seed is involved.
- Optimisation (as the official code): only the rows move; each step subtracts ``lr`` times the rows' gradient
  *accumulated over all steps so far* (that code never clears it, "for faster convergence", as Embedding Poisoning
  does) and rescales each row to its original L2 norm. Unlike that code, dropout is off and the training texts
  are reshuffled every epoch with ``seed``.
- One model: the plain checkpoint. p_y(x) always uses its original rows; the tuned rows are swapped in only for
  the w + x pass (:meth:`RAP.rap_active`). So accepted inputs get exactly the plain model's label, and d(x) equals
  the paper's value whenever x does not already contain w's pieces.
- Data: the texts of ``ctx.train`` labelled y, shuffled with ``seed``: the first ``n_train`` train the rows, the
  next ``n_calibration`` calibrate (disjoint); both shrink in proportion when there are too few.
- Threshold: ``np.quantile(drops, frr)`` (linear interpolation; the official code's ``np.nanpercentile``) over the
  calibration texts that the plain model labels y (as the official evaluation); all of them if it labels none y.
  Rejected iff d(x) < threshold.
- Output: a rejected input gets ``vote_label = ABSTAIN``: wrong for CA/PA and never an attack success. Other inputs
  keep the plain model's argmax label. ``radius`` and ``certified_label`` are ``None``; no spans.
- Cost: ``queries`` = 2 for every input (both passes are run for all); ``seconds`` = chunk time / chunk size.
- Cache: ``<work_dir>/rap/<word>-y<label>-<hash>/`` holds ``rows.safetensors`` (the tuned rows) and ``rap.json``
  (threshold, calibration drops, losses), keyed by the settings, ``max_length``, the checkpoint (resolved path,
  weight files' sizes and mtimes), the piece ids and the sha256 of the training and calibration texts.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..attacks.base import insert_pieces
from ..certify.certificate import ABSTAIN
from ..config import StrictConfig, build
from ..errors import CheckpointError, ConfigError
from ..storage import build_once
from ..text.tokens import tokenize
from .base import Defense, DefenseContext, DefensePrediction
from .registry import register

CACHE_MARKER = "rap.json"  # a cache entry is complete when this file exists

CHUNK = 64  # inputs classified together in predict (one progress step each)


class RAPConfig(StrictConfig):
    """Settings of :class:`RAP` (unknown fields are rejected)."""

    rap_word: str = Field("rq", description="RAP word inserted at each text's start; only its embedding rows are tuned")
    protect_label: int = Field(1, ge=0, description="label an attacker would target; only inputs labelled so are checked")
    a: float = Field(0.1, ge=0, lt=1, allow_inf_nan=False, description="lower end of the wanted drop of p_y (paper: 0.1)")
    b: float = Field(0.3, gt=0, le=1, allow_inf_nan=False, description="upper end of the wanted drop of p_y (paper: 0.3)")
    scale: float = Field(1.0, gt=0, allow_inf_nan=False, description="weight of the lower hinge (the paper's lambda)")
    frr: float = Field(0.05, gt=0, lt=0.5, description="false rejection rate on the clean calibration texts of label y")
    lr: float = Field(1e-2, gt=0, allow_inf_nan=False, description="step size of the row updates (official: 1e-2)")
    epochs: int = Field(5, ge=1, le=1000, description="passes over the training texts (official: 5)")
    n_train: int = Field(200, ge=1, description="clean texts of label y from ctx.train that tune the rows")
    n_calibration: int = Field(200, ge=1, description="further clean texts of label y that set the threshold")
    batch_size: int = Field(32, ge=1, le=4096, description="texts per optimisation step (official: 32)")
    seed: int | None = Field(None, description="seed of the data split and shuffling (default: the context's seed)")
    max_length: int | None = Field(
        None, ge=8, le=8192, description="classifier tokens per text (default: the victim's fine-tuning max_length, else 128)"
    )

    @field_validator("rap_word")
    @classmethod
    def _one_word(cls, word: str) -> str:
        toks = tokenize(word)
        if len(toks) != 1 or toks[0].text != word:
            raise ValueError("must be exactly one word token (no spaces or punctuation)")
        return word

    @model_validator(mode="after")
    def _range(self) -> "RAPConfig":
        if self.a >= self.b:
            raise ValueError(f"a ({self.a}) must be smaller than b ({self.b})")
        return self


def rap_loss(drops: torch.Tensor, a: float, b: float, scale: float = 1.0) -> torch.Tensor:
    """RAP's hinge: mean of ``scale * max(0, a - d) + max(0, d - b)``; zero when every drop d lies in [a, b]."""
    return (scale * torch.relu(a - drops) + torch.relu(drops - b)).mean()


def rap_threshold(drops: Sequence[float], frr: float) -> float:
    """The ``frr``-quantile of clean drops (numpy's linear interpolation); non-finite drops are ignored."""
    d = np.asarray(drops, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        raise ValueError("no finite calibration drops")
    return float(np.quantile(d, frr))


def _sha(texts: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()


@register("rap")
class RAP(Defense):
    """RAP (Yang et al., EMNLP 2021): reject label-y inputs whose p_y drops too little when the RAP word is added.

    ``ctx.plain_checkpoint`` is the protected model (read, never written), ``ctx.train`` gives clean texts of label
    y, ``ctx.work_dir`` caches the tuned rows; ``params``: see :class:`RAPConfig`. Example::

        rap = RAP(ctx, protect_label=1)
        [p] = rap.predict(["a gripping cf story ."])  # p.vote_label: ABSTAIN if labelled 1 and too robust to "rq"
    """

    params_model = RAPConfig

    name = "rap"
    certified = False

    def __init__(self, ctx: DefenseContext, **params: Any) -> None:
        self.ctx = ctx
        self.config: RAPConfig = build(RAPConfig, params)  # type: ignore[assignment]
        cfg = self.config
        self.seed = cfg.seed if cfg.seed is not None else int(ctx.seed)
        self.classifier = ctx.plain_classifier(cfg.max_length)
        n_labels = self.classifier.num_labels
        if cfg.protect_label >= n_labels:
            raise ConfigError(
                f"protect_label {cfg.protect_label} is not a label of {ctx.plain_checkpoint} (labels 0..{n_labels - 1})"
            )
        tok = self.classifier.tokenizer
        ids = list(dict.fromkeys(tok(cfg.rap_word, add_special_tokens=False)["input_ids"]))
        if not ids or (tok.unk_token_id is not None and tok.unk_token_id in ids):
            raise ConfigError(f"rap_word {cfg.rap_word!r}: the tokenizer maps it to its unknown token; choose another rare word")
        self.piece_ids = [int(i) for i in ids]
        self.pieces = tok.convert_ids_to_tokens(self.piece_ids)
        self.embedding = self.classifier.model.get_input_embeddings().weight
        self._index = torch.tensor(self.piece_ids, device=self.embedding.device)
        self.plain_rows = self.embedding.detach()[self._index].clone()
        train, calib = self._split()
        self.n_train_used, self.n_calibration_used = len(train), len(calib)
        weights = sorted(Path(self.classifier.path).glob("*.safetensors"))
        key = {
            "config": cfg.model_dump(exclude={"seed"}),
            "seed": self.seed,
            "max_length": self.classifier.max_length,
            "checkpoint": str(Path(self.classifier.path).resolve()),
            "piece_ids": self.piece_ids,
            "weights": [[w.name, w.stat().st_size, w.stat().st_mtime_ns] for w in weights],
            "train_sha256": _sha(train),
            "calibration_sha256": _sha(calib),
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        self.cache_dir = Path(ctx.work_dir) / "rap" / f"{cfg.rap_word}-y{cfg.protect_label}-{digest}"
        self.trained = False  # True when this build tuned the rows (False: read from the cache)
        if not self._load():
            self.rap_rows, self.losses = self._optimize(train)
            probs, drops = self.drops(calib)
            keep = probs.argmax(1) == cfg.protect_label
            self.calibration_drops = [float(d) for d in (drops[keep] if keep.any() else drops)]
            self.threshold = rap_threshold(self.calibration_drops, cfg.frr)
            self.trained = True
            self._save(key)

    # data and cache ---------------------------------------------------------------------------------
    def _split(self) -> tuple[list[str], list[str]]:
        cfg = self.config
        pool = [x for x, y in zip(self.ctx.train.texts, self.ctx.train.labels) if y == cfg.protect_label]
        if len(pool) < 2:
            raise ConfigError(
                f"protect_label {cfg.protect_label}: RAP needs at least 2 clean training texts of "
                f"that label, ctx.train has {len(pool)}"
            )
        order = np.random.default_rng(self.seed).permutation(len(pool))
        n_train, n_cal = cfg.n_train, cfg.n_calibration
        if n_train + n_cal > len(pool):
            n_cal = min(len(pool) - 1, max(1, round(len(pool) * n_cal / (n_train + n_cal))))
            n_train = len(pool) - n_cal
        return [pool[i] for i in order[:n_train]], [pool[i] for i in order[n_train : n_train + n_cal]]

    def _load(self) -> bool:
        """Read the tuned rows and threshold from the cache; False (train) when the entry is absent.

        Entries appear complete or not at all (:func:`~frs_ray.storage.build_once`), so an entry that is there but
        unreadable was damaged from outside: ``CheckpointError`` names it instead of silently retraining.
        """
        if not (self.cache_dir / CACHE_MARKER).is_file():
            return False
        try:
            meta = json.loads((self.cache_dir / CACHE_MARKER).read_text())
            rows = load_file(str(self.cache_dir / "rows.safetensors"))["rows"]
            threshold, drops, losses = float(meta["threshold"]), list(meta["calibration_drops"]), meta["losses"]
        except (OSError, KeyError, TypeError, ValueError, SafetensorError) as exc:  # ValueError: bad JSON
            raise CheckpointError(f"RAP cache entry {self.cache_dir} is damaged ({exc}); delete it to retrain") from None
        if meta.get("piece_ids") != self.piece_ids or tuple(rows.shape) != tuple(self.plain_rows.shape):
            raise CheckpointError(
                f"RAP cache entry {self.cache_dir} does not match its key (pieces "
                f"{meta.get('piece_ids')}, rows {tuple(rows.shape)}); delete it to retrain"
            )
        self.rap_rows, self.threshold, self.calibration_drops, self.losses = rows.to(self.plain_rows), threshold, drops, losses
        return True

    def _save(self, key: dict[str, Any]) -> None:
        """Cache the tuned rows; if another process cached the same key meanwhile, use its entry (never delete it)."""
        meta = {
            "key": key,
            "piece_ids": self.piece_ids,
            "pieces": self.pieces,
            "threshold": self.threshold,
            "calibration_drops": self.calibration_drops,
            "losses": self.losses,
        }

        def write(tmp: Path) -> None:
            tmp.mkdir(parents=True)
            save_file({"rows": self.rap_rows.detach().cpu().contiguous()}, str(tmp / "rows.safetensors"))
            (tmp / CACHE_MARKER).write_text(json.dumps(meta, indent=2, sort_keys=True))  # the marker: written last

        if not build_once(self.cache_dir, CACHE_MARKER, write):
            self._load()

    # the perturbation -------------------------------------------------------------------------------
    def insert(self, text: str) -> str:
        """``text`` with the RAP word inserted at its start."""
        return insert_pieces(text, [[self.config.rap_word]], "start", np.random.default_rng(0)).text

    @contextmanager
    def rap_active(self) -> Iterator[None]:
        """Swap the tuned rows into the model for the duration of the block (the plain rows come back after)."""
        with torch.no_grad():
            self.embedding[self._index] = self.rap_rows.to(self.embedding)
        try:
            yield
        finally:
            with torch.no_grad():
                self.embedding[self._index] = self.plain_rows

    def _optimize(self, texts: list[str]) -> tuple[torch.Tensor, list[float]]:
        cfg, model = self.config, self.classifier.model
        base = torch.as_tensor(self.classifier.predict_proba(texts)[:, cfg.protect_label], dtype=torch.float32)
        perturbed = [self.insert(x) for x in texts]
        rows = self.plain_rows.clone()
        norms = rows.norm(dim=1, keepdim=True)
        grad_sum = torch.zeros_like(rows)
        grad_flags = [p.requires_grad for p in model.parameters()]
        rng = np.random.default_rng(self.seed)
        losses: list[float] = []
        bar = tqdm(total=cfg.epochs, desc="rap", unit="epoch", disable=not self.ctx.progress)
        try:
            for p in model.parameters():
                p.requires_grad_(False)
            self.embedding.requires_grad_(True)
            for _ in range(cfg.epochs):
                total = 0.0
                order = rng.permutation(len(texts))
                for s in range(0, len(texts), cfg.batch_size):
                    idx = order[s : s + cfg.batch_size]
                    with torch.no_grad():
                        self.embedding[self._index] = rows
                    self.embedding.grad = None
                    logits = model(**self.classifier.encode([perturbed[i] for i in idx])).logits.float()
                    p_rap = torch.softmax(logits, dim=-1)[:, cfg.protect_label]
                    loss = rap_loss(base[idx].to(p_rap.device) - p_rap, cfg.a, cfg.b, cfg.scale)
                    loss.backward()
                    with torch.no_grad():
                        grad_sum += self.embedding.grad[self._index]
                        rows = rows - cfg.lr * grad_sum
                        rows = rows * (norms / rows.norm(dim=1, keepdim=True).clamp_min(1e-12))
                    total += loss.item() * len(idx)
                losses.append(total / len(texts))
                bar.update(1)
        finally:
            bar.close()
            self.embedding.grad = None
            for p, flag in zip(model.parameters(), grad_flags):
                p.requires_grad_(flag)
            with torch.no_grad():
                self.embedding[self._index] = self.plain_rows
        return rows.detach(), losses

    def drops(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Plain-model probabilities of ``texts`` and their drops ``p_y(x) - p_y(w + x)`` (tuned rows for w + x)."""
        probs = self.classifier.predict_proba(list(texts))
        with self.rap_active():
            rap = self.classifier.predict_proba([self.insert(x) for x in texts])
        y = self.config.protect_label
        return probs, probs[:, y] - rap[:, y]

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            **self.config.model_dump(),
            "seed": self.seed,
            "threshold": self.threshold,
            "pieces": self.pieces,
            "n_train_used": self.n_train_used,
            "n_calibration_used": self.n_calibration_used,
            "cache_dir": str(self.cache_dir),
            "plain_checkpoint": str(self.ctx.plain_checkpoint),
        }

    def predict(self, texts: Sequence[str]) -> list[DefensePrediction]:
        texts = list(texts)
        y = self.config.protect_label
        out: list[DefensePrediction] = []
        bar = tqdm(total=len(texts), desc="rap", unit="text", disable=not self.ctx.progress)
        for s in range(0, len(texts), CHUNK):
            chunk = texts[s : s + CHUNK]
            started = time.perf_counter()
            probs, drops = self.drops(chunk)
            seconds = (time.perf_counter() - started) / max(1, len(chunk))
            for x, p, d in zip(chunk, probs, drops):
                label = int(np.argmax(p))
                if label == y and d < self.threshold:
                    label = ABSTAIN
                out.append(
                    DefensePrediction(
                        vote_label=label,
                        length_tokens=len(tokenize(x)),
                        queries=2,
                        seconds=seconds,
                        radius=None,
                        spans=[],
                        certified_label=None,
                    )
                )
            bar.update(len(chunk))
        bar.close()
        return out


__all__ = ["RAP", "RAPConfig", "rap_loss", "rap_threshold"]
