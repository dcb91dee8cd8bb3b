"""Token-bucket rate limits per client.

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

__all__ = ["RateLimiter", "retry_after_header"]


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


def retry_after_header(seconds: float) -> str:
    """The Retry-After value (whole seconds, at least 1) for a wait of ``seconds``."""
    return str(max(1, math.ceil(seconds)))
