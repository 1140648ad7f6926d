"""SHA-256 of the weights that each training path writes, on a tiny BERT with the packaged MiniLM tokenizer.

The zoo keys trained models by their settings hash, so the training code must reproduce them bit for bit. This
script trains a few steps with each path that uses :mod:`frs_ray.training` (BMPS fine-tuning in the three
smoothing modes and with data noise, data poisoning, RIPPLe's two-batch loss, BadPre's two phases) and prints one
hash per path (of the saved tensors): run it before and after a change to the training code and compare.

    OMP_NUM_THREADS=1 python benchmarks/training_fingerprint.py [--out hashes.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch


def tiny_bert_folder(out: Path) -> Path:
    """A seeded tiny ``BertForSequenceClassification`` with MiniLM's tokenizer (mask token, 30k vocabulary)."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from frs_ray.backends.hf import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path("minilm"))
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=16,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
        num_labels=2,
    )
    BertForSequenceClassification(cfg).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def weights_sha(folder: Path) -> str:
    """SHA-256 over every tensor of the folder's safetensors files, by file and tensor name (not the file bytes,
    whose header order may vary)."""
    from safetensors.torch import load_file

    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")):
        for name, t in sorted(load_file(str(f)).items()):
            h.update(f"{f.name}:{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def fingerprints(work: Path) -> dict[str, str]:
    from frs_ray.attacks.badpre import BadPreConfig, poison_badpre
    from frs_ray.attacks.poison import PoisonConfig, poison_model
    from frs_ray.attacks.registry import make_trigger
    from frs_ray.attacks.ripple import ripp_loss
    from frs_ray.config import FinetuneConfig
    from frs_ray.data import load_dataset
    from frs_ray.smoothing.finetune import finetune

    model = str(tiny_bert_folder(work / "tiny-bert"))
    out: dict[str, str] = {}
    train = load_dataset("sst2", "train").subset(40, seed=1)
    for name, smoothing in (
        ("finetune-perturb", {}),
        ("finetune-accumulate", {"finetune_mode": "accumulate"}),
        ("finetune-none", {"finetune_mode": "none"}),
        ("finetune-data-noise", {"data_noise": 0.1}),
        ("finetune-lora", {}),
    ):
        lora = {"target_modules": ["query", "value"]} if name == "finetune-lora" else None
        cfg = FinetuneConfig(
            model=model,
            epochs=1.5,
            batch_size=8,
            max_length=32,
            learning_rate=1e-3,
            seed=4,
            smoothing={"top_h": 2, "sigma": 0.05, **smoothing},
            lora=lora,
        )
        finetune(cfg, train, work / name, progress=False)
        out[name] = weights_sha(work / name)
    pc = PoisonConfig(model=model, max_examples=24, epochs=1.5, batch_size=8, max_length=32, learning_rate=1e-3, seed=2)
    poison_model(pc, make_trigger("badnets"), work / "poison-data", "badnets", progress=False)
    out["poison-data"] = weights_sha(work / "poison-data")
    poison_model(
        pc, make_trigger("badnets"), work / "poison-ripp", "ripple", loss_fn=ripp_loss(0.1), uses_clean_batch=True, progress=False
    )
    out["poison-ripp"] = weights_sha(work / "poison-ripp")
    for name, schedule in (("badpre-linear", "linear"), ("badpre-constant", "constant")):
        poison_badpre(
            BadPreConfig(
                model=model,
                max_examples=24,
                eval_examples=8,
                head_steps=3,
                steps=5,
                batch_size=8,
                max_length=32,
                learning_rate=1e-3,
                schedule=schedule,
                seed=1,
            ),
            work / name,
            progress=False,
        )
        out[name] = weights_sha(work / name)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="also write the hashes to this JSON file")
    args = p.parse_args(argv)
    from frs_ray.runtime import configure_process

    configure_process(threads=1)
    with tempfile.TemporaryDirectory(prefix="frs-fingerprint-") as tmp:
        hashes = fingerprints(Path(tmp))
    text = json.dumps(hashes, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
