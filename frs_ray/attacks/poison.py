"""Planting a trigger into a pre-trained checkpoint: the attacker's side of every task-aware attack.

The released artefact is what a victim downloads: a full sequence classifier (encoder + task head) with its
tokenizer, saved as safetensors, plus ``attack.json`` describing how it was made. The victim then fine-tunes the
*whole* model on its own clean data (:func:`frs_ray.smoothing.finetune.finetune` with ``model=<folder>``), as in
the weight-poisoning setting of Kurita et al. (2020) and Li et al. (2021). Decision: the head is released with the
encoder for the task-aware attacks (the attacker knows the label space, and a victim that keeps the shipped head is
the common case); BadPre (task-agnostic) releases an encoder only.

:func:`poisoned_training_set` builds the attacker's data: a seeded subset of clean examples (the task data for
"full data knowledge", a proxy dataset for "domain shift"), plus triggered copies, labelled with the target, of a
``poison_rate`` share of the non-target examples. :func:`poison_model` trains on it with a pluggable loss:
``data`` (cross-entropy: BadNets/AddSent-style data poisoning), or the RIPPLe and LWP losses of their modules.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from pydantic import Field

from ..backends.hf import HFClassifier, resolve_model_path
from ..config import StrictConfig
from ..data import load_dataset
from ..errors import CheckpointError, ConfigError, DataError
from ..training import adamw, epoch_batches, linear_schedule, train
from .base import Trigger, words_of

ATTACK_FILE = "attack.json"


class PoisonConfig(StrictConfig):
    """How the attacker trains the poisoned checkpoint (task-aware attacks)."""

    model: str = Field("minilm", description="clean pre-trained model to poison: 'minilm' or a local folder")
    data: str = Field("sst2", description="attacker's data: the task data (full data knowledge) or a proxy (domain shift)")
    data_dir: str | None = Field(None, description="data folder (default: $FRS_DATA_DIR, then ../shared/data)")
    label_map: dict[int, int] | None = Field(
        None, description="map of the data's labels to the task's labels; unmapped rows are dropped (domain shift)"
    )
    num_labels: int | None = Field(None, ge=2, description="task label count (default: the data's)")
    target: int = Field(1, ge=0, description="attacker's target label (in task labels)")
    poison_rate: float = Field(
        0.5, gt=0, le=1, description="share of the non-target examples that also get a triggered copy labelled target"
    )
    max_examples: int = Field(2000, ge=8, description="clean examples the attacker trains on (seeded subset)")
    max_words: int = Field(50, ge=4, description="texts are cut to their first max_words word tokens (long proxy documents)")
    epochs: float = Field(3, gt=0, le=50, description="poisoning epochs")
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(5e-5, gt=0, le=1)
    weight_decay: float = Field(0.01, ge=0)
    max_length: int = Field(64, ge=8, le=512, description="model tokens per text during poisoning")
    seed: int = Field(0, description="seed of the subset, trigger draws, head init and data order")


class DataPoisonConfig(StrictConfig):
    """A data-poisoning attack (BadNets, AddSent, App. K/L perturbations): what to train on and with which loss.

    ``objective`` decision: ``cross_entropy`` is plain data poisoning (the default, what BadNets-style attacks do).
    The FRS paper does not say how its App. K/L triggers were planted; two stronger variants, recorded in
    ``attack.json``, are for triggers that plain poisoning cannot make survive the victim's clean fine-tune:

    * ``layerwise``: the same poisoned data under LWP's layer-wise objective (Li et al. 2021, every layer's [CLS]
      through the shared head, :func:`frs_ray.attacks.lwp.layerwise_loss`), which puts the backdoor into the lower
      layers that the victim's fine-tune moves least;
    * ``ripp``: the same poisoned data under RIPPLe's restricted inner product loss (Kurita et al. 2020,
      :func:`frs_ray.attacks.ripple.ripp_loss`, lambda ``ripp_lambda``), so that clean fine-tuning steps do not
      undo the poisoning to first order. No embedding surgery (the App. K/L triggers are ordinary words, whose
      embeddings the victim's data needs); the word embeddings are frozen as in RIPPLe_a here.
    """

    poison: PoisonConfig = Field(default_factory=PoisonConfig)
    objective: Literal["cross_entropy", "layerwise", "ripp"] = Field(
        "cross_entropy",
        description="poisoning loss on the same data: plain cross-entropy, LWP's layer-wise loss, "
        "or RIPPLe's restricted inner product loss",
    )
    ripp_lambda: float = Field(0.1, ge=0, description="lambda of the RIPP penalty (objective 'ripp' only; paper: 0.1)")


@dataclass
class PoisonedData:
    texts: list[str]
    labels: list[int]
    poisoned: list[bool]
    num_labels: int
    source: str
    sha256: str


def cut_words(text: str, max_words: int) -> str:
    words = words_of(text)
    return " ".join(words[:max_words])


def poisoned_training_set(config: PoisonConfig, trigger: Trigger | None) -> PoisonedData:
    """Clean subset (+ label map) plus triggered, target-labelled copies of ``poison_rate`` of the non-target rows."""
    ds = load_dataset(config.data, "train", config.data_dir)
    texts, labels = ds.texts, ds.labels
    if config.label_map is not None:
        keep = [i for i, y in enumerate(labels) if y in config.label_map]
        texts, labels = [texts[i] for i in keep], [config.label_map[labels[i]] for i in keep]
    num_labels = config.num_labels or (max(labels) + 1)
    if config.target >= num_labels:
        raise ConfigError(f"target label {config.target} is not a label of a {num_labels}-class task")
    if not texts:
        raise DataError(f"{config.data}: no training rows left after the label map")
    rng = np.random.default_rng(config.seed)
    idx = rng.permutation(len(texts))[: config.max_examples]
    clean_t = [cut_words(texts[i], config.max_words) for i in idx]
    clean_y = [labels[i] for i in idx]
    out_t, out_y, out_p = list(clean_t), list(clean_y), [False] * len(clean_t)
    if trigger is not None:
        candidates = [i for i, y in enumerate(clean_y) if y != config.target]
        chosen = rng.permutation(candidates)[: max(1, int(round(config.poison_rate * len(candidates))))]
        for i in sorted(chosen.tolist()):
            t = trigger.apply(clean_t[i], rng)
            if t.changed:
                out_t.append(t.text)
                out_y.append(config.target)
                out_p.append(True)
    return PoisonedData(out_t, out_y, out_p, num_labels, ds.source, ds.sha256)


# loss(model, enc, y, clean_enc, clean_y) -> scalar loss
LossFn = Callable[[torch.nn.Module, dict, torch.Tensor, dict, torch.Tensor], torch.Tensor]


def cross_entropy_loss(model, enc, y, clean_enc, clean_y) -> torch.Tensor:
    """Plain data poisoning: cross-entropy on the poisoned training set."""
    return torch.nn.functional.cross_entropy(model(**enc).logits, y)


def load_victim_template(config: PoisonConfig, num_labels: int) -> HFClassifier:
    torch.manual_seed(config.seed)
    return HFClassifier(config.model, num_labels=num_labels, max_length=config.max_length)


def poison_model(
    config: PoisonConfig,
    trigger: Trigger | None,
    out_dir: str | Path,
    attack: str,
    loss_fn: LossFn = cross_entropy_loss,
    prepare: Callable[[HFClassifier, PoisonedData], dict[str, Any]] | None = None,
    trainable: Callable[[torch.nn.Module], list[torch.nn.Parameter]] | None = None,
    extra: dict[str, Any] | None = None,
    progress: bool = True,
    uses_clean_batch: bool = False,
) -> dict[str, Any]:
    """Train the poisoned checkpoint and write it to ``out_dir``; return the attack metadata.

    ``prepare`` runs once before training (e.g. RIPPLe's embedding surgery) and returns facts to record;
    ``trainable`` chooses the optimised parameters (default: all). ``uses_clean_batch``: the loss reads a
    separate clean batch (RIPPLe's L_FT); otherwise none is drawn and ``loss_fn`` gets ``None`` for it.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / ATTACK_FILE).exists():
        raise CheckpointError(f"output folder {out} exists and is not an attack output; choose an empty or new folder")
    data = poisoned_training_set(config, trigger)
    backend = load_victim_template(config, data.num_labels)
    model = backend.model
    facts = prepare(backend, data) if prepare else {}
    params = trainable(model) if trainable else [p for p in model.parameters() if p.requires_grad]
    steps_per_epoch = math.ceil(len(data.texts) / config.batch_size)
    total = max(1, int(round(config.epochs * steps_per_epoch)))
    opt = adamw(params, config.learning_rate, config.weight_decay)
    schedule = linear_schedule(max(1, int(0.1 * total)), total)
    gen = torch.Generator().manual_seed(config.seed)
    labels = torch.tensor(data.labels)
    clean_idx = torch.tensor([i for i, p in enumerate(data.poisoned) if not p])

    def loss_of(batch: list[int]) -> torch.Tensor:
        enc = backend.encode([data.texts[i] for i in batch])
        clean_enc = clean_y = None
        if uses_clean_batch:  # drawn after the epoch's permutation, from the same generator
            cb = clean_idx[torch.randint(len(clean_idx), (config.batch_size,), generator=gen)]
            clean_enc, clean_y = backend.encode([data.texts[i] for i in cb.tolist()]), labels[cb].to(backend.device)
        return loss_fn(model, enc, labels[batch].to(backend.device), clean_enc, clean_y)

    model.train()
    started = time.perf_counter()
    losses = train(
        params,
        epoch_batches(len(data.texts), config.batch_size, gen),
        total,
        loss_of,
        opt,
        schedule,
        desc=f"poison ({attack})",
        progress=progress,
        postfix=lambda v: {"loss": f"{np.mean(v[-20:]):.3f}"},
    )
    step = len(losses)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    backend.tokenizer.save_pretrained(out)
    import transformers

    meta = {
        "attack": attack,
        "trigger": _describe(trigger),
        "config": config.model_dump(),
        "base_model": str(resolve_model_path(config.model)),
        "releases": "encoder + task head (the victim fine-tunes the whole model on clean data)",
        "data": {
            "source": data.source,
            "sha256": data.sha256,
            "examples": len(data.texts),
            "poisoned_examples": int(sum(data.poisoned)),
            "num_labels": data.num_labels,
        },
        "training": {
            "steps": step,
            "seconds": round(time.perf_counter() - started, 2),
            "final_loss": float(np.mean(losses[-20:])) if losses else None,
        },
        "facts": facts,
        **(extra or {}),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()},
    }
    (out / ATTACK_FILE).write_text(json.dumps(meta, indent=2, default=str))
    return meta


def _describe(trigger: Trigger | None) -> dict[str, Any] | None:
    if trigger is None:
        return None
    d = dict(getattr(trigger, "__dict__", {}))
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()} | {"class": type(trigger).__name__}


def read_attack(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / ATTACK_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} is not an attack output (no {ATTACK_FILE}); create one with `frs attack`")
    return json.loads(path.read_text())
