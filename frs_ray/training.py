"""The training loop shared by BMPS fine-tuning (Eq. 4), task-aware poisoning and BadPre's two phases.

Every step: draw the next batch, compute the loss and its gradient (inside ``around_step``, e.g. Eq. 4's noise
for one forward/backward pass), clip the gradient norm at ``clip_norm``, step AdamW, step the learning-rate
schedule, clear the gradients, then run ``after_step`` (e.g. Clip_rho of Eq. 5, or Eq. 4's noise that stays in
the weights). What differs between the users lives in the batch source, the loss and these two hooks; the RNG
streams stay with the caller, so a caller that draws batches lazily (:func:`epoch_batches`) consumes them in the
same order as a hand-written loop.

Schedule (Appendix B.2.4 for fine-tuning; BERT's for BadPre): :func:`linear_schedule`, a linear warm-up over
``warmup`` steps to the peak rate, then a linear decay to 0 at ``total`` (or a constant peak rate).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Iterable, Iterator, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

B = TypeVar("B")


def adamw(
    params: list[torch.nn.Parameter] | list[dict[str, Any]], lr: float, weight_decay: float, fused: bool = False
) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` over ``params`` (one group, or parameter groups with their own ``lr``); ``fused`` uses the fused kernel where torch has one for
    these parameters and falls back to the default implementation elsewhere."""
    if fused:
        try:
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
        except (RuntimeError, ValueError):
            pass
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def linear_schedule(warmup: int, total: int, decay: bool = True) -> Callable[[int], float]:
    """Learning-rate factor of step ``s``: ``(s + 1) / warmup`` during the warm-up (``s < warmup``), then
    ``(total - s) / (total - warmup)`` (at least 0) with ``decay``, or 1 without."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        if not decay:
            return 1.0
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[list[int]]:
    """Endless epochs of row indices ``0..n-1``: each epoch a fresh ``torch.randperm(n, generator)`` cut into
    batches of ``batch_size``. Lazy: an epoch's permutation is drawn when its first batch is requested."""
    while True:
        for batch in torch.randperm(n, generator=generator).split(batch_size):
            yield batch.tolist()


def mean_tail(values: list[float], n: int = 20) -> float:
    """Mean of the last ``n`` values (the running loss that the progress bar and the metadata report)."""
    tail = values[-n:]
    return sum(tail) / max(1, len(tail))


def train(
    params: list[torch.nn.Parameter],
    batches: Iterable[B],
    steps: int,
    loss_fn: Callable[[B], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    schedule: Callable[[int], float],
    clip_norm: float = 1.0,
    around_step: Callable[[], ContextManager[object]] | None = None,
    after_step: Callable[[], object] | None = None,
    desc: str = "train",
    progress: bool = True,
    postfix: Callable[[list[float]], dict[str, str]] | None = None,
) -> list[float]:
    """Run ``steps`` optimizer steps of ``optimizer`` over ``params``; return each step's loss.

    ``loss_fn(batch)`` returns the scalar loss of one batch (the loop calls ``backward`` on it);
    ``around_step()`` is entered around the loss and its backward pass, ``after_step()`` runs after the gradients
    are cleared. ``schedule`` multiplies the optimizer's learning rate (``LambdaLR``). The progress bar shows the
    mean of the last 20 losses, or ``postfix(losses)``."""
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    losses: list[float] = []
    source = iter(batches)
    bar = tqdm(total=steps, desc=desc, unit="step", disable=not progress)
    for _ in range(steps):
        batch = next(source)
        with around_step() if around_step is not None else contextlib.nullcontext():
            loss = loss_fn(batch)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if after_step is not None:
            after_step()
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(postfix(losses) if postfix is not None else {"loss": f"{mean_tail(losses):.3f}"})
    bar.close()
    return losses


def nan_mean_tail(values: list[float | None], n: int = 20) -> float:
    """Mean of the last ``n`` values that are not ``None`` (NaN when there are none)."""
    tail = [v for v in values[-n:] if v is not None]
    return float(np.mean(tail)) if tail else float("nan")
