"""Fine-tuning phase of BMPS (Eq. 4) with AdamW and a linear warm-up/decay schedule (Appendix B.2.4).

``finetune`` trains a transformers sequence classifier and writes a checkpoint folder: safetensors weights,
the tokenizer, and ``frs.json`` recording every setting, the seed, the data checksum, the smoothed parameter
names and their reference norms (for Clip_rho), library versions and timings.
"""

from __future__ import annotations

import json
import math
import platform
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, ContextManager

import numpy as np
import torch

from ..backends.hf import HFClassifier, resolve_model_path
from ..config import FinetuneConfig, LoraConfig
from ..data import TextDataset
from ..errors import CheckpointError, ConfigError, DataError
from ..training import adamw, epoch_batches, linear_schedule
from ..training import train as train_loop
from .bmps import apply_clip_, finetune_noise_step, perturbed, reference_norms
from .data_noise import randomize_training_text
from .layers import head_names, hf_named_parameters, select_top_h

META_FILE = "frs.json"
FORMAT_VERSION = 1


def finetune(
    config: FinetuneConfig,
    train: TextDataset,
    out_dir: str | Path,
    device: str | None = None,
    progress: bool = True,
    norms: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Fine-tune ``config.model`` on ``train`` with the smoothing of ``config.smoothing``; return the metadata.

    ``norms``: reference norms for Clip_rho (default: those of ``config.model``'s weights). Continuing a smoothed
    fine-tune from its own checkpoint passes the norms of the original pre-trained weights, so Clip_rho stays
    relative to them.

    Smoothing modes (``config.smoothing.finetune_mode``): ``perturb`` (default; fresh noise on the top-H
    tensors for each step's forward/backward, gradient applied to the clean weights, then Clip_rho),
    ``accumulate`` (literal Eq. 4: optimizer step, Clip_rho, then noise that stays in the weights), ``none``.
    ``config.smoothing.data_noise`` > 0 also randomizes the training texts (Eq. 3, see ``data_noise``).
    ``config.lora`` trains LoRA adapters and the head instead of every parameter (:func:`wrap_lora`); the saved
    weights are merged.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / META_FILE).exists():
        raise CheckpointError(f"output folder {out} exists and is not an FRS checkpoint; choose an empty or new folder")
    if len(train) == 0:
        raise DataError(f"training data {train.source} has no rows")
    torch.manual_seed(config.seed)
    backend = HFClassifier(config.model, num_labels=train.num_labels, max_length=config.max_length, device=device)
    model, tok = backend.model, backend.tokenizer
    sm = config.smoothing
    exact = backend.new_parameters if sm.new_head == "exact" else ()
    selection = select_top_h(model, sm.top_h, exact=exact)
    norms = dict(norms) if norms is not None else reference_norms(model, selection)
    lengths = backend.token_lengths(train.texts)
    too_long = [i for i, n in enumerate(lengths) if n > backend.max_length]
    n_truncated = len(too_long)

    head = head_names(model)  # trained fully under LoRA, smoothed or exact
    if config.lora is not None:  # after the selection and norms: those are of the plain (unwrapped) model
        model = wrap_lora(model, config.lora, head_names=head)
    trainable = [p for p in model.parameters() if p.requires_grad]

    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = max(1, int(round(steps_per_epoch * config.epochs)))
    optimizer = adamw(param_groups(model, trainable, head, config), config.learning_rate, config.weight_decay)
    schedule = linear_schedule(int(config.warmup_ratio * total_steps), total_steps)
    data_gen = torch.Generator().manual_seed(config.seed)
    noise_gen = torch.Generator().manual_seed(config.seed + 1)
    labels = torch.tensor(train.labels)
    text_rng = np.random.default_rng([config.seed, 3])

    def loss_of(batch: list[int]) -> torch.Tensor:
        texts = [train.texts[i] for i in batch]
        if sm.data_noise > 0:  # Eq. 3's D_F + eps: a fresh randomization of each text at every step
            texts = [randomize_training_text(t, sm.data_noise, text_rng, backend.filler_token) for t in texts]
        enc = backend.encode(texts)
        return torch.nn.functional.cross_entropy(model(**enc).logits, labels[batch].to(backend.device))

    around_step: Callable[[], ContextManager[object]] | None = None
    after_step: Callable[[], object] | None = None
    if sm.finetune_mode == "perturb" and sm.sigma > 0:  # fresh Eq. 4 noise for each forward/backward pass
        around_step = partial(perturbed, model, selection, sm.sigma, noise_gen)
    if sm.finetune_mode == "accumulate" and sm.sigma > 0:  # literal Eq. 4: Clip_rho, then noise that stays
        after_step = partial(finetune_noise_step, model, selection, norms, sm.rho, sm.sigma, noise_gen)
    elif sm.finetune_mode == "perturb":  # the gradient was applied to the clean weights: Clip_rho
        after_step = partial(apply_clip_, model, selection, norms, sm.rho)

    model.train()
    started = time.perf_counter()
    losses = train_loop(
        trainable,
        epoch_batches(len(train), config.batch_size, data_gen),
        total_steps,
        loss_of,
        optimizer,
        schedule,
        around_step=around_step,
        after_step=after_step,
        desc="fine-tune",
        progress=progress,
    )
    step = len(losses)
    seconds = time.perf_counter() - started
    model.eval()
    if config.lora is not None:
        model = model.merge_and_unload()  # a plain transformers folder: W + (alpha / r) B A in every adapted layer

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    import transformers

    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": config.model_dump(),
        "base_model": str(resolve_model_path(config.model)),
        "data": {
            "source": train.source,
            "sha256": train.sha256,
            "examples": len(train),
            "label_names": train.label_names,
            "texts_over_max_length": n_truncated,
        },
        "num_labels": train.num_labels,
        "max_length": backend.max_length,
        "smoothing": {
            "names": list(selection.names),
            "top_h": selection.top_h,
            "depth": selection.depth,
            "stack": selection.stack_name,
            "numel": selection.numel(model),
            "exact": sorted(exact),
            "reference_norms": norms,
        },
        "training": {
            "trainable_parameters": int(sum(p.numel() for p in trainable)),
            "lora": config.lora.model_dump() if config.lora is not None else None,
            "steps": step,
            "seconds": round(seconds, 2),
            "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
        },
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()},
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    return meta


def param_groups(
    model: torch.nn.Module, trainable: list[torch.nn.Parameter], head_names: list[str], config: FinetuneConfig
) -> list[torch.nn.Parameter] | list[dict[str, Any]]:
    """What AdamW trains: ``trainable`` as one group, or, for LoRA with ``lora.head_learning_rate`` set, the adapters
    at the fine-tune's rate and the head (``head_names``) at its own rate; the schedule scales both."""
    if config.lora is None or config.lora.head_learning_rate is None:
        return trainable
    named = hf_named_parameters(model)
    head = {id(named[n]) for n in head_names}
    return [
        {"params": [p for p in trainable if id(p) not in head]},
        {"params": [p for p in trainable if id(p) in head], "lr": config.lora.head_learning_rate},
    ]


def wrap_lora(model: torch.nn.Module, lora: LoraConfig, head_names: list[str]) -> torch.nn.Module:
    """``model`` with LoRA adapters on ``lora.target_modules`` (base weights frozen) and the parameters
    ``head_names`` (the classification head and everything after the block stack) trained fully.

    The head is unfrozen in place rather than copied (peft's ``modules_to_save``), so the smoothed tensors keep
    their objects and names: Eq. 4's noise on a wrapped layer's base weight is noise on its effective weight
    W + (alpha / r) B A, and Clip_rho of Eq. 5 applies to the merged weights when the checkpoint is loaded."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    names = {n.rpartition(".")[2] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    missing = [t for t in lora.target_modules if t not in names]
    if missing:
        raise ConfigError(
            f"LoRA target modules {missing} are not linear layers of {type(model).__name__} (it has {sorted(names)[:12]})"
        )
    peft_cfg = PeftLoraConfig(
        r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules), bias="none"
    )
    wrapped = get_peft_model(model, peft_cfg)
    params = hf_named_parameters(wrapped)
    for name in head_names:
        params[name].requires_grad_(True)
    return wrapped


def read_meta(checkpoint: str | Path) -> dict[str, Any]:
    """Read and check ``frs.json`` of a checkpoint folder."""
    path = Path(checkpoint) / META_FILE
    if not path.is_file():
        raise CheckpointError(f"{checkpoint} is not an FRS checkpoint (no {META_FILE}); create one with `frs finetune`")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {meta.get('format_version')}, expected {FORMAT_VERSION}")
    return meta
