"""The style stream's control API: switch the style and the blend strength while it runs.

``facestream stylize --control-port P`` serves it with uvicorn beside the stream:

* ``GET /v1/style`` -> ``{"style", "strength", "styles": [...]}``
* ``PUT /v1/style`` with JSON ``{"style": "udnie"}`` and/or ``{"strength": 0.5}``: applied from
  the next frame; 404 for a style that is not installed, 422 for a strength outside [0, 1],
  500 for an installed model that cannot be loaded (corrupt, not matching its manifest), 503
  when the stream's backend cannot run it; each with ``{"detail": "<why>"}``, and the
  current style keeps running
* ``GET /metrics``: Prometheus (the stream's ``facestream_style_*`` and capture metrics)

/v1 needs ``Authorization: Bearer <FACESTREAM_API_TOKEN>`` (compared in constant time).
"""

from __future__ import annotations

import hmac
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import Field

from engines.errors import BackendUnavailableError, ConfigError, FaceStreamError
from pipeline.config.base import StrictModel
from pipeline.style.errors import UnknownStyleError
from pipeline.style.stream import StyleStream

__all__ = ["StyleChange", "create_style_app"]

_log = logging.getLogger(__name__)

# errors of a style switch -> HTTP status; the first matching class wins, any other
# FaceStreamError (a corrupt model file, a model of the wrong shape) is a 500
_STATUS_OF_SWITCH_ERROR: tuple[tuple[type[FaceStreamError], int], ...] = (
    (UnknownStyleError, 404),
    (BackendUnavailableError, 503),
)


class StyleChange(StrictModel):
    """A change to apply from the next frame; a field left out keeps its value."""

    style: str | None = Field(default=None, max_length=128, description="installed style name")
    strength: float | None = Field(
        default=None, ge=0.0, le=1.0, description="1 fully stylized, 0 the input unchanged"
    )


def _stream(request: Request) -> StyleStream:
    stream: StyleStream = request.app.state.stream
    return stream


def _require_token(request: Request) -> None:
    expected: bytes = request.app.state.token
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(credentials.encode(), expected):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong API token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


Stream = Annotated[StyleStream, Depends(_stream)]
_v1 = APIRouter(prefix="/v1", dependencies=[Depends(_require_token)], tags=["style"])
_open = APIRouter()


def _state(stream: StyleStream) -> dict[str, object]:
    stylizer = stream.stylizer
    return {
        "style": stylizer.style,
        "strength": stylizer.strength,
        "styles": stylizer.catalog.names(),
    }


@_v1.get("/style")
def current_style(stream: Stream) -> dict[str, object]:
    """The style and strength in use, and every installed style."""
    return _state(stream)


@_v1.put("/style")
def change_style(stream: Stream, change: StyleChange) -> dict[str, object]:
    """Switch the style and/or the strength from the next frame."""
    if change.style is not None:
        try:
            stream.switch_style(change.style)
        except FaceStreamError as exc:
            status = next(
                (code for kind, code in _STATUS_OF_SWITCH_ERROR if isinstance(exc, kind)), 500
            )
            if status >= 500:
                _log.error("switching to style %r failed: %s", change.style, exc)
            raise HTTPException(status_code=status, detail=str(exc)) from exc
    if change.strength is not None:
        stream.stylizer.set_strength(change.strength)
    return _state(stream)


@_open.get("/metrics")
def prometheus_metrics(request: Request) -> Response:
    """Prometheus text format."""
    registry: CollectorRegistry = request.app.state.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def create_style_app(stream: StyleStream, *, token: str, registry: CollectorRegistry) -> FastAPI:
    """The control API of ``stream``; ``token`` (16+ characters) guards /v1."""
    if len(token) < 16:
        raise ConfigError("the API token must be at least 16 characters")
    app = FastAPI(title="facestream style stream", version="0.1.0")
    app.state.stream = stream
    app.state.token = token.encode()
    app.state.registry = registry
    app.include_router(_v1)
    app.include_router(_open)
    return app
