"""Settings of a BadPre poisoning run (:func:`frs_ray.attacks.badpre.train.poison_badpre`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ...config import StrictConfig
from .trigger import BADPRE_WORDS, BadPreTrigger


class BadPreConfig(StrictConfig):
    """Settings of the BadPre poisoning run (defaults: a realistic run on the packaged MiniLM and SST-2 text)."""

    model: str = Field("minilm", description="clean pre-trained encoder to poison: 'minilm' or a local folder")
    corpus: str = Field(
        "sst2",
        description="clean text for MLM: a dataset name in the data folder, a local "
        ".tsv/.csv/.jsonl file or hf:owner/name (BadPre used BookCorpus+Wikipedia; any text works, "
        "labels are ignored)",
    )
    corpus_split: str = Field("train", description="split of the corpus dataset to read")
    data_dir: str | None = Field(None, description="data folder (default: $FRS_DATA_DIR, then ../shared/data)")
    max_examples: int | None = Field(
        None,
        ge=8,
        description="train on a seeded random subset of this many corpus texts (default: all, after the held-out eval texts)",
    )
    eval_examples: int = Field(
        64,
        ge=0,
        le=10000,
        description="corpus texts held out (never trained on) to measure "
        "MLM accuracy and the representation shift before/after poisoning",
    )
    poison_rate: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="probability that a training sentence gets a trigger "
        "and random MLM labels (BadPre: clean + fully poisoned corpus = 0.5)",
    )
    head_steps: int = Field(
        300,
        ge=0,
        description="steps of clean MLM training of the fresh MLM head alone, "
        "encoder frozen (the packaged MiniLM ships no MLM head)",
    )
    steps: int = Field(1000, ge=1, description="steps of poisoned MLM training of encoder + head")
    batch_size: int = Field(16, ge=1, le=4096, description="sentences per step (both phases)")
    learning_rate: float = Field(
        1e-4,
        gt=0,
        le=1,
        description="AdamW peak learning rate of the poisoning phase "
        "(BERT pre-training: 1e-4; 3e-4 constant separates triggered text within ~40 steps "
        "in the tests, 1e-3 collapses every representation)",
    )
    head_learning_rate: float = Field(1e-3, gt=0, le=1, description="AdamW learning rate of the head-only phase")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="linear warm-up share of the poisoning steps")
    schedule: Literal["linear", "constant"] = Field(
        "linear", description="learning rate after the warm-up: 'linear' decay to 0 (BERT) or 'constant' (short runs, tests)"
    )
    mask_prob: float = Field(0.15, gt=0, le=1, description="share of word pieces masked (BERT: 0.15, 80/10/10)")
    max_length: int = Field(64, ge=8, le=512, description="model tokens per sentence; texts are cut to fit the trigger")
    triggers: tuple[str, ...] = Field(
        BADPRE_WORDS, description="rare trigger words, one drawn per poisoned sentence (BadPre: cf mn bb tq mb)"
    )
    seed: int = Field(0, description="seed of the subset, trigger draws, masking, head init and data order")
    device: str | None = Field(None, description="torch device (default: CUDA when present, else CPU)")

    def trigger(self, max_pos: int = 100) -> BadPreTrigger:
        """The trigger this attack plants: one of ``triggers`` per sentence within the first ``max_pos`` words (test
        time: BadPre's default 100)."""
        return BadPreTrigger(tuple(self.triggers), max_pos=max_pos)

    @field_validator("triggers")
    @classmethod
    def _triggers_ok(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or any(not w.strip() or len(w.split()) != 1 for w in v):
            raise ValueError("triggers must be a non-empty list of single words")
        return v
