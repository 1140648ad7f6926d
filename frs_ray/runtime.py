"""Process set-up shared by every entry point: the ``frs`` command, the Serve actors, the benchmarks, the Tune
sweep and its trials, and the tests.

:func:`configure_process` sets up the environment at the start of a process, before models load; library classes
(the backends, the voter pools, the attacks) only read it (an entry point may add variables of its own, such as
Tune's). It sets:

- offline (:data:`OFFLINE_ENV`): no Hugging Face hub access (every model and data set is local) and no tokenizer
  thread pools (they deadlock after a fork);
- quiet (:data:`QUIET_ENV`): transformers logs errors only, without progress bars; ``UserWarning`` is ignored;
- ray (:data:`RAY_ENV`): variables for Ray and Serve on small machines, set before anything starts Ray;
- engine (:data:`ENGINE_ENV`): a vLLM engine hosted in this process keeps its model in this process (the voter
  pool writes the voters' weights into that model); :func:`require_engine_process` checks it;
- threads: torch intra-op threads.

Variables already set are kept (``setdefault``), except :data:`ENGINE_ENV`, which a process hosting an engine
needs exactly. This module imports nothing from :mod:`frs_ray`, so any module may use it.
"""

from __future__ import annotations

import os
import sys
import warnings

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}

# - RAY_AUTH_MODE=disabled: Ray 2.60 turns on token auth for new local clusters, which breaks the `serve` CLI.
# - RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: bind to 127.0.0.1 only.
# - RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S / _HEALTH_CHECK_TIMEOUT_S = 60: on a busy 2-core machine the HTTP
#   proxy takes longer than Serve's 5 s default to start, and Serve would kill it in a loop.
# - the offline variables too: Ray workers inherit the driver's environment.
RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",
    "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60",
    **OFFLINE_ENV,
}

ENGINE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def configure_process(
    offline: bool = True, quiet: bool = True, ray: bool = False, engine: bool = False, threads: int | None = None
) -> None:
    """Set up this process for FRS: see the module docstring for what each switch sets.

    ``quiet`` also applies to a transformers already imported. ``threads``: ``torch.set_num_threads(threads)``
    (``None`` leaves torch's default)."""
    env: dict[str, str] = {}
    if offline:
        env.update(OFFLINE_ENV)
    if quiet:
        env.update(QUIET_ENV)
    if ray:
        env.update(RAY_ENV)
    for key, value in env.items():
        os.environ.setdefault(key, value)
    if engine:
        os.environ.update(ENGINE_ENV)
    if quiet:
        warnings.filterwarnings("ignore", category=UserWarning)
        if "huggingface_hub" in sys.modules:  # it read HF_HUB_DISABLE_PROGRESS_BARS when imported
            import huggingface_hub

            huggingface_hub.utils.disable_progress_bars()
        if "transformers" in sys.modules:
            import transformers

            transformers.logging.set_verbosity_error()
            transformers.utils.logging.disable_progress_bar()
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, int(threads)))


def require_engine_process() -> None:
    """Raise ``RuntimeError`` unless this process was set up to host a vLLM engine
    (``configure_process(engine=True)``, before vLLM was imported)."""
    wrong = {k: os.environ.get(k) for k, v in ENGINE_ENV.items() if os.environ.get(k) != v}
    if wrong:
        raise RuntimeError(
            f"this process is not set up to host a vLLM engine ({', '.join(f'{k}={v!r}' for k, v in wrong.items())}; "
            f"needs {ENGINE_ENV}): call frs_ray.runtime.configure_process(engine=True) at the "
            "process's entry point, before vLLM is imported"
        )
