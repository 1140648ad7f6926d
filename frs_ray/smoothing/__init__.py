"""Biphased model parameter smoothing (Sec. 4.2): top-H layer selection, Clip_rho, noisy voters, voter pools, fine-tuning."""

from .bmps import VOTER_DEFINITION, clip_rho, finetune_noise_step, parameter_noise, parameter_seed, perturbed, voter_noise
from .layers import SmoothedParameters, find_layer_stack, select_top_h
from .pool import LoopVoterPool, StackedVoterPool, VoterPool, VoterSpec, make_voter_pool, pool_from_config, vote_labels

__all__ = [
    "LoopVoterPool",
    "SmoothedParameters",
    "StackedVoterPool",
    "VOTER_DEFINITION",
    "VoterPool",
    "VoterSpec",
    "clip_rho",
    "find_layer_stack",
    "finetune_noise_step",
    "make_voter_pool",
    "pool_from_config",
    "parameter_noise",
    "parameter_seed",
    "perturbed",
    "select_top_h",
    "vote_labels",
    "voter_noise",
]
