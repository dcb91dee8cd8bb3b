"""The running service's unknown faces (``[unknowns] enabled``): each finished unknown track
goes to the clusters (``pipeline.gallery.unknowns``), a cluster seen again after
``recurring_after_seconds`` is published as an ``unknown_recurring`` event, and the clusters
past retention are purged by a thread of their own.

Tracks judged spoof (a photo, a screen) are not kept: an operator must not enrol a print; nor
are encodings below ``[unknowns]``'s quality minimums (``usable_faces``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

from pipeline.capture.queue import DropOldestQueue
from pipeline.errors import (
    GalleryStoreError,
    GalleryUnavailableError,
    QueueClosedError,
    UnknownsDisabledError,
)
from pipeline.gallery.model import Identity
from pipeline.gallery.unknowns import (
    UnknownsPurger,
    UnknownsStore,
    UnknownTrackAdded,
    usable_faces,
)
from pipeline.recognition.live import CameraTrack
from pipeline.service.app import Services
from pipeline.types import Event

__all__ = ["UNKNOWNS_DIR", "UnknownFaces", "unknowns_store"]

_log = logging.getLogger(__name__)
UNKNOWNS_DIR = "unknowns"
"""Under ``data_dir``: the clusters' face crops, when ``unknowns.keep_thumbnails``."""
_QUEUE_TRACKS: Final = 256  # finished tracks waiting for Redis before the oldest is dropped
_WAIT_SECONDS: Final = 0.5
_STOP_SECONDS: Final = 10.0


def unknowns_store(services: Services, *, clock: Callable[[], float] = time.time) -> UnknownsStore:
    """The unknowns store of ``services`` as ``[unknowns]`` configures it (cluster distance:
    the calibrated tau unless set); UnknownsDisabledError when ``enabled = false``."""
    config = services.config
    unknowns = config.unknowns
    if not unknowns.enabled:
        raise UnknownsDisabledError(
            "unknown faces are not enabled ([unknowns] enabled = false): no unknown face "
            "is kept, so there is nothing to list, enrol or delete"
        )
    return UnknownsStore(
        services.gallery,
        services.redis,
        unknowns,
        # the calibrated tau when there is one (services.config carries it)
        cluster_distance=unknowns.cluster_distance or config.recognition.match.max_distance,
        thumbnails_dir=config.data_dir / UNKNOWNS_DIR,
        clock=clock,
    )


class UnknownFaces:
    """The unknowns store of one service, fed by its finished tracks.

    The recognition worker only queues a finished track (``track_ended``: a bounded queue that
    drops the oldest, counted); a thread of this object stores it, so a slow or absent Redis
    never holds up recognition. publish: hands an event to the service's publisher (it never
    blocks on Redis); clock: unix seconds now (tests inject their own).
    """

    def __init__(
        self,
        services: Services,
        publish: Callable[[Event], None],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = unknowns_store(services, clock=clock)
        self._publish = publish
        self._counted = services.metrics.unknown_tracks
        self._queue: DropOldestQueue[CameraTrack] = DropOldestQueue(
            _QUEUE_TRACKS, self._counted.labels(result="dropped")
        )
        self._purger = UnknownsPurger(self.store)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start storing queued tracks, and purging the clusters past retention (now, then
        every interval)."""
        self._purger.start()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="unknowns", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Store what is queued (the tracks recognition ended as it stopped), then stop both
        threads."""
        self._queue.close()
        if self._thread is not None:
            self._thread.join(_STOP_SECONDS)
        self._purger.stop()

    def track_ended(self, ended: CameraTrack) -> None:
        """``LiveOutputs.on_track``: queue the finished track for ``keep`` (never blocks)."""
        if ended.track.identity is None:
            self._queue.put(ended)

    def keep(self, ended: CameraTrack) -> UnknownTrackAdded | None:
        """Keep a finished track when no identity was decided for it, it was not judged spoof
        and some of its encodings pass the quality minimums; publish ``unknown_recurring`` when
        its cluster recurs. Redis away: logged and counted, the track is not kept."""
        track = ended.track
        if track.identity is not None or track.faces is None:
            return None
        if track.live is False:
            self._counted.labels(result="spoof").inc()
            return None
        faces = usable_faces(track.faces, self.store.config)
        if faces is None:
            self._counted.labels(result="low_quality").inc()
            return None
        try:
            added = self.store.add(ended.camera_id, faces)
        except (GalleryUnavailableError, GalleryStoreError) as exc:
            self._counted.labels(result="failed").inc()
            _log.warning(
                "unknown track %d of camera %s not kept: %s", track.track_id, ended.camera_id, exc
            )
            return None
        self._counted.labels(result="kept").inc()
        if added.recurring:
            payload = added.event_payload(ended.camera_id)
            self._publish(Event.create("unknown_recurring", ended.camera_id, payload))
        return added

    def enroll(self, cluster_id: str, name: str, galleries: Sequence[str]) -> Identity:
        """Make an identity of the cluster (``UnknownsStore.enroll``)."""
        return self.store.enroll(cluster_id, name, galleries=galleries)

    def _run(self) -> None:
        while True:
            try:
                ended = self._queue.get(timeout_seconds=_WAIT_SECONDS)
            except QueueClosedError:
                return
            if ended is not None:
                self.keep(ended)
