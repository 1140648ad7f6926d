"""FRS-Ray: Fuzzed Randomized Smoothing (He et al., ICLR 2025) as a library and a Ray service.

Packages, roughly in dependency order (a package imports from those above it; ``cli`` and
``evaluation.commands`` import each other's helpers)::

    errors, config, storage   user errors; typed settings; cache folders built once
    text        tokens with offsets, Damerau-Levenshtein edits, segmentation
    data        datasets from a folder, local files or the Hugging Face hub
    backends    the classifier protocol, its transformers implementation, a causal LM for perplexity
    smoothing   biphased model parameter smoothing (Eq. 4-5): layer selection, Clip_rho, voters, fine-tuning
    fuzzing     MCTS vulnerable-span search (Eq. 6-9), fuzzed text randomization (Eq. 10-14), fluency check
    certify     Clopper-Pearson bound, certified radius (Thm. 1, Cor. 1), the smoothed classifier
    attacks     triggers and poisoning methods; triggered test sets
    defenses    one interface for FRS, its ablations and the baseline defenses
    evaluation  metrics, the model zoo, the ``frs eval`` grid and its reports
    serving     Ray actors, the Serve router, schemas and client
    cli         the ``frs`` command
"""

__version__ = "0.1.0"
