"""Biphased model parameter smoothing (Sec. 4.2): top-H layer selection, Clip_rho, noisy voters, fine-tuning."""

from .bmps import VoterEnsemble, clip_rho, finetune_noise_step, perturbed, voter_noise, voter_seed
from .layers import SmoothedParameters, find_layer_stack, select_top_h

__all__ = [
    "SmoothedParameters",
    "VoterEnsemble",
    "clip_rho",
    "find_layer_stack",
    "finetune_noise_step",
    "perturbed",
    "select_top_h",
    "voter_noise",
    "voter_seed",
]
