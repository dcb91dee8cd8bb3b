"""Open routes for probes and Prometheus: /healthz, /readyz, /metrics."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeline.service.http.schemas import (
    EncoderView,
    HealthView,
    MatchStatusView,
    ReadinessView,
    ShardView,
)
from pipeline.service.http.state import State

__all__ = ["OPEN_PATHS", "router"]

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(state: State) -> HealthView:
    """Liveness: the process answers. Also names the engines in use, the cameras' states and
    the match threshold with the gallery size it was chosen for."""
    service = state.service
    engine = service.services.engine
    return HealthView(
        status="ok",
        uptime_seconds=round(time.time() - service.started_at, 1),
        engines={
            "encoder": EncoderView(
                backend=engine.backend,
                model_id=engine.model_id,
                precision=service.config.engine.precision,
            )
        },
        cameras={status.camera_id: status.state for status in service.camera_statuses()},
        # configured cameras another worker runs (capture.shards): visible, not an error
        shard=ShardView.from_status(service.shard_status()),
        # tau and the gallery size it was chosen for: "outgrown" when more are enrolled
        match=MatchStatusView.from_status(service.match_status()),
        # a door without liveness lets photos and screens in: visible to whoever monitors it
        liveness_required={door.id: door.require_liveness for door in service.config.doors},
    )


@router.get("/readyz")
def readyz(state: State, response: Response) -> ReadinessView:
    """Readiness: Redis answers, engines are loaded, recognition runs (503 otherwise)."""
    readiness = state.service.readiness()
    response.status_code = 200 if readiness.ready else 503
    return ReadinessView.from_readiness(readiness)


@router.get("/metrics")
def prometheus_metrics(state: State) -> Response:
    """Prometheus text format; every name starts with facestream_."""
    registry = state.service.services.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
