"""Prometheus metrics of the router, through Ray's metrics API (exported by every Ray node)."""

from __future__ import annotations

from ray.util import metrics


class ServiceMetrics:
    def __init__(self) -> None:
        self.requests = metrics.Counter("frs_requests_total", description="classify requests received")
        self.errors = metrics.Counter("frs_errors_total", description="requests that failed", tag_keys=("kind",))
        self.certificates = metrics.Counter(
            "frs_certificates_total", description="texts answered, by outcome", tag_keys=("outcome",)
        )
        self.latency = metrics.Histogram(
            "frs_latency_seconds",
            description="latency per stage",
            boundaries=[0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60],
            tag_keys=("stage",),
        )
