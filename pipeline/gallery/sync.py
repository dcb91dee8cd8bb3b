"""The gallery's follow thread: other processes' changes, from Redis pub/sub, into this index.

Every gallery write publishes ``{version, identities}`` on the gallery's channel
(``pipeline.gallery.store``). ``GallerySync`` runs a daemon thread that applies each message as a
delta; after any (re)subscription, a malformed message or a write this index could not take at
once (``resync_soon``), it asks the gallery to reload if the version in Redis differs. While
Redis is away the gallery keeps serving its last index, and the thread resubscribes every
``gallery.resync_interval_seconds``. On a Redis Cluster the channel is a sharded one
(SSUBSCRIBE, on the master owning the gallery's slot; ``pipeline.redis.cluster``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from typing import Any, Protocol, cast

import redis
from redis.client import PubSub
from redis.cluster import ClusterPubSub, RedisCluster
from redis.exceptions import RedisClusterException

from pipeline.config.service import GalleryConfig
from pipeline.errors import GalleryStoreError, GalleryUnavailableError
from pipeline.redis.cluster import RedisClient

__all__ = ["FollowedGallery", "GallerySync"]

LOGGER = logging.getLogger(__name__)


class FollowedGallery(Protocol):
    """What the follow thread needs of a gallery."""

    def refresh(self) -> bool:
        """Reload if the version in Redis differs from the index's; True if it did."""
        ...

    def apply_change(self, version: int, identity_ids: Sequence[str]) -> None:
        """Bring the index to ``version``, which changed only ``identity_ids``."""
        ...


class GallerySync:
    """Follows one gallery's change channel on a daemon thread (``start``/``close``).

    client: the gallery's Redis client; channel: its change channel; where: the Redis location
    for log lines.
    """

    def __init__(
        self,
        gallery: FollowedGallery,
        client: RedisClient,
        channel: str,
        config: GalleryConfig,
        where: str,
    ) -> None:
        """Follow ``channel`` for ``gallery`` once started."""
        self._gallery = gallery
        self._client = client
        self._channel = channel
        self._config = config
        self._where = where
        self._resync_due = threading.Event()  # a committed write the index could not apply
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def resync_soon(self) -> None:
        """Have the thread compare versions (and reload) at its next turn."""
        self._resync_due.set()

    def start(self) -> None:
        """Start the thread (idempotent)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._follow, name=f"gallery-sync-{self._config.namespace}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop the thread and join it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _follow(self) -> None:
        """Thread body: apply published changes; after any (re)subscription, resync."""
        outage = False
        while not self._stop.is_set():
            pubsub: PubSub | None = None
            try:
                pubsub = self._subscribe()
                while not self._stop.is_set():
                    if self._resync_due.is_set():
                        self._resync_due.clear()  # a failing refresh resubscribes, then resyncs
                        self._gallery.refresh()
                    message = self._next_message(pubsub)
                    if message is None:
                        continue
                    if message["type"] in ("subscribe", "ssubscribe"):
                        # first subscription, or redis-py reconnected: changes may be missed
                        self._gallery.refresh()
                        if outage:
                            LOGGER.info("gallery back in sync with Redis at %s", self._where)
                            outage = False
                    elif message["type"] in ("message", "smessage"):
                        self._on_message(message["data"])
            except (
                redis.RedisError,
                RedisClusterException,  # not a RedisError: no node, or no master for the slot
                GalleryUnavailableError,
                GalleryStoreError,
            ) as exc:
                if not outage:
                    LOGGER.warning(
                        "gallery lost Redis at %s (%s); serving the last index, resyncing",
                        self._where,
                        exc,
                    )
                    outage = True
            except Exception:
                # redis-py with hiredis can raise TypeError from a socket torn down mid-read
                # (seen when redis-server is SIGKILLed); whatever it is, this thread must live
                # on, or the index would silently stop following Redis
                LOGGER.exception("gallery sync failed unexpectedly; resubscribing")
                outage = True
            finally:
                if pubsub is not None:
                    pubsub.close()
            self._stop.wait(self._config.resync_interval_seconds)

    def _subscribe(self) -> PubSub:
        """A pub/sub connection subscribed to the channel: SSUBSCRIBE on a Cluster (the gallery
        publishes with SPUBLISH there), SUBSCRIBE on one Redis."""
        if isinstance(self._client, RedisCluster):
            sharded = ClusterPubSub(self._client)
            try:
                sharded.ssubscribe(self._channel)
            except BaseException:
                sharded.close()
                raise
            return sharded
        # redis-py leaves pubsub() unannotated
        pubsub: PubSub = self._client.pubsub()  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(self._channel)
        except BaseException:
            pubsub.close()
            raise
        return pubsub

    def _next_message(self, pubsub: PubSub) -> dict[str, Any] | None:
        """The next message or subscription notice, waiting at most the resync interval."""
        timeout = self._config.resync_interval_seconds
        if isinstance(pubsub, ClusterPubSub):
            message = pubsub.get_sharded_message(timeout=timeout)
        else:
            message = pubsub.get_message(timeout=timeout)
        return cast("dict[str, Any] | None", message)

    def _on_message(self, data: bytes | str) -> None:
        try:
            change = json.loads(data)
            version = int(change["version"])
            identity_ids = [str(identity) for identity in change["identities"]]
        except (ValueError, KeyError, TypeError) as exc:
            LOGGER.warning("ignoring a malformed gallery change message: %s", exc)
            self._gallery.refresh()
            return
        self._gallery.apply_change(version, identity_ids)
