"""Classifier backends: one small protocol, implemented for transformers sequence classifiers."""

from .base import ClassifierBackend, TorchBackend
from .hf import HFClassifier, resolve_model_path

__all__ = ["ClassifierBackend", "HFClassifier", "TorchBackend", "resolve_model_path"]
