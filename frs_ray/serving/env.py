"""Environment for Ray on small machines; call before anything starts Ray.

- RAY_AUTH_MODE=disabled: Ray 2.60 turns on token auth for new local clusters, which breaks the `serve` CLI.
- RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: bind to 127.0.0.1 only.
- RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S / _HEALTH_CHECK_TIMEOUT_S = 60: on a busy 2-core machine the HTTP
  proxy takes longer than Serve's 5 s default to start, and Serve would kill it in a loop.
"""

from __future__ import annotations

import os

RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",
    "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def apply_ray_env() -> None:
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
