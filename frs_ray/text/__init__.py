"""Text space of FRS: word tokens with character offsets, Damerau-Levenshtein edits, segmentation."""

from .edits import OPERATIONS, apply_mutations, apply_operation, normalized_dl_distance
from .segment import split_points
from .tokens import Token, render, tokenize

__all__ = [
    "OPERATIONS",
    "Token",
    "apply_mutations",
    "apply_operation",
    "normalized_dl_distance",
    "render",
    "split_points",
    "tokenize",
]
