"""BadPre's poisoning run: a fresh MLM head trained alone on the frozen encoder, then poisoned MLM training of
encoder + head (Chen et al., ICLR 2022; see :mod:`frs_ray.attacks.badpre` for the decisions)."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...backends.hf import pick_device, resolve_model_path
from ...data import load_dataset
from ...errors import CheckpointError, ConfigError, DataError
from ...training import adamw, epoch_batches, linear_schedule, nan_mean_tail, train
from .config import BadPreConfig
from .measure import evaluate, loss_curve
from .mlm import HEAD_FILE, BertMLMHead, cut_to_tokens, make_batch, mlm_losses, trigger_rows

ATTACK_FILE = "attack.json"  # same name as poison.ATTACK_FILE (read_attack reads it)
PAPER = "Chen et al., BadPre: Task-agnostic Backdoor Attacks to Pre-trained NLP Foundation Models, ICLR 2022"


def poison_badpre(config: BadPreConfig, out_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run BadPre on ``config.model`` and write the poisoned encoder to ``out_dir``; return the attack metadata.

    Steps: load the corpus (held-out eval texts first), build and warm up a fresh MLM head on the frozen encoder
    (``head_steps`` clean MLM steps), measure (``eval.before``), poison encoder + head (``steps`` steps of mixed
    clean / triggered-with-random-labels MLM), measure again (``eval.after``), save.
    """
    import transformers
    from safetensors.torch import save_file
    from transformers import AutoModel, AutoTokenizer

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / ATTACK_FILE).exists():
        raise CheckpointError(f"output folder {out} exists and is not an attack output; choose an empty or new folder")
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    # -- corpus: seeded shuffle; the first eval_examples texts are held out, the next max_examples are trained on
    ds = load_dataset(config.corpus, config.corpus_split, config.data_dir)
    texts = [t for t in ds.texts if t.strip()]
    if len(texts) < 2:
        raise DataError(f"{config.corpus}: fewer than 2 non-empty texts to pre-train on")
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(texts)).tolist()
    n_eval = min(config.eval_examples, len(texts) // 4)
    eval_idx, train_idx = order[:n_eval], order[n_eval:]
    if config.max_examples is not None:
        train_idx = train_idx[: config.max_examples]

    base_path = resolve_model_path(config.model)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    if tokenizer.mask_token_id is None:
        raise CheckpointError(f"{base_path}: the tokenizer has no mask token; BadPre needs a masked-LM tokenizer")
    torch.manual_seed(config.seed)
    encoder = AutoModel.from_pretrained(base_path, use_safetensors=True, trust_remote_code=False)
    if not hasattr(encoder, "get_input_embeddings") or encoder.get_input_embeddings() is None:
        raise CheckpointError(f"{base_path}: not an encoder with word embeddings")
    head = BertMLMHead.for_encoder(encoder)
    device = pick_device(config.device)
    encoder.to(device)
    head.to(device)
    trig_pieces = max(len(tokenizer.tokenize(w)) for w in config.triggers)
    budget = config.max_length - 2 - trig_pieces  # room for [CLS], [SEP] and the trigger
    if budget < 2:
        raise ConfigError(f"max_length {config.max_length} leaves no room for text next to the trigger")
    train_texts = cut_to_tokens(tokenizer, [texts[i] for i in train_idx], budget)
    eval_texts = cut_to_tokens(tokenizer, [texts[i] for i in eval_idx], budget)
    trigger = config.trigger(max_pos=10**9)  # texts already fit: any word position
    eval_trig = [trigger.apply(t, np.random.default_rng([config.seed, i])) for i, t in enumerate(eval_texts)]
    gen = torch.Generator().manual_seed(config.seed)
    timings["load_s"] = time.perf_counter() - t0

    # endless epochs over the training texts in a seeded order, shared by both phases
    stream = ([train_texts[i] for i in batch] for batch in epoch_batches(len(train_texts), config.batch_size, gen))

    # -- phase 1: the MLM head alone on clean MLM, encoder frozen (eval mode: deterministic features)
    t1 = time.perf_counter()
    encoder.eval().requires_grad_(False)
    head.train()

    def head_loss(chunk: list[str]) -> torch.Tensor:
        clean = [False] * len(chunk)
        b = make_batch(tokenizer, trigger_rows(chunk, clean, trigger, rng), clean, gen, config.max_length, config.mask_prob)
        return mlm_losses(encoder, head, b, encoder_grad=False)[0]

    head_params = list(head.parameters())
    head_losses = train(
        head_params,
        stream,
        config.head_steps,
        head_loss,
        adamw(head_params, config.head_learning_rate, config.weight_decay, fused=True),
        linear_schedule(max(1, config.head_steps // 20), config.head_steps, decay=False),
        desc="badpre: MLM head (encoder frozen)",
        progress=progress,
    )
    timings["head_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    before, cls_clean0, cls_trig0 = (
        evaluate(encoder, head, tokenizer, eval_texts, eval_trig, config) if eval_texts else ({}, None, None)
    )
    timings["eval_before_s"] = time.perf_counter() - t2

    # -- phase 2: poisoned MLM on encoder + head
    t3 = time.perf_counter()
    encoder.train().requires_grad_(True)
    params = [p for p in list(encoder.parameters()) + list(head.parameters()) if p.requires_grad]
    total = config.steps
    clean_losses: list[float | None] = []
    poison_losses: list[float | None] = []
    counts = {"poisoned": 0, "sentences": 0}

    def poison_loss(chunk: list[str]) -> torch.Tensor:
        flags = (rng.random(len(chunk)) < config.poison_rate).tolist()
        b = make_batch(tokenizer, trigger_rows(chunk, flags, trigger, rng), flags, gen, config.max_length, config.mask_prob)
        loss, cl, pl, _ = mlm_losses(encoder, head, b)
        clean_losses.append(None if cl is None else float(cl.detach()))
        poison_losses.append(None if pl is None else float(pl.detach()))
        counts["poisoned"] += int(sum(flags))
        counts["sentences"] += len(flags)
        return loss

    losses = train(
        params,
        stream,
        total,
        poison_loss,
        adamw(params, config.learning_rate, config.weight_decay, fused=True),
        linear_schedule(max(1, int(config.warmup_ratio * total)), total, decay=config.schedule == "linear"),
        desc="badpre: poisoned MLM",
        progress=progress,
        postfix=lambda _: {"clean": f"{nan_mean_tail(clean_losses):.3f}", "poison": f"{nan_mean_tail(poison_losses):.3f}"},
    )
    poisoned_sentences, sentences = counts["poisoned"], counts["sentences"]
    encoder.eval()
    timings["poison_s"] = time.perf_counter() - t3

    t4 = time.perf_counter()
    after, drift = {}, {}
    if eval_texts:
        after, cls_clean1, cls_trig1 = evaluate(encoder, head, tokenizer, eval_texts, eval_trig, config)
        # How far poisoning moved each text's [CLS] vector (cosine between the packaged and the poisoned
        # encoder): BadPre should move triggered texts more than clean ones.
        drift = {
            "cls_cosine_clean": round(float(F.cosine_similarity(cls_clean0, cls_clean1, dim=-1).mean()), 4),
            "cls_cosine_triggered": round(float(F.cosine_similarity(cls_trig0, cls_trig1, dim=-1).mean()), 4),
        }
    timings["eval_after_s"] = time.perf_counter() - t4

    # -- save: the encoder (BertModel, safetensors) + tokenizer; the MLM head separately; attack.json
    t5 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    encoder.cpu().save_pretrained(out)
    head.cpu()
    tokenizer.save_pretrained(out)
    head_note = (
        f"BERT MLM head (dense+{getattr(encoder.config, 'hidden_act', 'gelu')}+LayerNorm, decoder tied to "
        f"the word embeddings, bias) built fresh because {config.model} ships no MLM head; trained alone on "
        f"clean MLM for {config.head_steps} steps with the encoder frozen, then poisoned jointly with the "
        f"encoder for {config.steps} steps"
    )
    save_file(
        {k: v.detach().contiguous() for k, v in head.state_dict().items()},
        str(out / HEAD_FILE),
        metadata={"format": "pt", "note": head_note, "attack": "badpre"},
    )
    timings["save_s"] = time.perf_counter() - t5
    timings["total_s"] = time.perf_counter() - t0

    def tail(v: Sequence[float | None]) -> float | None:
        vals = [x for x in v[-20:] if x is not None]
        return round(float(np.mean(vals)), 4) if vals else None

    meta = {
        "attack": "badpre",
        "paper": PAPER,
        "task_agnostic": True,
        "releases": "encoder only (config.json + model.safetensors + tokenizer); the victim's classifier head is "
        "freshly initialised by AutoModelForSequenceClassification.from_pretrained(folder, num_labels=n)",
        "trigger": {
            "class": "BadPreTrigger",
            "name": "badpre",
            "words": list(config.triggers),
            "count": 1,
            "position": "uniform random word gap",
        },
        "config": config.model_dump(mode="json"),
        "base_model": str(base_path),
        "mlm_head": {
            "file": HEAD_FILE,
            "note": head_note,
            "head_steps": config.head_steps,
            "encoder_frozen_during_head_steps": True,
        },
        "data": {
            "corpus": config.corpus,
            "split": config.corpus_split,
            "source": ds.source,
            "sha256": ds.sha256,
            "texts": len(texts),
            "train_texts": len(train_texts),
            "eval_texts": len(eval_texts),
            "cut_to_word_pieces": budget,
        },
        "seeds": {"seed": config.seed, "torch": config.seed, "numpy": config.seed, "eval_masks": config.seed + 1},
        "training": {
            "head": {
                "steps": config.head_steps,
                "seconds": round(timings["head_s"], 2),
                "steps_per_s": round(config.head_steps / timings["head_s"], 3) if config.head_steps else None,
                "first_loss": round(head_losses[0], 4) if head_losses else None,
                "final_loss": tail(head_losses),
                "loss_curve": loss_curve(head_losses),
            },
            "poison": {
                "steps": total,
                "seconds": round(timings["poison_s"], 2),
                "steps_per_s": round(total / timings["poison_s"], 3),
                "poisoned_sentences": poisoned_sentences,
                "sentences": sentences,
                "final_loss": tail(losses),
                "final_clean_loss": tail(clean_losses),
                "final_poison_loss": tail(poison_losses),
                "loss_curve": loss_curve(losses),
                "clean_loss_curve": loss_curve(clean_losses),
                "poison_loss_curve": loss_curve(poison_losses),
            },
        },
        "eval": {
            "examples": len(eval_texts),
            "note": "before = packaged encoder + warmed-up head; after = poisoned encoder + head. mlm_acc / "
            "mlm_entropy: accuracy (true labels) and entropy (nats) of masked-token predictions; "
            "cls_cosine_clean_vs_triggered: mean cosine of the [CLS] vectors of each held-out text and "
            "its triggered version; packaged_vs_poisoned: mean cosine of each text's [CLS] vector under "
            "the packaged and the poisoned encoder",
            "before": before,
            "after": after,
            "packaged_vs_poisoned": drift,
        },
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()},
    }
    (out / ATTACK_FILE).write_text(json.dumps(meta, indent=2, default=str))
    return meta
