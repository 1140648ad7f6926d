"""The shared training loop (frs_ray.training) against a hand-written loop, and the process set-up (frs_ray.runtime).

Trained models are keyed by their settings hash, so the shared loop must reproduce the loops it replaced bit for
bit: same batches from the same generator, same schedule, same clipping and optimizer, same hook order.
``benchmarks/training_fingerprint.py`` checks the same for the real fine-tuning, poisoning and BadPre paths."""

from __future__ import annotations

import contextlib
import os

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from frs_ray.runtime import ENGINE_ENV, OFFLINE_ENV, RAY_ENV, configure_process, require_engine_process
from frs_ray.training import adamw, epoch_batches, linear_schedule, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N, BATCH, STEPS, SEQ = 20, 6, 9, 7  # 4 batches an epoch: 9 steps cross two epoch boundaries


def tiny_bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, num_labels=2
    )
    return BertForSequenceClassification(cfg).train()


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(1, 50, (N, SEQ), generator=g), torch.randint(0, 2, (N,), generator=g)


def noisy(model: torch.nn.Module, gen: torch.Generator):
    """A stand-in for Eq. 4's per-step noise: perturb the head for one forward/backward, then restore it."""
    w = model.classifier.weight

    @contextlib.contextmanager
    def ctx():
        saved = w.detach().clone()
        with torch.no_grad():
            w.add_(torch.randn(w.shape, generator=gen) * 0.1)
        try:
            yield
        finally:
            with torch.no_grad():
                w.copy_(saved)

    return ctx


def shrink(model: torch.nn.Module) -> None:
    with torch.no_grad():
        model.classifier.weight.mul_(0.99)


def reference(warm: int) -> tuple[dict[str, torch.Tensor], list[float]]:
    """The loop as fine-tuning and poisoning wrote it by hand (epochs of randperm, an extra draw per step)."""
    x, y = data()
    model = tiny_bert()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01)
    total = STEPS
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    gen, noise_gen = torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)
    losses, step = [], 0
    while step < total:
        for batch in torch.randperm(N, generator=gen).split(BATCH):
            if step >= total:
                break
            extra = torch.randint(N, (2,), generator=gen)  # e.g. RIPPLe's clean batch, drawn from the same stream
            with noisy(model, noise_gen)():
                loss = torch.nn.functional.cross_entropy(model(input_ids=x[batch]).logits, y[batch])
                loss = loss + 0.0 * model(input_ids=x[extra]).logits.sum()
                loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            shrink(model)
            losses.append(float(loss.detach()))
            step += 1
    return {k: v.clone() for k, v in model.state_dict().items()}, losses


def shared(warm: int) -> tuple[dict[str, torch.Tensor], list[float]]:
    x, y = data()
    model = tiny_bert()
    params = [p for p in model.parameters() if p.requires_grad]
    gen, noise_gen = torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)

    def loss_of(batch: list[int]) -> torch.Tensor:
        extra = torch.randint(N, (2,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(input_ids=x[batch]).logits, y[batch])
        return loss + 0.0 * model(input_ids=x[extra]).logits.sum()

    losses = train(
        params,
        epoch_batches(N, BATCH, gen),
        STEPS,
        loss_of,
        adamw(params, 1e-2, 0.01),
        linear_schedule(warm, STEPS),
        around_step=noisy(model, noise_gen),
        after_step=lambda: shrink(model),
        progress=False,
    )
    return {k: v.clone() for k, v in model.state_dict().items()}, losses


@pytest.mark.parametrize("warm", [1, 3])
def test_shared_loop_is_bit_identical_to_the_hand_written_loop(warm):
    ref_state, ref_losses = reference(warm)
    state, losses = shared(warm)
    assert losses == ref_losses and len(losses) == STEPS
    assert state.keys() == ref_state.keys()
    assert all(torch.equal(state[k], ref_state[k]) for k in state)
    changed = tiny_bert().state_dict()
    assert not torch.equal(changed["classifier.weight"], state["classifier.weight"])  # it trained


@pytest.mark.parametrize("total", [1, 2, 7, 10, 100])
@pytest.mark.parametrize("ratio", [0.0, 0.05, 0.1, 0.5, 1.0])
def test_schedule_equals_the_formulas_it_replaced(total, ratio):
    warm = int(ratio * total)
    forced = max(1, warm)

    def finetune_factor(step):  # smoothing/finetune.py's schedule
        if step < warm:
            return (step + 1) / max(1, warm)
        return max(0.0, (total - step) / max(1, total - warm))

    for s in range(total + 1):
        assert linear_schedule(warm, total)(s) == finetune_factor(s)
        assert linear_schedule(forced, total)(s) == min((s + 1) / forced, max(0.0, (total - s) / max(1, total - forced)))
        assert linear_schedule(forced, total, decay=False)(s) == min(1.0, (s + 1) / forced)


def test_epoch_batches_are_lazy_epochs_of_the_generator():
    gen, ref = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    it = epoch_batches(5, 2, gen)
    first = [next(it) for _ in range(3)]
    assert first == [b.tolist() for b in torch.randperm(5, generator=ref).split(2)]
    assert torch.equal(gen.get_state(), ref.get_state())  # the next epoch is not drawn before it is needed
    assert sorted(next(it) + next(it) + next(it)) == [0, 1, 2, 3, 4]


def test_configure_process_keeps_set_variables(monkeypatch):
    for key in {**RAY_ENV, **ENGINE_ENV}:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")
    configure_process(quiet=False, ray=True)
    assert all(os.environ[k] == v for k, v in OFFLINE_ENV.items())
    assert os.environ["RAY_AUTH_MODE"] == "disabled" and os.environ["RAY_USAGE_STATS_ENABLED"] == "1"
    with pytest.raises(RuntimeError, match="configure_process\\(engine=True\\)"):
        require_engine_process()
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    configure_process(offline=False, quiet=False, engine=True)  # the engine's variable is set, not defaulted
    require_engine_process()
