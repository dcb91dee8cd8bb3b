"""Which worker runs which camera: rendezvous (highest-random-weight) hashing of camera ids.

Every worker computes, for each configured camera, a weight per shard from a hash of (shard,
camera id) and runs the cameras whose highest weight is its own shard. Nothing is shared or
stored: the same ids and shard count give the same answer in every process (sha256, not
Python's per-process ``hash``). Going from n to n+1 shards moves a camera only when the new
shard's weight beats all others: about 1/(n+1) of the cameras, all of them to the new shard.

The worker's shard comes from ``capture.shard``: a number, or "ordinal", the number that ends
a StatefulSet pod's host name (``HOSTNAME`` = ``facestream-worker-3`` -> shard 3). The shard
count is ``capture.shards``, or ``FACESTREAM_CAPTURE_SHARDS`` (set beside the StatefulSet's
replica count).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from engines.errors import ConfigError
from pipeline.capture.config import CaptureConfig

__all__ = [
    "SHARDS_ENVIRONMENT_VARIABLE",
    "ShardAssignment",
    "ShardStatus",
    "resolve_shard",
    "shard_of",
]

SHARDS_ENVIRONMENT_VARIABLE: Final = "FACESTREAM_CAPTURE_SHARDS"
_ORDINAL: Final = re.compile(r"^[A-Za-z0-9.-]*?-(\d+)$")


def _weight(camera_id: str, shard: int) -> int:
    digest = hashlib.sha256(f"{shard}\x00{camera_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def shard_of(camera_id: str, shards: int) -> int:
    """The shard (0 .. shards-1) that runs ``camera_id``: the one of highest weight."""
    if shards < 1:
        raise ConfigError(f"there must be at least one shard, got {shards}")
    # ties (a 64-bit collision) go to the lower shard, so the answer stays deterministic
    return max(range(shards), key=lambda shard: (_weight(camera_id, shard), -shard))


@dataclass(frozen=True, slots=True)
class ShardStatus:
    """What /healthz and /readyz show: this worker's shard, the shard count, and each
    configured camera another shard runs (camera id -> its shard)."""

    index: int
    count: int
    not_assigned: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ShardAssignment:
    """This worker's shard ``index`` of ``count``."""

    index: int
    count: int

    def owns(self, camera_id: str) -> bool:
        """Whether this worker runs ``camera_id``."""
        return shard_of(camera_id, self.count) == self.index

    def status(self, camera_ids: Iterable[str]) -> ShardStatus:
        """The shard report for these configured camera ids."""
        others = {camera_id: shard_of(camera_id, self.count) for camera_id in camera_ids}
        return ShardStatus(
            self.index,
            self.count,
            {camera_id: shard for camera_id, shard in others.items() if shard != self.index},
        )


def _shard_count(config: CaptureConfig, environ: Mapping[str, str]) -> int:
    text = environ.get(SHARDS_ENVIRONMENT_VARIABLE)
    if text is None:
        return config.shards
    if not text.strip().isdigit() or int(text) < 1:
        raise ConfigError(
            f"{SHARDS_ENVIRONMENT_VARIABLE}={text!r}: expected a whole number >= 1 (the "
            "StatefulSet's replica count; a StatefulSet scaled to 0 runs no worker to ask)"
        )
    return int(text)


def resolve_shard(config: CaptureConfig, environ: Mapping[str, str]) -> ShardAssignment:
    """This worker's shard from the config and the environment; ConfigError naming the
    setting when the shard cannot be known or is outside the shard count."""
    count = _shard_count(config, environ)
    if config.shard != "ordinal":
        index = config.shard
        source = "capture.shard"
    else:
        hostname = environ.get("HOSTNAME", "")
        match = _ORDINAL.match(hostname)
        if match is None:
            raise ConfigError(
                f'capture.shard = "ordinal" needs a host name ending in -N (a StatefulSet pod, '
                f"e.g. facestream-worker-3); HOSTNAME is {hostname!r}"
            )
        index = int(match.group(1))
        source = f"the host name {hostname!r}"
    if index >= count:
        raise ConfigError(
            f"{source} gives shard {index}, but there are {count} shards (capture.shards or "
            f"{SHARDS_ENVIRONMENT_VARIABLE}): set the shard count to the StatefulSet's replicas"
        )
    return ShardAssignment(index, count)
