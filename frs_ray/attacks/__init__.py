"""Backdoor attacks on pre-trained models: triggers, poisoning methods, triggered test sets."""

from .base import Trigger, TriggeredSet, TriggeredText
from .poison import DataPoisonConfig, PoisonConfig, poison_model, read_attack
from .registry import attack_config, known_attacks, make_trigger, run_attack
from .triggered import build_triggered_set, read_triggered, write_triggered

__all__ = [
    "DataPoisonConfig",
    "attack_config",
    "PoisonConfig",
    "Trigger",
    "TriggeredSet",
    "TriggeredText",
    "build_triggered_set",
    "known_attacks",
    "make_trigger",
    "poison_model",
    "read_attack",
    "read_triggered",
    "run_attack",
    "write_triggered",
]
