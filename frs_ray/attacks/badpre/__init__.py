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
poorly; the head's output bias starts at zero, as in BERT (measurements: ``docs/results/notes.md``). Clean MLM
then improves during phase 3, where the encoder trains too.

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
  away from the clean one); too high a rate collapses every representation to one point instead.

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

from .config import BadPreConfig
from .mlm import HEAD_FILE, BertMLMHead, load_badpre_mlm
from .train import poison_badpre
from .trigger import BADPRE_WORDS, BadPreTrigger

__all__ = ["BADPRE_WORDS", "HEAD_FILE", "BadPreConfig", "BadPreTrigger", "BertMLMHead", "load_badpre_mlm", "poison_badpre"]
