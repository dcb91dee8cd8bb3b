"""The running service's unknown faces (``[unknowns] enabled``): each finished unknown track
goes to the clusters (``pipeline.gallery.unknowns``), a cluster seen again after
``recurring_after_seconds`` is published as an ``unknown_recurring`` event, and the clusters
past retention are purged by a thread of their own.

Tracks judged spoof (a photo, a screen) are not kept: an operator must not enrol a print; nor
are encodings below ``[unknowns]``'s quality minimums (``usable_faces``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from pipeline.errors import GalleryStoreError, GalleryUnavailableError, UnknownsDisabledError
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

    publish: hands an event to the service's publisher (it never blocks on Redis);
    clock: unix seconds now (tests inject their own).
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
        self._purger = UnknownsPurger(self.store)

    def start(self) -> None:
        """Start purging the clusters past retention (now, then every interval)."""
        self._purger.start()

    def stop(self) -> None:
        """Stop the purge thread."""
        self._purger.stop()

    def track_ended(self, ended: CameraTrack) -> None:
        """``LiveOutputs.on_track``: ``keep`` the finished track."""
        self.keep(ended)

    def keep(self, ended: CameraTrack) -> UnknownTrackAdded | None:
        """Keep a finished track when no identity was decided for it (and it was not judged
        spoof); publish ``unknown_recurring`` when its cluster recurs. Redis away: logged, the
        track is not kept (the recognition worker never waits on it)."""
        track = ended.track
        if track.identity is not None or track.faces is None or track.live is False:
            return None
        faces = usable_faces(track.faces, self.store.config)
        if faces is None:
            return None
        try:
            added = self.store.add(ended.camera_id, faces)
        except (GalleryUnavailableError, GalleryStoreError) as exc:
            _log.warning(
                "unknown track %d of camera %s not kept: %s", track.track_id, ended.camera_id, exc
            )
            return None
        if added.recurring:
            payload = added.event_payload(ended.camera_id)
            self._publish(Event.create("unknown_recurring", ended.camera_id, payload))
        return added

    def enroll(self, cluster_id: str, name: str, galleries: Sequence[str]) -> Identity:
        """Make an identity of the cluster (``UnknownsStore.enroll``)."""
        return self.store.enroll(cluster_id, name, galleries=galleries)
