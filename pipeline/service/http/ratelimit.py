"""Token-bucket rate limits per client, and an ASGI guard on request body size.

Face analysis costs tens of milliseconds of CPU (or GPU) per request; without a limit one
client can starve recognition at the doors. Buckets are per client address, refilled
continuously; a request that finds its bucket empty is refused with the seconds to wait.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodySizeLimit", "RateLimiter"]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``per_minute`` requests a minute per key, in bursts of up to ``burst``.

    max_keys: buckets kept (least recently used dropped first), so a flood of addresses
    cannot grow memory without bound.
    """

    def __init__(self, per_minute: float, burst: int, *, max_keys: int = 10_000) -> None:
        self._rate_per_second = per_minute / 60.0
        self._burst = float(burst)
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def acquire(self, key: str, now: float | None = None) -> float:
        """Take one token for ``key``: 0.0 when allowed, else the seconds until one is free."""
        now = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._buckets.pop(key, None)
            if bucket is None:
                bucket = _Bucket(self._burst, now)
            bucket.tokens = min(
                self._burst, bucket.tokens + (now - bucket.updated) * self._rate_per_second
            )
            bucket.updated = now
            self._buckets[key] = bucket  # most recently used last
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self._rate_per_second


class BodySizeLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes``, whether it declares its
    length (refused before reading) or streams chunks (refused once the count passes it)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self._app = app
        self._max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self._max_bytes):
            await _refuse(send, self._max_bytes)
            return
        received = 0
        refused = False
        answered = False

        async def counted() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max_bytes:
                    refused = True  # the app sees a client that went away, and stops reading
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            nonlocal answered
            if not refused:
                await send(message)
            elif not answered and message["type"] == "http.response.start":
                answered = True  # the app's answer to the cut-off body is replaced by ours
                await _refuse(send, self._max_bytes)

        try:
            await self._app(scope, counted, guarded)
        except Exception:
            if not refused:
                raise
        if refused and not answered:
            await _refuse(send, self._max_bytes)


async def _refuse(send: Send, max_bytes: int) -> None:
    body = (
        f'{{"detail": "request body over the {max_bytes} bytes this route allows '
        f'(api.max_upload_bytes per image; enrolment: x api.max_images_per_request)"}}'
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def retry_after_header(seconds: float) -> str:
    """The Retry-After value (whole seconds, at least 1) for a wait of ``seconds``."""
    return str(max(1, math.ceil(seconds)))
