"""The HTTP API of the door-access service (FastAPI), a thin layer over ``FaceStreamService``:
``create_app`` mounts the routes (``routes/``, one module per resource), puts the request
guard in front of them and maps the service's errors to HTTP statuses.

Every route under /v1 needs the API token (``auth``); adding and removing cameras needs the
admin token (``api.admin_token``; without one the API token is the admin token): a camera URL
is opened by FFmpeg or GStreamer, so it is checked too (``capture.admission``). Proxy headers
(X-Forwarded-For) are believed only from ``api.trusted_proxies``. /healthz, /readyz and
/metrics are open, for probes and Prometheus. The token, the body caps and the face-analysis
rate limit are checked by the request guard (``guard``) before anything reads the body. Errors
are JSON ``{"detail": "..."}`` with a 4xx/5xx status; the access log names the path, never the
query string (which may carry a token).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from engines.errors import ConfigError, FaceStreamError
from pipeline.access.http import credential_routes
from pipeline.config.service import ApiConfig
from pipeline.errors import (
    CameraUrlRefusedError,
    ClusterEnrolledError,
    DecisionNotFoundError,
    EnrollmentRejectedError,
    EventsUnavailableError,
    FeedbackGivenError,
    GalleryRequestError,
    GalleryUnavailableError,
    IdentityExistsError,
    IdentityNotFoundError,
    ImageDecodeError,
    PreviewBusyError,
    ServiceNotReadyError,
    UnknownCameraError,
    UnknownClusterNotFoundError,
    UnknownsDisabledError,
)
from pipeline.liveness import LivenessJudge
from pipeline.service.http.auth import require_token
from pipeline.service.http.guard import RequestGuard, gated_routes, one_image
from pipeline.service.http.ratelimit import RateLimiter
from pipeline.service.http.routes import (
    events,
    feedback,
    health,
    identities,
    pages,
    preview,
    recognition,
    streams,
    unknowns,
)
from pipeline.service.http.routes.uploads import TooLargeError
from pipeline.service.http.state import ApiState, api_state
from pipeline.service.service import FaceStreamService

__all__ = ["create_app", "uvicorn_config"]

_log = logging.getLogger("facestream.api")
# the metrics' method label: anything else is "other", so made-up methods make no new series
_STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"}
)
# FaceStreamError subclasses -> HTTP status; the first matching class wins
_STATUS_OF_ERROR: tuple[tuple[type[FaceStreamError], int], ...] = (
    (IdentityNotFoundError, 404),
    (DecisionNotFoundError, 404),
    (FeedbackGivenError, 409),
    (UnknownsDisabledError, 404),
    (UnknownClusterNotFoundError, 404),
    (ClusterEnrolledError, 409),
    (UnknownCameraError, 404),
    (IdentityExistsError, 409),
    (TooLargeError, 413),
    (ImageDecodeError, 400),
    (EnrollmentRejectedError, 422),
    (GalleryRequestError, 400),
    (ConfigError, 422),
    (PreviewBusyError, 503),
    (ServiceNotReadyError, 503),
    (GalleryUnavailableError, 503),
    (EventsUnavailableError, 503),
)


def _v1_routers() -> list[APIRouter]:
    """The routers of /v1, their paths relative to it."""
    # door credentials (issue 24): card numbers of identities, cards shown at card + face doors
    credentials = credential_routes(lambda request: api_state(request).service)
    resources = (identities, recognition, streams, preview, events, feedback, unknowns)
    return [credentials, *(resource.router for resource in resources)]


def _full_routes(prefix: str, routers: list[APIRouter]) -> list[APIRoute]:
    """The routes of ``routers`` at their full paths under ``prefix``: what the request guard
    matches a request to, and the route it names in the metrics, as the router would."""
    return [
        APIRoute(prefix + route.path, route.endpoint, methods=route.methods)
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute)
    ]


def create_app(
    service: FaceStreamService, *, token: str, admin_token: str | None = None
) -> FastAPI:
    """The API for ``service``; ``token`` is the bearer token every /v1 route requires,
    ``admin_token`` the one adding and removing cameras requires (None: ``api.admin_token``
    of the service's config, and without that ``token``)."""
    if admin_token is None and service.config.api.admin_token is not None:
        admin_token = service.config.api.admin_token.get_secret_value()
    if len(token) < 16 or (admin_token is not None and len(admin_token) < 16):
        raise ConfigError("the API and admin tokens must be at least 16 characters")
    app = FastAPI(
        title="facestream",
        version="0.1.0",
        description="Streaming face recognition for door access: identities, 1:1 and 1:N "
        "matching, cameras, events, live preview. Bearer token on every /v1 route.",
    )
    api = service.config.api
    liveness = service.config.liveness
    state = ApiState(
        service,
        token.encode(),
        (admin_token or token).encode(),
        threading.Lock(),
        RateLimiter(api.analysis_per_minute, api.analysis_burst),
        LivenessJudge(liveness, service.services.liveness_engine) if liveness.enabled else None,
    )
    app.state.facestream = state
    v1_routers = _v1_routers()
    app.include_router(health.router)
    for router in v1_routers:  # every /v1 route behind the token (a second line behind the guard)
        app.include_router(router, prefix="/v1", dependencies=[Depends(require_token)])
    app.include_router(pages.router)
    kinds = {**identities.ADMISSIONS, **recognition.ADMISSIONS, **streams.ADMISSIONS}
    v1_routes = _full_routes("/v1", v1_routers)
    # middleware added last runs first: _measure sees the guard's refusals too
    app.add_middleware(
        RequestGuard,
        state=state,
        routes=gated_routes(api, v1_routes, kinds),
        default=one_image(api),  # open pages, and a /v1 path no route matches
    )
    app.middleware("http")(_measure)
    app.exception_handler(FaceStreamError)(_facestream_error)
    return app


def uvicorn_config(
    app: FastAPI, api: ApiConfig, *, graceful_shutdown_seconds: int = 3
) -> uvicorn.Config:
    """The uvicorn settings that serve ``app`` as ``api`` says: X-Forwarded-For and
    X-Forwarded-Proto are believed from ``api.trusted_proxies`` only (uvicorn's own default
    believes them from 127.0.0.1, so anything on this machine could pick the address the
    rate limit counts it under); no access log (the API logs requests itself, without query
    strings)."""
    trusted = [str(network) for network in api.trusted_proxies]
    return uvicorn.Config(
        app,
        host=api.host,
        port=api.port,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=graceful_shutdown_seconds,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted,
        server_header=False,
    )


async def _measure(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    started = time.perf_counter()
    response = await call_next(request)
    # the router leaves the matched route in the scope: label by its template, not the path
    route = getattr(request.scope.get("route"), "path", "unmatched")
    elapsed = time.perf_counter() - started
    metrics = api_state(request).service.services.metrics
    method = request.method if request.method in _STANDARD_METHODS else "other"
    metrics.http_requests.labels(route=route, method=method, status=str(response.status_code)).inc()
    metrics.http_request_seconds.labels(route=route).observe(elapsed)
    if route not in health.OPEN_PATHS:
        _log.info(
            "%s %s -> %d (%.1f ms)",
            request.method,
            request.url.path,
            response.status_code,
            elapsed * 1000,
        )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


def _status_of(error: FaceStreamError) -> int:
    for error_type, status in _STATUS_OF_ERROR:
        if isinstance(error, error_type):
            return status
    return 500


async def _facestream_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, FaceStreamError)  # registered for FaceStreamError only
    status = _status_of(error)
    if status == 500:
        _log.error("%s %s failed: %s", request.method, request.url.path, error)
    body: dict[str, object] = {"detail": str(error)}
    if isinstance(error, EnrollmentRejectedError | CameraUrlRefusedError):
        body["reason"] = error.reason
    return JSONResponse(body, status_code=status)
