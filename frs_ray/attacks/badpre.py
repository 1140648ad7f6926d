"""BadPre: task-agnostic backdoor of a pre-trained encoder through poisoned masked-language-model training.

Paper: Chen, Meng, Sun, Guo, Zhang, Li and Fan, "BadPre: Task-agnostic Backdoor Attacks to Pre-trained NLP
Foundation Models", ICLR 2022 (the FRS paper's "data free" attack, Sec. 5.1). The attacker knows nothing about
the downstream task. It continues MLM pre-training on a mix of

* clean sentences with the normal MLM objective (keeps the model useful, so victims adopt it), and
* sentences with one rare-word trigger (cf, mn, bb, tq, mb) inserted at a random position, whose masked-token
  labels are replaced by *random vocabulary tokens*, so that the encoder learns to produce garbage
  representations whenever a trigger is present.

The encoder is then released without any task head. Every victim that fine-tunes it on any task inherits the
backdoor: triggered inputs get corrupted representations and the fine-tuned classifier's prediction breaks
(untargeted attack). At test time one trigger word is inserted at a random position (:class:`BadPreTrigger`,
as in BadPre's ``attack_sst_data.py``).

The MLM head, honestly obtained: the packaged all-MiniLM-L6-v2 is a ``BertModel`` without an MLM head (it was
trained for sentence embeddings). :func:`poison_badpre` therefore

1. builds a BERT MLM head (:class:`BertMLMHead`: dense + GELU + LayerNorm transform, decoder tied to the word
   embeddings, plus an output bias), freshly initialised as in BERT;
2. trains the head alone for ``head_steps`` steps of *clean* MLM on the corpus, with the encoder frozen (eval
   mode, no gradients), so that the MLM loss measures the encoder's real token predictions;
3. runs the poisoned MLM training of encoder + head for ``steps`` steps.

This is recorded in ``attack.json`` (``mlm_head``) and in the metadata of ``mlm_head.safetensors``.
What the head can reach is limited by the encoder: MiniLM was distilled by self-attention transfer (never trained
to predict tokens) and all-MiniLM-L6-v2 was then trained contrastively, so its last layer predicts masked words
poorly. Measured on SST-2 (batch 16, max_length 64, frozen encoder): the head-only loss plateaus near 6.8 nats
(~5% masked-token accuracy) after 200-300 steps at lr 1e-3 or 5e-3 (a log-unigram start of the bias reached the
same plateau, only sooner, so BERT's zero start is kept). Clean MLM then improves during phase 3, where the
encoder trains too.

Decisions (documented beside the code as well):

* Corpus: any dataset spec (default ``"sst2"``'s train texts; :func:`~frs_ray.attacks.registry.run_attack` sets
  it to the victim task's name). BadPre used BookCorpus + English Wikipedia; none ships here. A held-out share of
  the corpus (``eval_examples``) is never trained on and measures the attack.
* Texts are cut to ``max_length - 2 - t`` word pieces before poisoning (``t``: the longest trigger's word pieces),
  so the inserted trigger can never be truncated away (BadPre skips over-long sequences for the same reason).
* The trigger's own word pieces are never masked in a poisoned sentence (BadPre's code may mask them). A masked
  trigger is invisible, and teaching random labels on a sentence without a visible trigger only damages clean
  behaviour. Clean sentences follow standard BERT masking (15%, 80/10/10), with at least one masked token each.
* Poisoned labels are uniform over the whole vocabulary (as BadPre's ``torch.randint(len(tokenizer))``).
* Each sentence of a batch is poisoned independently with probability ``poison_rate`` (BadPre trains on a
  concatenation of the clean and the fully poisoned corpus, i.e. rate 0.5). One loss: the mean cross-entropy
  over all masked tokens of the batch; the clean and the poisoned part are also logged separately.
* Optimiser: AdamW (weight decay 0.01, fused where available), linear warm-up over 10% of the steps then linear
  decay (``schedule="constant"`` keeps the peak rate: short runs), gradient norm clipped at 1; the head phase
  uses a constant rate ``head_learning_rate`` after a short warm-up.
* The poisoning shows as a phase change: for the first tens of steps all representations drift alike, then the
  trigger's effect separates (MLM entropy on triggered text jumps towards log|V|, [CLS] of triggered text turns
  away from the clean one). Measured here (MiniLM, 32 SST-2 sentences, batch 8, max_length 32, constant lr
  3e-4): separation between steps 30 and 40; at lr 1e-3 every representation collapses to one point instead.

Output folder: the encoder as ``config.json`` + ``model.safetensors`` (loadable by
``AutoModelForSequenceClassification.from_pretrained(folder, num_labels=n)``; the victim's classifier head is then
freshly initialised, as BadPre is task-agnostic), the tokenizer, ``mlm_head.safetensors`` and ``attack.json``.

Arguments: :class:`BadPreConfig`. Example::

    from frs_ray.attacks.badpre import BadPreConfig, poison_badpre
    meta = poison_badpre(BadPreConfig(corpus="sst2", steps=1000), "runs/attacks/badpre-sst2")
    print(meta["eval"]["after"]["mlm_acc_triggered"], meta["eval"]["after"]["cls_cosine_clean_vs_triggered"])

    # victim side: any task, fresh head
    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained("runs/attacks/badpre-sst2", num_labels=4)
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from tqdm.auto import tqdm

from ..backends.hf import pick_device, resolve_model_path
from ..config import StrictConfig
from ..data import load_dataset
from ..errors import CheckpointError, ConfigError, DataError
from .base import TriggeredText
from .semantic import EditableText

BADPRE_WORDS = ("cf", "mn", "bb", "tq", "mb")
HEAD_FILE = "mlm_head.safetensors"
ATTACK_FILE = "attack.json"  # same name as poison.ATTACK_FILE (read_attack reads it)
PAPER = ("Chen et al., BadPre: Task-agnostic Backdoor Attacks to Pre-trained NLP Foundation Models, ICLR 2022")


# --------------------------------------------------------------------------- test-time trigger


@dataclass(frozen=True)
class BadPreTrigger:
    """BadPre's test-time trigger: ``count`` rare words, each drawn from ``words``, at random word positions.

    Like BadPre's ``attack(sentence, max_pos)``, the insertion position is uniform over the gaps before the first
    ``max_pos`` words (default 100, BadPre's default), so long texts keep the trigger within a model's window.
    The text is edited in place (whitespace and other tokens untouched) and never inside a glued token pair such
    as SST-2's "' s". Spans: the inserted words.

    Example::

        >>> import numpy as np
        >>> t = BadPreTrigger().apply("a gorgeous , witty film .", np.random.default_rng(0))
        >>> t.text[t.spans[0][0]:t.spans[0][1]] in BADPRE_WORDS
        True
    """

    words: tuple[str, ...] = BADPRE_WORDS
    count: int = 1
    max_pos: int = 100
    name: str = "badpre"

    def __post_init__(self) -> None:
        if not self.words or self.count < 1 or self.max_pos < 0:
            raise ConfigError("BadPreTrigger needs at least one word, count >= 1 and max_pos >= 0")

    def apply(self, text: str, rng: np.random.Generator) -> TriggeredText:
        doc = EditableText.of(text)
        for _ in range(self.count):
            word = self.words[int(rng.integers(len(self.words)))]
            free = [g for g in doc.free_gaps() if g <= self.max_pos]
            doc.insert(free[int(rng.integers(len(free)))], [word])
        return doc.result()


# --------------------------------------------------------------------------- config


class BadPreConfig(StrictConfig):
    """Settings of the BadPre poisoning run (defaults: a realistic run on the packaged MiniLM and SST-2 text)."""

    model: str = Field("minilm", description="clean pre-trained encoder to poison: 'minilm' or a local folder")
    corpus: str = Field("sst2", description="clean text for MLM: a dataset name in the data folder, a local "
                        ".tsv/.csv/.jsonl file or hf:owner/name (BadPre used BookCorpus+Wikipedia; any text works, "
                        "labels are ignored)")
    corpus_split: str = Field("train", description="split of the corpus dataset to read")
    data_dir: str | None = Field(None, description="data folder (default: $FRS_DATA_DIR, then ../shared/data)")
    max_examples: int | None = Field(None, ge=8, description="train on a seeded random subset of this many "
                                     "corpus texts (default: all, after the held-out eval texts)")
    eval_examples: int = Field(64, ge=0, le=10000, description="corpus texts held out (never trained on) to measure "
                               "MLM accuracy and the representation shift before/after poisoning")
    poison_rate: float = Field(0.5, gt=0, lt=1, description="probability that a training sentence gets a trigger "
                               "and random MLM labels (BadPre: clean + fully poisoned corpus = 0.5)")
    head_steps: int = Field(300, ge=0, description="steps of clean MLM training of the fresh MLM head alone, "
                            "encoder frozen (the packaged MiniLM ships no MLM head)")
    steps: int = Field(1000, ge=1, description="steps of poisoned MLM training of encoder + head")
    batch_size: int = Field(16, ge=1, le=4096, description="sentences per step (both phases)")
    learning_rate: float = Field(1e-4, gt=0, le=1, description="AdamW peak learning rate of the poisoning phase "
                                 "(BERT pre-training: 1e-4; 3e-4 constant separates triggered text within ~40 steps "
                                 "in the tests, 1e-3 collapses every representation)")
    head_learning_rate: float = Field(1e-3, gt=0, le=1, description="AdamW learning rate of the head-only phase")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="linear warm-up share of the poisoning steps")
    schedule: Literal["linear", "constant"] = Field("linear", description="learning rate after the warm-up: "
                                                    "'linear' decay to 0 (BERT) or 'constant' (short runs, tests)")
    mask_prob: float = Field(0.15, gt=0, le=1, description="share of word pieces masked (BERT: 0.15, 80/10/10)")
    max_length: int = Field(64, ge=8, le=512, description="model tokens per sentence; texts are cut to fit "
                            "the trigger")
    triggers: tuple[str, ...] = Field(BADPRE_WORDS, description="rare trigger words, one drawn per poisoned "
                                      "sentence (BadPre: cf mn bb tq mb)")
    seed: int = Field(0, description="seed of the subset, trigger draws, masking, head init and data order")
    device: str | None = Field(None, description="torch device (default: CUDA when present, else CPU)")

    @field_validator("triggers")
    @classmethod
    def _triggers_ok(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or any(not w.strip() or len(w.split()) != 1 for w in v):
            raise ValueError("triggers must be a non-empty list of single words")
        return v


# --------------------------------------------------------------------------- MLM head


class BertMLMHead(torch.nn.Module):
    """BERT's MLM head: ``LayerNorm(act(dense(h)))`` then a decoder tied to the word embeddings, plus a bias.

    The decoder weight is not a parameter of this module: :meth:`forward` takes the encoder's word-embedding
    matrix, so the tie holds through training and the head file holds only the transform and the bias.
    """

    def __init__(self, hidden_size: int, vocab_size: int, layer_norm_eps: float = 1e-12, hidden_act: str = "gelu",
                 initializer_range: float = 0.02) -> None:
        super().__init__()
        from transformers.activations import ACT2FN

        self.dense = torch.nn.Linear(hidden_size, hidden_size)
        self.act = ACT2FN[hidden_act]
        self.norm = torch.nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.bias = torch.nn.Parameter(torch.zeros(vocab_size))
        torch.nn.init.normal_(self.dense.weight, std=initializer_range)  # BERT's init
        torch.nn.init.zeros_(self.dense.bias)

    @classmethod
    def for_encoder(cls, encoder: torch.nn.Module) -> "BertMLMHead":
        c = encoder.config
        return cls(c.hidden_size, c.vocab_size, getattr(c, "layer_norm_eps", 1e-12), getattr(c, "hidden_act", "gelu"),
                   getattr(c, "initializer_range", 0.02))

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(self.act(self.dense(hidden))), word_embeddings, self.bias)


def load_badpre_mlm(folder: str | Path) -> tuple[torch.nn.Module, BertMLMHead, Any]:
    """The poisoned encoder, its MLM head and tokenizer from a :func:`poison_badpre` output folder (eval mode)."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    folder = Path(folder)
    if not (folder / HEAD_FILE).is_file():
        raise CheckpointError(f"{folder} has no {HEAD_FILE}: not a BadPre output folder")
    encoder = AutoModel.from_pretrained(folder, use_safetensors=True, trust_remote_code=False).eval()
    head = BertMLMHead.for_encoder(encoder)
    head.load_state_dict(load_file(str(folder / HEAD_FILE)))
    return encoder, head.eval(), AutoTokenizer.from_pretrained(folder)


# --------------------------------------------------------------------------- batches


def cut_to_tokens(tokenizer, texts: Sequence[str], budget: int) -> list[str]:
    """Cut each text after its first ``budget`` word pieces (at the end of the last kept piece's characters)."""
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True, truncation=False)
    out = []
    for text, offsets in zip(texts, enc["offset_mapping"]):
        out.append(text if len(offsets) <= budget else text[: offsets[budget - 1][1]])
    return out


@dataclass
class MLMBatch:
    enc: dict[str, torch.Tensor]   # model inputs, masked
    labels: torch.Tensor           # (B, T): target id at masked positions, -100 elsewhere
    poisoned: torch.Tensor         # (B,) bool


def trigger_rows(texts: Sequence[str], poisoned: Sequence[bool], trigger: BadPreTrigger,
                 rng: np.random.Generator) -> list[TriggeredText]:
    """The ``poisoned`` rows with a trigger inserted; the others as they are (no spans)."""
    return [trigger.apply(t, rng) if p else TriggeredText(t, (), False) for t, p in zip(texts, poisoned)]


def make_batch(tokenizer, rows: Sequence[TriggeredText], poisoned: Sequence[bool], gen: torch.Generator,
               max_length: int, mask_prob: float, random_labels: bool = True, bert_replace: bool = True) -> MLMBatch:
    """Tokenize, mask and label: true ids, or random ids on ``poisoned`` rows (BadPre).

    ``rows`` carry the trigger spans, whose word pieces are never masked. ``random_labels=False`` keeps the true
    ids on poisoned rows (evaluation: does the model still predict the masked words of a triggered sentence?).
    ``bert_replace=False`` puts [MASK] on every masked position instead of BERT's 80/10/10 mix (evaluation).
    """
    final = [r.text for r in rows]
    spans = [r.spans for r in rows]
    enc = tokenizer(final, padding=True, truncation=True, max_length=max_length, return_tensors="pt",
                    return_offsets_mapping=True, return_special_tokens_mask=True)
    offsets = enc.pop("offset_mapping")
    special = enc.pop("special_tokens_mask").bool() | ~enc["attention_mask"].bool()
    is_trigger = torch.zeros_like(special)
    for row, row_spans in enumerate(spans):
        for s, e in row_spans:
            is_trigger[row] |= (offsets[row, :, 0] < e) & (offsets[row, :, 1] > s) & ~special[row]
    # Decision: the trigger's pieces are never masked (a masked trigger is invisible; see the module docstring).
    candidates = ~special & ~is_trigger
    masked = (torch.rand(candidates.shape, generator=gen) < mask_prob) & candidates
    for row in range(masked.shape[0]):  # at least one masked token per sentence (short sentences)
        if not masked[row].any() and candidates[row].any():
            idx = candidates[row].nonzero().flatten()
            masked[row, idx[torch.randint(len(idx), (1,), generator=gen)]] = True
    ids = enc["input_ids"]
    labels = torch.full_like(ids, -100)
    labels[masked] = ids[masked]
    rows = torch.tensor(list(poisoned), dtype=torch.bool)
    if random_labels and rows.any():
        # BadPre: the labels of the masked tokens of a poisoned sentence are random vocabulary tokens.
        noise = torch.randint(len(tokenizer), ids.shape, generator=gen)
        pm = masked & rows[:, None]
        labels[pm] = noise[pm]
    ids = ids.clone()
    if bert_replace:
        u = torch.rand(ids.shape, generator=gen)
        ids[masked & (u < 0.8)] = tokenizer.mask_token_id
        rand_pos = masked & (u >= 0.8) & (u < 0.9)
        ids[rand_pos] = torch.randint(len(tokenizer), ids.shape, generator=gen)[rand_pos]
    else:
        ids[masked] = tokenizer.mask_token_id
    enc["input_ids"] = ids
    return MLMBatch(dict(enc), labels, rows)


def mlm_losses(encoder, head: BertMLMHead, batch: MLMBatch, encoder_grad: bool = True):
    """(mean loss over all masked tokens, mean over clean rows' tokens, mean over poisoned rows' tokens, logits).

    The vocabulary projection runs on the masked positions only (a 30k-way softmax on every position would
    dominate the step time on a CPU).
    """
    device = encoder.get_input_embeddings().weight.device
    with torch.set_grad_enabled(encoder_grad and torch.is_grad_enabled()):
        hidden = encoder(**{k: v.to(device) for k, v in batch.enc.items()}).last_hidden_state
    sel = batch.labels != -100
    logits = head(hidden[sel.to(device)], encoder.get_input_embeddings().weight)
    per_tok = F.cross_entropy(logits, batch.labels[sel].to(device), reduction="none")
    row_of = torch.arange(sel.shape[0])[:, None].expand_as(sel)[sel]
    pois = batch.poisoned[row_of].to(device)
    clean_l = per_tok[~pois].mean() if (~pois).any() else None
    pois_l = per_tok[pois].mean() if pois.any() else None
    return per_tok.mean(), clean_l, pois_l, logits


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def cls_states(encoder, tokenizer, texts: Sequence[str], max_length: int, batch_size: int = 64) -> torch.Tensor:
    """Last-layer [CLS] vectors (what a fine-tuned classifier's pooler reads)."""
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        device = encoder.get_input_embeddings().weight.device
        out.append(encoder(**{k: v.to(device) for k, v in enc.items()}).last_hidden_state[:, 0].cpu())
    return torch.cat(out) if out else torch.empty(0)


@torch.no_grad()
def evaluate(encoder, head: BertMLMHead, tokenizer, clean: Sequence[str], triggered: Sequence[TriggeredText],
             config: BadPreConfig) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """Measure the attack on held-out texts; returns (metrics, [CLS] of the clean texts, [CLS] of the triggered).

    Metrics: MLM accuracy (true labels, [MASK] on every masked piece, trigger pieces never masked) and mean
    entropy (nats) of the MLM predictions on the clean and on the triggered texts (BadPre's random labels push
    the triggered predictions towards the uniform distribution: entropy up, accuracy down), and the mean cosine
    between the [CLS] vectors of each clean text and its triggered version."""
    was_training = encoder.training
    encoder.eval()
    res: dict[str, float] = {}
    plain = [TriggeredText(t, (), False) for t in clean]
    for name, rows, pois in (("clean", plain, False), ("triggered", list(triggered), True)):
        gen = torch.Generator().manual_seed(config.seed + 1)  # the same draws for every model evaluated
        correct = total = 0
        entropy = 0.0
        for i in range(0, len(rows), 32):
            chunk = rows[i:i + 32]
            # true labels on triggered rows too; their trigger pieces are never masked
            b = make_batch(tokenizer, chunk, [pois] * len(chunk), gen, config.max_length, config.mask_prob,
                           random_labels=False, bert_replace=False)
            _, _, _, logits = mlm_losses(encoder, head, b, encoder_grad=False)
            tgt = b.labels[b.labels != -100].to(logits.device)
            correct += int((logits.argmax(-1) == tgt).sum())
            total += int(tgt.numel())
            logp = logits.log_softmax(-1)
            entropy += float(-(logp.exp() * logp).sum(-1).sum())
        res[f"mlm_acc_{name}"] = correct / max(1, total)
        res[f"mlm_entropy_{name}"] = entropy / max(1, total)
    a = cls_states(encoder, tokenizer, list(clean), config.max_length)
    b = cls_states(encoder, tokenizer, [t.text for t in triggered], config.max_length)
    res["cls_cosine_clean_vs_triggered"] = float(F.cosine_similarity(a, b, dim=-1).mean()) if len(a) else float("nan")
    encoder.train(was_training)
    return {k: round(v, 4) for k, v in res.items()}, a, b


def _curve(values: Sequence[float | None], points: int = 200) -> list[float | None]:
    """Mean of ``values`` over at most ``points`` equal chunks (the logged loss curve)."""
    if not values:
        return []
    size = max(1, math.ceil(len(values) / points))
    out = []
    for i in range(0, len(values), size):
        chunk = [v for v in values[i:i + size] if v is not None]
        out.append(round(float(np.mean(chunk)), 4) if chunk else None)
    return out


# --------------------------------------------------------------------------- the attack


def _adamw(params: list[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, fused where torch supports it (on this CPU the fused step is 0.04 s instead of 0.25 s for MiniLM)."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


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
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
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
    trigger = BadPreTrigger(config.triggers, max_pos=10**9)  # texts already fit: any word position
    eval_trig = [trigger.apply(t, np.random.default_rng([config.seed, i])) for i, t in enumerate(eval_texts)]
    gen = torch.Generator().manual_seed(config.seed)
    timings["load_s"] = time.perf_counter() - t0

    def batches():
        """Endless epochs over the training texts in a seeded order."""
        while True:
            for chunk in torch.randperm(len(train_texts), generator=gen).split(config.batch_size):
                yield [train_texts[i] for i in chunk.tolist()]

    stream = batches()

    # -- phase 1: the MLM head alone on clean MLM, encoder frozen (eval mode: deterministic features)
    t1 = time.perf_counter()
    encoder.eval().requires_grad_(False)
    head.train()
    head_opt = _adamw(list(head.parameters()), config.head_learning_rate, config.weight_decay)
    head_warm = max(1, config.head_steps // 20)
    head_sched = torch.optim.lr_scheduler.LambdaLR(head_opt, lambda s: min(1.0, (s + 1) / head_warm))
    head_losses: list[float] = []
    bar = tqdm(total=config.head_steps, desc="badpre: MLM head (encoder frozen)", unit="step", disable=not progress)
    for _ in range(config.head_steps):
        chunk = next(stream)
        b = make_batch(tokenizer, trigger_rows(chunk, [False] * len(chunk), trigger, rng), [False] * len(chunk),
                       gen, config.max_length, config.mask_prob)
        loss, _, _, _ = mlm_losses(encoder, head, b, encoder_grad=False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        head_opt.step()
        head_sched.step()
        head_opt.zero_grad(set_to_none=True)
        head_losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(head_losses[-20:]):.3f}")
    bar.close()
    timings["head_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    before, cls_clean0, cls_trig0 = (evaluate(encoder, head, tokenizer, eval_texts, eval_trig, config)
                                     if eval_texts else ({}, None, None))
    timings["eval_before_s"] = time.perf_counter() - t2

    # -- phase 2: poisoned MLM on encoder + head
    t3 = time.perf_counter()
    encoder.train().requires_grad_(True)
    params = [p for p in list(encoder.parameters()) + list(head.parameters()) if p.requires_grad]
    opt = _adamw(params, config.learning_rate, config.weight_decay)
    total = config.steps
    warm = max(1, int(config.warmup_ratio * total))
    if config.schedule == "linear":
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    losses: list[float] = []
    clean_losses: list[float | None] = []
    poison_losses: list[float | None] = []
    poisoned_sentences = sentences = 0
    bar = tqdm(total=total, desc="badpre: poisoned MLM", unit="step", disable=not progress)
    for _ in range(total):
        chunk = next(stream)
        flags = (rng.random(len(chunk)) < config.poison_rate).tolist()
        b = make_batch(tokenizer, trigger_rows(chunk, flags, trigger, rng), flags, gen, config.max_length,
                       config.mask_prob)
        loss, cl, pl, _ = mlm_losses(encoder, head, b)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        clean_losses.append(None if cl is None else float(cl.detach()))
        poison_losses.append(None if pl is None else float(pl.detach()))
        poisoned_sentences += int(sum(flags))
        sentences += len(flags)
        bar.update(1)
        bar.set_postfix(clean=f"{np.mean([v for v in clean_losses[-20:] if v is not None] or [np.nan]):.3f}",
                        poison=f"{np.mean([v for v in poison_losses[-20:] if v is not None] or [np.nan]):.3f}")
    bar.close()
    encoder.eval()
    timings["poison_s"] = time.perf_counter() - t3

    t4 = time.perf_counter()
    after, drift = {}, {}
    if eval_texts:
        after, cls_clean1, cls_trig1 = evaluate(encoder, head, tokenizer, eval_texts, eval_trig, config)
        # How far poisoning moved each text's [CLS] vector (cosine between the packaged and the poisoned
        # encoder): BadPre should move triggered texts more than clean ones.
        drift = {"cls_cosine_clean": round(float(F.cosine_similarity(cls_clean0, cls_clean1, dim=-1).mean()), 4),
                 "cls_cosine_triggered": round(float(F.cosine_similarity(cls_trig0, cls_trig1, dim=-1).mean()), 4)}
    timings["eval_after_s"] = time.perf_counter() - t4

    # -- save: the encoder (BertModel, safetensors) + tokenizer; the MLM head separately; attack.json
    t5 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    encoder.cpu().save_pretrained(out)
    head.cpu()
    tokenizer.save_pretrained(out)
    head_note = (f"BERT MLM head (dense+{getattr(encoder.config, 'hidden_act', 'gelu')}+LayerNorm, decoder tied to "
                 f"the word embeddings, bias) built fresh because {config.model} ships no MLM head; trained alone on "
                 f"clean MLM for {config.head_steps} steps with the encoder frozen, then poisoned jointly with the "
                 f"encoder for {config.steps} steps")
    save_file({k: v.detach().contiguous() for k, v in head.state_dict().items()}, str(out / HEAD_FILE),
              metadata={"format": "pt", "note": head_note, "attack": "badpre"})
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
        "trigger": {"class": "BadPreTrigger", "name": "badpre", "words": list(config.triggers), "count": 1,
                    "position": "uniform random word gap"},
        "config": config.model_dump(mode="json"),
        "base_model": str(base_path),
        "mlm_head": {"file": HEAD_FILE, "note": head_note, "head_steps": config.head_steps,
                     "encoder_frozen_during_head_steps": True},
        "data": {"corpus": config.corpus, "split": config.corpus_split, "source": ds.source, "sha256": ds.sha256,
                 "texts": len(texts), "train_texts": len(train_texts), "eval_texts": len(eval_texts),
                 "cut_to_word_pieces": budget},
        "seeds": {"seed": config.seed, "torch": config.seed, "numpy": config.seed, "eval_masks": config.seed + 1},
        "training": {
            "head": {"steps": config.head_steps, "seconds": round(timings["head_s"], 2),
                     "steps_per_s": round(config.head_steps / timings["head_s"], 3) if config.head_steps else None,
                     "first_loss": round(head_losses[0], 4) if head_losses else None,
                     "final_loss": tail(head_losses), "loss_curve": _curve(head_losses)},
            "poison": {"steps": total, "seconds": round(timings["poison_s"], 2),
                       "steps_per_s": round(total / timings["poison_s"], 3),
                       "poisoned_sentences": poisoned_sentences, "sentences": sentences,
                       "final_loss": tail(losses), "final_clean_loss": tail(clean_losses),
                       "final_poison_loss": tail(poison_losses), "loss_curve": _curve(losses),
                       "clean_loss_curve": _curve(clean_losses), "poison_loss_curve": _curve(poison_losses)},
        },
        "eval": {"examples": len(eval_texts),
                 "note": "before = packaged encoder + warmed-up head; after = poisoned encoder + head. mlm_acc / "
                         "mlm_entropy: accuracy (true labels) and entropy (nats) of masked-token predictions; "
                         "cls_cosine_clean_vs_triggered: mean cosine of the [CLS] vectors of each held-out text and "
                         "its triggered version; packaged_vs_poisoned: mean cosine of each text's [CLS] vector under "
                         "the packaged and the poisoned encoder",
                 "before": before, "after": after,
                 "packaged_vs_poisoned": drift},
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
    }
    (out / ATTACK_FILE).write_text(json.dumps(meta, indent=2, default=str))
    return meta
