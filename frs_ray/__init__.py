"""FRS-Ray: Fuzzed Randomized Smoothing (He et al., ICLR 2025) as a library and a Ray service.

Layers, each importing only from the ones before it::

    errors, config
    text        tokens with offsets, Damerau-Levenshtein edits, segmentation
    data        datasets from a folder, local files or the Hugging Face hub
    backends    the classifier protocol and its transformers implementation
    smoothing   biphased model parameter smoothing (Eq. 4-5): layer selection, Clip_rho, voters, fine-tuning
    fuzzing     MCTS vulnerable-span search (Eq. 6-9) and fuzzed text randomization (Eq. 10-14)
    certify     Clopper-Pearson bound, certified radius (Thm. 1, Cor. 1), the smoothed classifier
    cli         the ``frs`` command
"""

__version__ = "0.1.0"
