"""Python client of the FRS service: ``FRSClient(base_url).classify(texts, **options)``.

Results are the library's certificate type, the one the server answers with
(:class:`frs_ray.certify.certificate.Certificate`). Sync calls use the standard library's HTTP client; async calls (``aclassify``) run it in a worker thread. A 503 (service at capacity) is
retried with exponential backoff, honouring ``Retry-After``; other 4xx errors raise :class:`FRSServiceError`
with the server's message at once.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any, Sequence

from pydantic import ValidationError

from ..certify.certificate import Certificate
from ..errors import ConfigError, FRSError
from .schemas import ClassifyOptions, ClassifyRequest, ClassifyResponse, InfoResponse


class FRSServiceError(FRSError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class FRSClient:
    def __init__(
        self, base_url: str = "http://127.0.0.1:8000", timeout: float = 120.0, retries: int = 5, backoff: float = 0.5
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout, self.retries, self.backoff = timeout, retries, backoff

    # ------------------------------------------------------------------ plumbing
    def _call(self, method: str, path: str, payload: dict | None = None) -> Any:
        data = json.dumps(payload).encode("utf-8") if payload is not None else None
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(
                self.base_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                body = exc.read()
                try:
                    message = json.loads(body).get("error") or body.decode("utf-8", "replace")
                except (json.JSONDecodeError, AttributeError):
                    message = body.decode("utf-8", "replace")
                if exc.code == 503 and attempt < self.retries:
                    wait = float(exc.headers.get("Retry-After") or 0) or self.backoff * 2**attempt
                    time.sleep(min(wait, 30.0))
                    continue
                raise FRSServiceError(exc.code, message) from None
            except urllib.error.URLError as exc:
                if attempt < self.retries:
                    time.sleep(self.backoff * 2**attempt)
                    continue
                raise FRSServiceError(0, f"cannot reach {self.base_url}: {exc.reason}") from None
        raise FRSServiceError(503, "service at capacity after retries")

    # ------------------------------------------------------------------ API
    def classify_response(self, texts: Sequence[str], **options: Any) -> ClassifyResponse:
        try:
            body = ClassifyRequest(texts=list(texts), options=ClassifyOptions(**options))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "request"
            raise ConfigError(f"invalid request: {where}: {err['msg']} (got {err.get('input')!r})") from None
        return ClassifyResponse.model_validate(self._call("POST", "/v1/classify", body.model_dump(exclude_none=True)))

    def classify(self, texts: Sequence[str], **options: Any) -> list[Certificate]:
        """Certificates for ``texts``; options: k, budget, alpha, n_max, target_radius, target_kind, return_spans."""
        return self.classify_response(texts, **options).results

    async def aclassify(self, texts: Sequence[str], **options: Any) -> list[Certificate]:
        return await asyncio.to_thread(self.classify, texts, **options)

    def info(self) -> InfoResponse:
        return InfoResponse.model_validate(self._call("GET", "/v1/info"))

    def healthy(self) -> bool:
        try:
            return self._call("GET", "/healthz").get("status") == "ok"
        except FRSServiceError:
            return False


async def classify_with_handle(handle, texts: Sequence[str], **options: Any) -> list[Certificate]:
    """Call the router from Python inside the cluster through its Serve ``DeploymentHandle``."""
    body = ClassifyRequest(texts=list(texts), options=ClassifyOptions(**options))
    resp = await handle.classify.remote(body)
    return resp.results
