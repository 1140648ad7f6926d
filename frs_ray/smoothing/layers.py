"""Model-agnostic selection of the top-H layers next to the output, plus the head (Sec. 4.2).

The paper smooths "the parameters in H layers proximal to the output". Any transformers model keeps its
blocks in one ``nn.ModuleList`` (``bert.encoder.layer``, ``model.layers`` of Llama, ``transformer.h`` of
GPT-2...). The selector finds the longest such list of same-typed blocks, takes its last H blocks, and adds
every parameter registered *after* the block stack (pooler and classifier of BERT; final norm and score
head of Llama). Embeddings, registered before the stack, are never smoothed. H larger than the depth is
clamped to the depth. ``exact`` names parameters left out (``SmoothingConfig.new_head = "exact"``: the head a
fine-tune initializes, which no pre-trained backdoor can be in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection

import torch
from torch import nn

from ..errors import ConfigError


def find_layer_stack(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """Return ``(qualified name, ModuleList)`` of the model's transformer block stack."""
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            if len({type(child) for child in module}) == 1 and any(True for _ in module[0].parameters()):
                if best is None or len(module) > len(best[1]):
                    best = (name, module)
    if best is None:
        raise ConfigError(f"cannot find a stack of transformer blocks in {type(model).__name__}")
    return best


@dataclass(frozen=True)
class SmoothedParameters:
    """Which parameters get noise: names in ``model.named_parameters()`` order, and the H actually used."""

    names: tuple[str, ...]
    top_h: int
    depth: int
    stack_name: str

    def tensors(self, model: nn.Module) -> list[torch.Tensor]:
        """The smoothed tensors of ``model``, found by name; in a peft (LoRA) model, the base weights under the
        same names (``base_model.model.`` and ``.base_layer`` dropped, adapters skipped)."""
        params = hf_named_parameters(model)
        return [params[n] for n in self.names]

    def numel(self, model: nn.Module) -> int:
        return sum(t.numel() for t in self.tensors(model))


def hf_named_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s parameters by Hugging Face name; for a peft-wrapped model, its base parameters by the names they
    have in the unwrapped model (so noise on a LoRA-wrapped linear's base weight is noise on its effective weight)."""
    out: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        if "lora_" in name:
            continue
        if name.startswith("base_model.model."):
            name = name[len("base_model.model.") :]
        out[name.replace(".base_layer.", ".")] = p
    return out


def head_names(model: nn.Module) -> list[str]:
    """Parameters registered after the block stack (final norm, pooler, classification head), in order."""
    stack_name, _ = find_layer_stack(model)
    names, seen_stack = [], False
    for name, _ in model.named_parameters():
        if name.startswith(stack_name + "."):
            seen_stack = True
        elif seen_stack:
            names.append(name)
    return names


def select_top_h(model: nn.Module, top_h: int, exact: Collection[str] = ()) -> SmoothedParameters:
    """Select the parameters of the top ``top_h`` blocks and of everything after the stack (the head), less the
    names in ``exact`` (kept without noise)."""
    if top_h < 1:
        raise ConfigError(f"top_h must be >= 1, got {top_h}")
    stack_name, stack = find_layer_stack(model)
    depth = len(stack)
    h = min(top_h, depth)
    chosen_blocks = tuple(f"{stack_name}.{i}." for i in range(depth - h, depth))
    blocks = [n for n, _ in model.named_parameters() if n.startswith(chosen_blocks)]
    names = [n for n in blocks + head_names(model) if n not in exact]
    return SmoothedParameters(tuple(names), h, depth, stack_name)
