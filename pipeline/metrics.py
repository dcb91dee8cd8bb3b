"""Every Prometheus metric of the service, declared once.

Metrics live in a ``PipelineMetrics`` object registered on a ``CollectorRegistry`` that the
app factory creates and passes in, so tests get a fresh registry instead of process-wide state.
Names are ``facestream_<what>_<unit>``; labels are bounded (camera, stage, backend, model_id).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["PipelineMetrics", "StyleMetrics"]

# around tau = 0.6, where a match is decided, finer than elsewhere
_DISTANCE_BUCKETS = (0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0, 1.2)
# per video frame of the style stream: around 33-66 ms (30-15 fps)
_FRAME_BUCKETS_SECONDS = (0.005, 0.01, 0.02, 0.033, 0.05, 0.066, 0.1, 0.15, 0.25, 0.5, 1.0)
# face size: ~80 px faces have ~30 px between the eyes; a door camera's faces ~40-150 px
_INTEROCULAR_BUCKETS_PX = (8, 12, 16, 20, 25, 30, 40, 50, 65, 80, 100, 130, 170)
_SHARPNESS_BUCKETS = (5, 10, 20, 40, 70, 100, 150, 250, 400, 700, 1000, 2000)
_LATENCY_BUCKETS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True, slots=True)
class PipelineMetrics:
    """The service's metrics; build one per registry with ``PipelineMetrics.create``."""

    registry: CollectorRegistry
    frames_captured: Counter
    frames_dropped: Counter
    camera_up: Gauge
    camera_reconnects: Counter
    queue_frames: Gauge
    stage_seconds: Histogram
    faces_encoded: Counter
    frames_processed: Counter
    capture_to_decision_seconds: Histogram
    tracks_finished: Counter
    unknown_tracks: Counter
    decisions: Counter
    engine_info: Gauge
    gallery_identities: Gauge
    match_gallery_size: Gauge
    gallery_templates: Gauge
    gallery_reloads: Counter
    events_published: Counter
    events_delivered: Counter
    events_failed: Counter
    events_dead_lettered: Counter
    events_rejected: Counter
    events_pending: Gauge
    events_store_errors: Counter
    events_unpublished: Gauge
    events_unpublished_dropped: Counter
    faces_detected: Counter
    matches: Counter
    match_distance: Histogram
    face_interocular_px: Histogram
    face_sharpness: Histogram
    http_requests: Counter
    http_request_seconds: Histogram
    preview_clients: Gauge
    mqtt_connected: Gauge
    mqtt_published: Counter
    still_images: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> PipelineMetrics:
        """Declare every metric on ``registry`` (a new one when None)."""
        registry = registry if registry is not None else CollectorRegistry()
        return cls(
            registry=registry,
            frames_captured=Counter(
                "facestream_frames_captured_total",
                "Frames read from a camera",
                ["camera"],
                registry=registry,
            ),
            frames_dropped=Counter(
                "facestream_frames_dropped_total",
                "Frames evicted from a full capture queue (oldest first)",
                ["camera"],
                registry=registry,
            ),
            camera_up=Gauge(
                "facestream_camera_up",
                "1 while the camera delivers frames, else 0",
                ["camera"],
                registry=registry,
            ),
            camera_reconnects=Counter(
                "facestream_camera_reconnects_total",
                "Reconnect attempts after a failure",
                ["camera"],
                registry=registry,
            ),
            queue_frames=Gauge(
                "facestream_queue_frames",
                "Frames waiting between capture and detection",
                ["camera"],
                registry=registry,
            ),
            stage_seconds=Histogram(
                "facestream_stage_seconds",
                "Time spent per call of a pipeline stage",
                ["stage", "backend"],
                buckets=_LATENCY_BUCKETS_SECONDS,
                registry=registry,
            ),
            faces_encoded=Counter(
                "facestream_faces_encoded_total",
                "Face chips run through the encoder",
                ["backend", "model_id"],
                registry=registry,
            ),
            frames_processed=Counter(
                "facestream_frames_processed_total",
                "Frames taken from a camera queue and run through recognition",
                ["camera"],
                registry=registry,
            ),
            capture_to_decision_seconds=Histogram(
                "facestream_capture_to_decision_seconds",
                "From a frame leaving the decoder to its faces being tracked and identified",
                ["camera"],
                buckets=_LATENCY_BUCKETS_SECONDS,
                registry=registry,
            ),
            tracks_finished=Counter(
                "facestream_tracks_finished_total",
                "Face tracks that ended, by outcome (known identity or unknown)",
                ["camera", "outcome"],
                registry=registry,
            ),
            unknown_tracks=Counter(
                "facestream_unknown_tracks_total",
                "Unknown tracks offered to the unknown faces ([unknowns] enabled), by what became "
                "of them: kept, low_quality, spoof, dropped (queue full), failed (Redis)",
                ["result"],
                registry=registry,
            ),
            engine_info=Gauge(
                "facestream_engine_info",
                "1 for each model runtime in use: its role, backend, precision and model id",
                ["role", "backend", "precision", "model_id"],
                registry=registry,
            ),
            decisions=Counter(
                "facestream_decisions_total",
                "Door decisions by outcome (granted, denied, spoof_suspected, unknown)",
                ["door", "outcome"],
                registry=registry,
            ),
            gallery_identities=Gauge(
                "facestream_gallery_identities",
                "Identities in the in-memory gallery index",
                registry=registry,
            ),
            match_gallery_size=Gauge(
                "facestream_match_gallery_size",
                "Identities the match threshold tau was chosen for (0: not stated); more "
                "identities than this raise the chance a stranger matches someone",
                registry=registry,
            ),
            gallery_templates=Gauge(
                "facestream_gallery_templates",
                "Face templates in the in-memory gallery index",
                registry=registry,
            ),
            gallery_reloads=Counter(
                "facestream_gallery_reloads_total",
                "Times the in-memory index was rebuilt",
                registry=registry,
            ),
            events_published=Counter(
                "facestream_events_published_total",
                "Events written to the Redis stream (and queued for each webhook), by kind",
                ["kind"],
                registry=registry,
            ),
            events_delivered=Counter(
                "facestream_events_delivered_total",
                "Webhook deliveries a receiver accepted with a 2xx status",
                registry=registry,
            ),
            events_failed=Counter(
                "facestream_events_failed_total",
                "Webhook delivery attempts that failed (connect, timeout, http_status, "
                "http_error); each is retried until the attempts run out",
                ["reason"],
                registry=registry,
            ),
            events_dead_lettered=Counter(
                "facestream_events_dead_lettered_total",
                "Webhook deliveries moved to the dead-letter list after their last attempt",
                registry=registry,
            ),
            events_rejected=Counter(
                "facestream_events_rejected_total",
                "Outbox records refused without a POST and dead-lettered, by reason: forged "
                "(MAC mismatch), unknown_destination (a webhook the config does not list), "
                "malformed. Anything but 0 means someone wrote to the outbox in Redis",
                ["reason"],
                registry=registry,
            ),
            events_pending=Gauge(
                "facestream_events_pending",
                "Webhook deliveries waiting in the Redis outbox (due or backing off)",
                registry=registry,
            ),
            events_store_errors=Counter(
                "facestream_events_store_errors_total",
                "Event stream or outbox operations that failed because Redis was unreachable "
                "or refused, by operation",
                ["operation"],
                registry=registry,
            ),
            events_unpublished=Gauge(
                "facestream_events_unpublished",
                "Events recorded (decisions are in the audit log) but not yet in the Redis "
                "stream because Redis was unreachable; they are retried in order",
                registry=registry,
            ),
            events_unpublished_dropped=Counter(
                "facestream_events_unpublished_dropped_total",
                "Events that never reached the Redis stream (nor MQTT, nor the webhooks): the "
                "retry queue was full, or Redis was still away at shutdown; decisions among "
                "them are in the audit log. By reason (queue_full, shutdown)",
                ["reason"],
                registry=registry,
            ),
            faces_detected=Counter(
                "facestream_faces_detected_total",
                "Faces the detector found in processed frames",
                ["camera"],
                registry=registry,
            ),
            matches=Counter(
                "facestream_matches_total",
                "Encoded faces by gallery result: known (nearest identity within tau), unknown "
                "(nearest beyond tau) or empty (no identity enrolled)",
                ["camera", "result"],
                registry=registry,
            ),
            match_distance=Histogram(
                "facestream_match_distance",
                "Distance from each encoded face to its nearest gallery identity (recognition "
                "quality: genuine matches sit well below tau, strangers above it)",
                ["camera"],
                buckets=_DISTANCE_BUCKETS,
                registry=registry,
            ),
            face_interocular_px=Histogram(
                "facestream_face_interocular_px",
                "Inter-ocular distance (pixels) of each encoded face: a door's "
                "min_interocular_px refuses the votes of faces below it",
                ["camera"],
                buckets=_INTEROCULAR_BUCKETS_PX,
                registry=registry,
            ),
            face_sharpness=Histogram(
                "facestream_face_sharpness",
                "Sharpness (variance of the Laplacian of the aligned chip) of each encoded "
                "face: a door's min_sharpness refuses the votes of blurrier faces",
                ["camera"],
                buckets=_SHARPNESS_BUCKETS,
                registry=registry,
            ),
            http_requests=Counter(
                "facestream_http_requests_total",
                "HTTP API requests by route template, method and status code",
                ["route", "method", "status"],
                registry=registry,
            ),
            http_request_seconds=Histogram(
                "facestream_http_request_seconds",
                "HTTP API time to response headers, by route template",
                ["route"],
                buckets=_LATENCY_BUCKETS_SECONDS,
                registry=registry,
            ),
            preview_clients=Gauge(
                "facestream_preview_clients",
                "Browsers watching a camera's live preview",
                ["camera"],
                registry=registry,
            ),
            mqtt_connected=Gauge(
                "facestream_mqtt_connected",
                "1 while the MQTT bridge is connected to its broker (0 also when it is off)",
                registry=registry,
            ),
            mqtt_published=Counter(
                "facestream_mqtt_published_total",
                "Events the MQTT broker acknowledged, by kind",
                ["kind"],
                registry=registry,
            ),
            still_images=Counter(
                "facestream_still_images_total",
                "Still images analysed (enrolment, identify, verify), by the search that found "
                "their faces: blazeface (one pass), chip, padded, upscaled, tiled, hog; none "
                "when no face was found. Anything but blazeface ran extra searches",
                ["found_by"],
                registry=registry,
            ),
        )


@dataclass(frozen=True, slots=True)
class StyleMetrics:
    """The style stream's metrics (``facestream stylize``): frames per second in and out are
    ``rate()`` of the frame counters; frames a live camera's queue evicts are counted by the
    capture metrics, ``frames_dropped`` counts frames a sink could not take. Build one per
    registry with ``StyleMetrics.create``."""

    registry: CollectorRegistry
    frames_in: Counter
    frames_out: Counter
    frames_dropped: Counter
    frame_latency_seconds: Histogram
    inference_seconds: Histogram
    active_style: Gauge
    engine_errors: Counter
    target_fps: Gauge

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
                "Stylized frames a sink could not take (not ready, write failed; frames an RTSP "
                "sink had no client for count as neither sent nor dropped)",
                ["stream", "sink"],
                registry=registry,
            ),
            frame_latency_seconds=Histogram(
                "facestream_style_frame_latency_seconds",
                "From a frame leaving the decoder to its stylized copy reaching the sinks",
                ["stream", "backend"],
                buckets=_FRAME_BUCKETS_SECONDS,
                registry=registry,
            ),
            inference_seconds=Histogram(
                "facestream_style_inference_seconds",
                "Time of one style-network call (batch 1)",
                ["backend", "model_id"],
                buckets=_FRAME_BUCKETS_SECONDS,
                registry=registry,
            ),
            active_style=Gauge(
                "facestream_style_active_info",
                "1 for the style model a stream uses now, 0 for those it used before",
                ["stream", "model_id"],
                registry=registry,
            ),
            engine_errors=Counter(
                "facestream_style_engine_errors_total",
                "Frames the style engine failed on (skipped; too many in a row end the stream)",
                ["stream", "backend"],
                registry=registry,
            ),
            target_fps=Gauge(
                "facestream_style_target_fps",
                "Frame rate the stream is configured to keep (its alert's threshold)",
                ["stream"],
                registry=registry,
            ),
        )
