"""``[unknowns]``: unknown faces kept and grouped by person (``pipeline.gallery.unknowns``).

Off by default (privacy): with ``enabled = false`` no unknown face leaves a trace and the
/v1/unknowns routes answer 404. Kept per unknown track: its best encodings (never a face image
unless ``keep_thumbnails``), for ``retention_days`` after its cluster was last seen.
"""

from __future__ import annotations

from pydantic import Field

from pipeline.access.policy import MIN_INTEROCULAR_PX, MIN_SHARPNESS
from pipeline.config.base import StrictModel

__all__ = ["MAX_ENCODINGS_PER_TRACK", "UnknownsConfig"]

MAX_ENCODINGS_PER_TRACK = 8
"""The most encodings a track keeps for this (best quality first): its memory stays bounded."""


class UnknownsConfig(StrictModel):
    """Unknown faces, grouped by person across cameras and days (opt-in)."""

    enabled: bool = Field(
        default=False,
        description="keep the best encodings of every track no identity was decided for, and "
        "group them by person (GET /v1/unknowns); off by default: nothing of an unknown face "
        "is kept, and the unknowns routes answer 404",
    )
    retention_days: float = Field(
        default=30.0,
        gt=0.0,
        le=3650.0,
        description="a cluster not seen for this many days is deleted with its encodings and "
        "thumbnail (checked every purge_interval_seconds)",
    )
    keep_thumbnails: bool = Field(
        default=False,
        description="also keep one face crop per cluster (its best face, JPEG, mode 600 under "
        "data_dir/unknowns), served by GET /v1/unknowns/{id}/thumbnail; deleted with the "
        "cluster. Off: no face image is ever written",
    )
    recurring_after_seconds: float = Field(
        default=3600.0,
        ge=0.0,
        le=365 * 86_400.0,
        description="a cluster seen again this long after it was last seen publishes an "
        "unknown_recurring event",
    )
    encodings_per_track: int = Field(
        default=3,
        ge=1,
        le=MAX_ENCODINGS_PER_TRACK,
        description="encodings kept per unknown track, the best quality first (larger, more "
        "frontal faces)",
    )
    cluster_distance: float | None = Field(
        default=None,
        gt=0.0,
        le=2.0,
        description="average Euclidean distance between a new track's encodings and a "
        "cluster's at or below which the track joins that cluster; none: the recognition tau "
        "(recognition.match.max_distance, or the calibrated one)",
    )
    min_interocular_px: float = Field(
        default=MIN_INTEROCULAR_PX,
        ge=0.0,
        le=1000.0,
        description="an encoding is kept only when the eyes are at least this many pixels apart "
        "(the doors' default quality gate); a track with none is not kept",
    )
    min_sharpness: float = Field(
        default=MIN_SHARPNESS,
        ge=0.0,
        le=100_000.0,
        description="an encoding is kept only when its aligned chip is at least this sharp "
        "(variance of the Laplacian, the doors' default quality gate): blurred faces of "
        "different people sit close together and would merge their clusters",
    )
    purge_interval_seconds: float = Field(
        default=3600.0,
        ge=1.0,
        le=86_400.0,
        description="how often the service deletes the clusters past retention_days",
    )
