"""Prometheus metrics of the style stream (to be merged into ``pipeline.metrics``).

Frames per second in and out are ``rate()`` of the two frame counters. Frames a live camera's
queue evicts are counted by the capture layer (``facestream_frames_dropped_total``); the
counter here counts frames a sink could not take.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["StyleMetrics"]

_LATENCY_BUCKETS_SECONDS = (0.005, 0.01, 0.02, 0.033, 0.05, 0.066, 0.1, 0.15, 0.25, 0.5, 1.0)


@dataclass(frozen=True, slots=True)
class StyleMetrics:
    """The style stream's metrics; build one per registry with ``StyleMetrics.create``."""

    registry: CollectorRegistry
    frames_in: Counter
    frames_out: Counter
    frames_dropped: Counter
    frame_latency_seconds: Histogram
    inference_seconds: Histogram
    active_style: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> StyleMetrics:
        """Declare every style metric on ``registry`` (a new one when None)."""
        registry = registry if registry is not None else CollectorRegistry()
        return cls(
            registry=registry,
            frames_in=Counter(
                "facestream_style_frames_in_total",
                "Frames taken from the source by the style stream",
                ["stream"],
                registry=registry,
            ),
            frames_out=Counter(
                "facestream_style_frames_out_total",
                "Stylized frames handed to a sink",
                ["stream", "sink"],
                registry=registry,
            ),
            frames_dropped=Counter(
                "facestream_style_frames_dropped_total",
                "Stylized frames a sink could not take (not ready, no client, write failed)",
                ["stream", "sink"],
                registry=registry,
            ),
            frame_latency_seconds=Histogram(
                "facestream_style_frame_latency_seconds",
                "From a frame leaving the decoder to its stylized copy reaching the sinks",
                ["stream", "backend"],
                buckets=_LATENCY_BUCKETS_SECONDS,
                registry=registry,
            ),
            inference_seconds=Histogram(
                "facestream_style_inference_seconds",
                "Time of one style-network call (batch 1)",
                ["backend", "model_id"],
                buckets=_LATENCY_BUCKETS_SECONDS,
                registry=registry,
            ),
            active_style=Gauge(
                "facestream_style_active_info",
                "1 for the style model a stream uses now, 0 for those it used before",
                ["stream", "model_id"],
                registry=registry,
            ),
        )
