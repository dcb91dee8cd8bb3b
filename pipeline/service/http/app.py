"""The HTTP API of the door-access service (FastAPI), a thin layer over ``FaceStreamService``.

Every route under /v1 needs ``Authorization: Bearer <token>``; GET routes also accept the
cookie that a POST to /login sets (derived from the token, not the token, and carrying its own
signed expiry, ``Secure`` when served over TLS), so a browser can show the live preview (an
``<img>`` cannot send a header). Mutations never accept the cookie, so a forged cross-site
form cannot enrol or delete anyone. Adding and removing cameras needs the admin token
(``api.admin_token``; without one the API token is the admin token): a camera URL is opened
by FFmpeg or GStreamer, so it is checked too (``capture.admission``). Tokens are compared in
constant time. Proxy headers (X-Forwarded-For) are believed only from ``api.trusted_proxies``.
/healthz, /readyz and /metrics are open, for probes and Prometheus. Face analysis (identify,
verify, enrol) is rate-limited per client and request bodies are capped per route (enrolment:
every image; other routes: one image). The token, the body cap and the rate limit are checked
by ASGI middleware before anything reads the body (FastAPI parses a form before dependencies
run), and such a refusal closes the connection (after at most ``api.drain_timeout_seconds``
waiting for a small body). Errors are JSON
``{"detail": "..."}`` with a 4xx/5xx status; the access log names the path, never the query
string (which may carry a token).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Annotated

import numpy as np
import numpy.typing as npt
import uvicorn
from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    File,
    Form,
    HTTPException,
    Query,
    Request,
    UploadFile,
)
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import StreamingResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from engines.errors import ConfigError, FaceStreamError
from pipeline.access.http import credential_routes
from pipeline.capture import CameraConfig
from pipeline.capture.admission import admit_api_camera
from pipeline.config.service import ApiConfig
from pipeline.errors import (
    CameraUrlRefusedError,
    EnrollmentRejectedError,
    EventsUnavailableError,
    GalleryRequestError,
    GalleryUnavailableError,
    IdentityExistsError,
    IdentityNotFoundError,
    ImageDecodeError,
    PreviewBusyError,
    ServiceNotReadyError,
    UnknownCameraError,
)
from pipeline.images import decode_image
from pipeline.liveness import LivenessJudge
from pipeline.service.app import EnrolmentTemplates
from pipeline.service.http.ratelimit import BodySizeLimit, RateLimiter, retry_after_header
from pipeline.service.preview import MJPEG_BOUNDARY
from pipeline.service.service import FaceStreamService
from pipeline.types import Embeddings, EventKind, FoundBy, TrackLabel

__all__ = ["PREVIEW_COOKIE", "create_app", "preview_cookie_value", "uvicorn_config"]

_log = logging.getLogger("facestream.api")
PREVIEW_COOKIE = "facestream_preview"
_OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# the metrics' method label: anything else is "other", so made-up methods make no new series
_STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"}
)
_FORM_ROOM_BYTES = 1024 * 1024  # multipart boundaries and form fields beside the images
_TOKEN_MISSING = "missing or wrong API token: send 'Authorization: Bearer <token>'"
_ADMIN_MISSING = (
    "adding or removing cameras needs the admin token (api.admin_token): send "
    "'Authorization: Bearer <admin token>'"
)
_COOKIE_CONTEXT = b"facestream preview cookie v2|"
_DRAIN_UNAUTHORISED_BYTES = 64 * 1024  # read before a 401 (see _refuse); more is not read
# FaceStreamError subclasses -> HTTP status; the first matching class wins
_STATUS_OF_ERROR: tuple[tuple[type[FaceStreamError], int], ...] = (
    (IdentityNotFoundError, 404),
    (UnknownCameraError, 404),
    (IdentityExistsError, 409),
    (ImageDecodeError, 400),
    (EnrollmentRejectedError, 422),
    (GalleryRequestError, 400),
    (ConfigError, 422),
    (PreviewBusyError, 503),
    (ServiceNotReadyError, 503),
    (GalleryUnavailableError, 503),
    (EventsUnavailableError, 503),
)


class _TooLargeError(ImageDecodeError):
    """An upload over ``api.max_upload_bytes``."""


def _status_of(error: FaceStreamError) -> int:
    for error_type, status in _STATUS_OF_ERROR:
        if isinstance(error, error_type):
            return status
    return 500


def _track_json(track: TrackLabel) -> dict[str, object]:
    return {
        "track_id": track.track_id,
        "box": [round(value, 1) for value in track.box],
        "name": track.name,
        "distance": None if track.distance is None else round(track.distance, 4),
        "liveness": track.liveness,
    }


@dataclass(frozen=True, slots=True)
class _ApiState:
    service: FaceStreamService
    token: bytes
    admin_token: bytes  # the same as token when no separate one is configured
    analysis_lock: threading.Lock  # one API face analysis at a time: the cores are shared
    analysis_limit: RateLimiter
    still_judge: LivenessJudge | None  # photo liveness; built once (its blink model is large)


def _state(request: Request) -> _ApiState:
    state: _ApiState = request.app.state.facestream
    return state


State = Annotated[_ApiState, Depends(_state)]


def _authorised(
    request: Request, state: _ApiState, *, allow_cookie: bool, admin: bool = False
) -> bool:
    """Whether the request's bearer token (or, where ``allow_cookie``, its preview cookie)
    opens the route; ``admin`` routes take the admin token only."""
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer":
        given = credentials.encode()
        if hmac.compare_digest(given, state.admin_token):
            return True
        if not admin and hmac.compare_digest(given, state.token):
            return True
    cookie = request.cookies.get(PREVIEW_COOKIE)
    return allow_cookie and not admin and cookie is not None and _cookie_valid(cookie, state)


def preview_cookie_value(token: bytes, expires_at: int) -> str:
    """The browser cookie /login sets: ``<expiry>.<HMAC of the expiry under the token>``.
    Derived from the token, not the token itself, so a cookie that leaks (a browser profile, a
    proxy log) opens the read-only pages and nothing that needs the token; and it stops
    working at ``expires_at`` (Unix seconds) whatever the browser keeps."""
    digest = hmac.new(token, _COOKIE_CONTEXT + str(expires_at).encode(), hashlib.sha256)
    return f"{expires_at}.{digest.hexdigest()}"


def _cookie_valid(cookie: str, state: _ApiState) -> bool:
    expires_text, _, _ = cookie.partition(".")
    if not expires_text.isdigit() or len(expires_text) > 12:
        return False
    expected = preview_cookie_value(state.token, int(expires_text))
    return hmac.compare_digest(cookie.encode(), expected.encode()) and time.time() < int(
        expires_text
    )


def _require_token(request: Request, state: State) -> None:
    # a second line behind _RequestGate, which refuses these before the body is read
    if not _authorised(request, state, allow_cookie=request.method in ("GET", "HEAD")):
        raise HTTPException(
            status_code=401, detail=_TOKEN_MISSING, headers={"WWW-Authenticate": "Bearer"}
        )


def _require_admin(request: Request, state: State) -> None:
    if not _authorised(request, state, allow_cookie=False, admin=True):
        raise HTTPException(status_code=403, detail=_ADMIN_MISSING)


@dataclass(frozen=True, slots=True)
class _Admission:
    """What _RequestGate lets through to one route."""

    max_body_bytes: int
    limit_source: str  # the settings the body cap comes from, for the 413 message
    analysis: bool  # face analysis: rate-limited per client
    admin: bool = False  # needs the admin token (cameras: their URLs are opened)


@dataclass(frozen=True, slots=True)
class _GatedRoute:
    route: APIRoute
    admission: _Admission


class _RequestGate:
    """ASGI middleware answering /v1 requests that must be refused before their body is read.

    FastAPI reads (and spools) a whole form before any dependency runs, so a token check in a
    dependency lets anyone make the server take in the largest allowed body first. Here, from
    the headers alone: the token (401), the admin token on camera routes (403), the route's
    body cap on a declared Content-Length (413) and the face-analysis rate limit (429). A
    refusal says ``Connection: close``, so the unread body is not read afterwards either.
    Bodies without a Content-Length are counted as they stream (``BodySizeLimit``, at the
    route's cap).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        state: _ApiState,
        routes: Sequence[_GatedRoute],
        default: _Admission,
    ) -> None:
        self._state = state
        self._routes = routes
        self._default = default
        caps = {gated.admission.max_body_bytes for gated in routes} | {default.max_body_bytes}
        self._capped: dict[int, ASGIApp] = {cap: BodySizeLimit(app, max_bytes=cap) for cap in caps}
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        if not (path == "/v1" or path.startswith("/v1/")):  # open pages: still capped
            await self._capped[self._default.max_body_bytes](scope, receive, send)
            return
        request = Request(scope)
        declared = request.headers.get("content-length")
        admission = self._default
        for gated in self._routes:
            if gated.route.matches(scope)[0] is Match.FULL:
                scope["route"] = gated.route  # the metrics' route label, as the router sets it
                admission = gated.admission
                break
        if not _authorised(request, self._state, allow_cookie=request.method in ("GET", "HEAD")):
            await _refuse(
                (scope, receive, send),
                401,
                _TOKEN_MISSING,
                {"WWW-Authenticate": "Bearer"},
                declared=declared,
                drain_bytes=_DRAIN_UNAUTHORISED_BYTES,
            )
            return
        if admission.admin and not _authorised(
            request, self._state, allow_cookie=False, admin=True
        ):
            await _refuse(
                (scope, receive, send),
                403,
                _ADMIN_MISSING,
                declared=declared,
                drain_bytes=_DRAIN_UNAUTHORISED_BYTES,
            )
            return
        if declared is not None and (
            not declared.isdigit() or int(declared) > admission.max_body_bytes
        ):
            detail = (
                f"request body of {declared[:20]} bytes is over the {admission.max_body_bytes} "
                f"bytes this route takes ({admission.limit_source})"
            )
            await _refuse((scope, receive, send), 413, detail, declared=declared, drain_bytes=0)
            return
        if admission.analysis:
            client = request.client.host if request.client is not None else "unknown"
            wait_seconds = self._state.analysis_limit.acquire(client)
            if wait_seconds > 0:
                detail = (
                    f"too many face-analysis requests; retry in {wait_seconds:.1f} s "
                    "(api.analysis_per_minute)"
                )
                headers = {"Retry-After": retry_after_header(wait_seconds)}
                await _refuse(
                    (scope, receive, send),
                    429,
                    detail,
                    headers,
                    declared=declared,
                    drain_bytes=admission.max_body_bytes,  # a client of ours: let it read the 429
                )
                return
        await self._capped[admission.max_body_bytes](scope, receive, send)


async def _refuse(
    asgi: tuple[Scope, Receive, Send],
    status: int,
    detail: str,
    headers: Mapping[str, str] | None = None,
    *,
    declared: str | None,
    drain_bytes: int,
) -> None:
    """Answer ``status`` without passing the request on. A body of at most ``drain_bytes`` is
    read and dropped first: closing a connection with unread data in it makes the kernel
    reset it, and the client sees "connection reset" instead of this answer. A larger body, or
    one that does not arrive within ``api.drain_timeout_seconds``, is not read (any further),
    and the connection is closed after the answer."""
    scope, receive, send = asgi
    state: _ApiState = scope["app"].state.facestream
    try:
        async with asyncio.timeout(state.service.config.api.drain_timeout_seconds):
            drained = await _drain(receive, declared=declared, limit=drain_bytes)
    except TimeoutError:  # declared a body and sent none (or too slowly): hold nothing for it
        drained = False
    answer_headers = dict(headers or {})
    if not drained:
        answer_headers["Connection"] = "close"
    await JSONResponse({"detail": detail}, status_code=status, headers=answer_headers)(
        scope, receive, send
    )


async def _drain(receive: Receive, *, declared: str | None, limit: int) -> bool:
    """Read and drop the request body if it is at most ``limit`` bytes; False (not all read)
    when it is declared or found to be longer, or the client went away."""
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return False
    seen = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return False
        seen += len(message.get("body", b""))
        if seen > limit:
            return False
        if not message.get("more_body", False):
            return True


def _one_image(api: ApiConfig, *, analysis: bool) -> _Admission:
    return _Admission(
        api.max_upload_bytes + _FORM_ROOM_BYTES,
        "api.max_upload_bytes, plus 1 MiB for the form",
        analysis=analysis,
    )


def _admissions(api: ApiConfig) -> list[_GatedRoute]:
    """Each /v1 route's body cap (enrolment: every image; others: one) and rate limit."""
    enrolment = _Admission(
        api.max_upload_bytes * api.max_images_per_request + _FORM_ROOM_BYTES,
        "api.max_upload_bytes x api.max_images_per_request, plus 1 MiB for the form",
        analysis=True,
    )
    analysis_routes: dict[Callable[..., object], _Admission] = {
        create_identity: enrolment,
        add_images: enrolment,
        identify: _one_image(api, analysis=True),
        verify: _one_image(api, analysis=True),
        passive_liveness: _one_image(api, analysis=True),
    }
    camera_admin = _Admission(
        api.max_upload_bytes + _FORM_ROOM_BYTES,
        "api.max_upload_bytes, plus 1 MiB for the form",
        analysis=False,
        admin=True,
    )
    admissions = {**analysis_routes, add_stream: camera_admin, remove_stream: camera_admin}
    return [
        _GatedRoute(route, admissions.get(route.endpoint, _one_image(api, analysis=False)))
        for route in v1.routes  # the app's own list holds the routers, not their routes
        if isinstance(route, APIRoute)
    ]


health = APIRouter(tags=["health"])
v1 = APIRouter(prefix="/v1", dependencies=[Depends(_require_token)])
pages = APIRouter(include_in_schema=False)
# door credentials (issue 24): card numbers of identities, cards shown at card + face doors
v1.include_router(credential_routes(lambda request: _state(request).service))


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
    limiter = RateLimiter(api.analysis_per_minute, api.analysis_burst)
    liveness = service.config.liveness
    still_judge = (
        LivenessJudge(liveness, service.services.liveness_engine) if liveness.enabled else None
    )
    app.state.facestream = _ApiState(
        service,
        token.encode(),
        (admin_token or token).encode(),
        threading.Lock(),
        limiter,
        still_judge,
    )
    app.include_router(health)
    app.include_router(v1)
    app.include_router(pages)
    # middleware added last runs first: _measure sees the gate's refusals too
    app.add_middleware(
        _RequestGate,
        state=app.state.facestream,
        routes=_admissions(api),
        default=_one_image(api, analysis=False),  # a /v1 path no route matches
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
    metrics = _state(request).service.services.metrics
    method = request.method if request.method in _STANDARD_METHODS else "other"
    metrics.http_requests.labels(route=route, method=method, status=str(response.status_code)).inc()
    metrics.http_request_seconds.labels(route=route).observe(elapsed)
    if route not in _OPEN_PATHS:
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


async def _facestream_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, FaceStreamError)  # registered for FaceStreamError only
    status = 413 if isinstance(error, _TooLargeError) else _status_of(error)
    if status == 500:
        _log.error("%s %s failed: %s", request.method, request.url.path, error)
    body: dict[str, object] = {"detail": str(error)}
    if isinstance(error, EnrollmentRejectedError | CameraUrlRefusedError):
        body["reason"] = error.reason
    return JSONResponse(body, status_code=status)


def _read_upload(state: _ApiState, upload: UploadFile) -> npt.NDArray[np.uint8]:
    limit = state.service.config.api.max_upload_bytes
    name = upload.filename or "upload"
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise _TooLargeError(
            f"{name}: larger than the {limit} bytes allowed (api.max_upload_bytes)"
        )
    return decode_image(data, name=name)


@dataclass(frozen=True, slots=True)
class _Probe:
    """The largest face of an upload as one embedding (1, 128), and the search that found it."""

    embedding: Embeddings
    found_by: FoundBy


def _largest_face(state: _ApiState, upload: UploadFile) -> _Probe:
    rgb = _read_upload(state, upload)
    with state.analysis_lock:
        analyzed = state.service.services.analyzer.analyze(rgb)
    if not len(analyzed):
        raise EnrollmentRejectedError("no_face", f"{upload.filename or 'image'}: no face found")
    vector = Embeddings(analyzed.embeddings.vectors[:1], model_id=analyzed.embeddings.model_id)
    return _Probe(vector, analyzed.faces.found_by)


def _templates(state: _ApiState, images: list[UploadFile]) -> EnrolmentTemplates:
    most = state.service.config.api.max_images_per_request
    if len(images) > most:
        raise ImageDecodeError(f"{len(images)} images; at most {most} per request")
    budget_pixels = state.service.config.api.max_request_pixels
    total_pixels = 0
    decoded: list[tuple[str, npt.NDArray[np.uint8]]] = []
    for number, upload in enumerate(images, start=1):
        name = upload.filename or f"image {number}"
        rgb = _read_upload(state, upload)
        total_pixels += rgb.shape[0] * rgb.shape[1]
        if total_pixels > budget_pixels:  # all are held until analysed: bound the memory
            raise _TooLargeError(
                f"{name}: the images up to this one have {total_pixels} pixels together, more "
                f"than the {budget_pixels} one request may have (api.max_request_pixels); "
                "send fewer or smaller photos"
            )
        decoded.append((name, rgb))
    with state.analysis_lock:
        found = state.service.services.enrolment_templates(decoded)
    if not len(found.templates):
        raise EnrollmentRejectedError(
            "no_usable_photo", "none of the images can be enrolled: " + "; ".join(found.rejected)
        )
    return found


# ---- health and metrics (open) ----


@health.get("/healthz")
def healthz(state: State) -> dict[str, object]:
    """Liveness: the process answers. Also names the engines in use, the cameras' states and
    the match threshold with the gallery size it was chosen for."""
    service = state.service
    engine = service.services.engine
    return {
        "status": "ok",
        "uptime_seconds": round(time.time() - service.started_at, 1),
        "engines": {
            "encoder": {
                "backend": engine.backend,
                "model_id": engine.model_id,
                "precision": service.config.engine.precision,
            }
        },
        "cameras": {status.camera_id: status.state for status in service.camera_statuses()},
        # configured cameras another worker runs (capture.shards): visible, not an error
        "shard": asdict(service.shard_status()),
        # tau and the gallery size it was chosen for: "outgrown" when more are enrolled
        "match": service.match_status().as_dict(),
    }


@health.get("/readyz")
def readyz(state: State) -> JSONResponse:
    """Readiness: Redis answers, engines are loaded, recognition runs (503 otherwise)."""
    readiness = state.service.readiness()
    body = {"ready": readiness.ready, **asdict(readiness)}
    return JSONResponse(body, status_code=200 if readiness.ready else 503)


@health.get("/metrics")
def prometheus_metrics(state: State) -> Response:
    """Prometheus text format; every name starts with facestream_."""
    registry = state.service.services.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


# ---- identities ----


@v1.get("/identities", tags=["identities"])
def list_identities(state: State) -> dict[str, object]:
    """Every enrolled identity."""
    identities = state.service.services.gallery.list_identities()
    return {"identities": [identity.as_dict() for identity in identities]}


@v1.post("/identities", tags=["identities"], status_code=201)
def create_identity(
    state: State,
    name: Annotated[str, Form(min_length=1, max_length=200)],
    images: Annotated[list[UploadFile], File(description="photos, one face each")],
    identity_id: Annotated[str | None, Form(description="id to use; default: a new one")] = None,
) -> dict[str, object]:
    """Enrol a person from one or more photos; photos that cannot be used are listed in
    ``rejected`` (the identity is made from the others); ``found_by`` names the still search
    that found each accepted photo's face."""
    found = _templates(state, images)
    identity = state.service.services.enroll(name, found.templates, identity_id=identity_id)
    state.service.match_status()  # warns once when the gallery outgrows tau
    return {**identity.as_dict(), "rejected": found.rejected, "found_by": found.found_by}


@v1.get("/identities/{identity_id}", tags=["identities"])
def get_identity(state: State, identity_id: str) -> dict[str, object]:
    """One identity."""
    return state.service.services.gallery.get(identity_id).as_dict()


@v1.post("/identities/{identity_id}/images", tags=["identities"])
def add_images(
    state: State, identity_id: str, images: Annotated[list[UploadFile], File()]
) -> dict[str, object]:
    """Add photos (templates) to an identity; ``found_by`` as for enrolment."""
    gallery = state.service.services.gallery
    gallery.get(identity_id)  # 404 before any face work
    found = _templates(state, images)
    identity = gallery.add_templates(identity_id, found.templates)
    return {**identity.as_dict(), "rejected": found.rejected, "found_by": found.found_by}


@v1.delete("/identities/{identity_id}", tags=["identities"], status_code=204)
def delete_identity(state: State, identity_id: str) -> Response:
    """Delete an identity, all its templates, and its name from the event stream, the
    webhook outbox, the dead letters and the MQTT broker's retained topics."""
    state.service.remove_identity(identity_id)  # and purges its events
    return Response(status_code=204)


# ---- matching ----


@v1.post("/identify", tags=["matching"])
def identify(
    state: State,
    image: Annotated[UploadFile, File()],
    top_k: Annotated[int, Form(ge=1, le=100)] = 5,
) -> dict[str, object]:
    """1:N: the identities within tau of the largest face, best first (empty: nobody);
    ``found_by`` names the still search that found the face."""
    tau = state.service.config.process.match.max_distance
    probe = _largest_face(state, image)
    found = state.service.services.gallery.identify(probe.embedding, top_k=top_k, max_distance=tau)
    matches = [
        {"identity_id": m.identity_id, "name": m.name, "distance": round(m.distance, 4)}
        for m in found[0]
    ]
    return {"matches": matches, "tau": tau, "found_by": probe.found_by}


@v1.post("/verify", tags=["matching"])
def verify(
    state: State,
    image: Annotated[UploadFile, File()],
    identity_id: Annotated[str, Form(min_length=1)],
) -> dict[str, object]:
    """1:1: is the largest face the claimed identity? ``found_by`` as for identify."""
    gallery = state.service.services.gallery
    gallery.get(identity_id)  # 404 before any face work
    tau = state.service.config.process.match.max_distance
    probe = _largest_face(state, image)
    distance = gallery.distance_to(probe.embedding, identity_id)
    return {
        "match": distance <= tau,
        "distance": round(distance, 4),
        "tau": tau,
        "found_by": probe.found_by,
    }


@v1.post("/liveness", tags=["matching"])
def passive_liveness(state: State, image: Annotated[UploadFile, File()]) -> dict[str, object]:
    """Passive liveness of each face of one photo (a remote enrolment's selfie, say): the
    one-frame cues (MiniFASNet, texture), largest face first. A door never relies on this: at
    a camera a face must also move in 3-D to be "live"."""
    judge = state.still_judge
    if judge is None:
        raise ConfigError("liveness is disabled: set [liveness] enabled = true")
    rgb = _read_upload(state, image)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    with state.analysis_lock:
        faces = state.service.services.analyzer.detector.detect_still(rgb)
        verdicts = judge.judge_still(bgr, faces)
    return {
        "faces": [
            {
                "box": [round(float(value), 1) for value in faces.boxes[row]],
                "verdict": liveness.verdict,
                "score": round(liveness.score, 4),
                "cues": {name: round(value, 4) for name, value in liveness.cues.items()},
            }
            for row, liveness in enumerate(verdicts)
        ]
    }


# ---- streams (cameras) and their previews ----


@v1.get("/streams", tags=["streams"])
def list_streams(state: State) -> dict[str, object]:
    """Every camera and its state."""
    return {"streams": [asdict(status) for status in state.service.camera_statuses()]}


@v1.post("/streams", tags=["streams"], status_code=201, dependencies=[Depends(_require_admin)])
def add_stream(state: State, camera: CameraConfig) -> dict[str, object]:
    """Start a camera: the fields of a ``[[capture.cameras]]`` entry (id, url, ...). Needs
    the admin token. Only rtsp(s)://, http(s):// and device URLs, files under
    ``capture.media_dir``, and hosts with public addresses or in
    ``capture.api_allowed_networks``; anything else is 422 with a ``reason``."""
    admitted = admit_api_camera(camera, state.service.config.capture)
    return asdict(state.service.add_camera(admitted))


@v1.get("/streams/{camera_id}", tags=["streams"])
def get_stream(state: State, camera_id: str) -> dict[str, object]:
    """One camera's state and the tracks of its latest frame."""
    status = state.service.cameras.get(camera_id).status()
    tracks = state.service.preview.tracks(camera_id)
    return {**asdict(status), "tracks": [_track_json(track) for track in tracks]}


@v1.delete(
    "/streams/{camera_id}",
    tags=["streams"],
    status_code=204,
    dependencies=[Depends(_require_admin)],
)
def remove_stream(state: State, camera_id: str) -> Response:
    """Stop and forget a camera (needs the admin token)."""
    state.service.remove_camera(camera_id)
    return Response(status_code=204)


@v1.get("/streams/{camera_id}/snapshot.jpg", tags=["preview"])
def snapshot(state: State, camera_id: str) -> Response:
    """The latest frame with boxes and names (204 before the first frame)."""
    jpeg = state.service.preview.snapshot(camera_id)
    if jpeg is None:
        return Response(status_code=204)
    return Response(jpeg, media_type="image/jpeg")


@v1.get("/streams/{camera_id}/preview.mjpg", tags=["preview"])
async def preview_stream(request: Request, state: State, camera_id: str) -> StreamingResponse:
    """Live MJPEG preview with boxes, names and distances (an ``<img>`` shows it)."""
    # async: a viewer waiting for its camera holds no thread of the shared pool
    parts = state.service.preview.stream(camera_id, request.is_disconnected)
    return StreamingResponse(
        parts, media_type=f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}"
    )


# ---- events ----


@v1.get("/events", tags=["events"])
def recent_events(
    state: State,
    count: Annotated[int, Query(ge=1, le=1000)] = 50,
    kind: Annotated[EventKind | None, Query()] = None,
) -> dict[str, object]:
    """The newest events of the stream, newest first."""
    events = state.service.bus.recent(count, kind=kind)
    return {"events": [json.loads(event.to_json()) for event in events]}


# ---- browser pages ----


@pages.get("/login")
def login_page() -> HTMLResponse:
    """The sign-in form. The token goes in a POST body, never in the URL (where browser
    history, proxies and referrers keep it); a ``?token=`` here is ignored."""
    return HTMLResponse(_LOGIN_PAGE.format(problem=""))


@pages.post("/login")
def login(
    request: Request, state: State, token: Annotated[str, Form(max_length=4096)] = ""
) -> Response:
    """Set the preview cookie for a right token and go to the preview. The cookie expires
    after ``api.preview_session_seconds``, checked by the server, and is ``Secure`` when the
    page was served over TLS (directly or through a trusted proxy)."""
    if not (
        hmac.compare_digest(token.encode(), state.token)
        or hmac.compare_digest(token.encode(), state.admin_token)
    ):
        page = _LOGIN_PAGE.format(problem=_WRONG_TOKEN_LINE)
        return HTMLResponse(page, status_code=401)
    lifetime = state.service.config.api.preview_session_seconds
    response = RedirectResponse("/preview", status_code=303)
    response.set_cookie(
        PREVIEW_COOKIE,
        preview_cookie_value(state.token, int(time.time()) + lifetime),
        httponly=True,
        secure=request.url.scheme == "https",
        samesite="strict",
        max_age=lifetime,
        path="/",
    )
    return response


@pages.get("/")
def index() -> RedirectResponse:
    """The preview is the home page."""
    return RedirectResponse("/preview", status_code=303)


@pages.get("/preview")
def preview_page(request: Request, state: State) -> Response:
    """Every camera's live preview, with the names seen (needs the /login cookie)."""
    if not _authorised(request, state, allow_cookie=True):
        return RedirectResponse("/login", status_code=303)
    return HTMLResponse(_PREVIEW_PAGE)


_WRONG_TOKEN_LINE = '<p role="alert">That is not the API token.</p>'
_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>facestream: sign in</title></head>
<body style="font-family: sans-serif">
<h1>facestream</h1>
{problem}
<form method="post" action="/login">
  <label>API token <input name="token" type="password" autocomplete="off" size="48"></label>
  <button type="submit">Open the live preview</button>
</form>
</body></html>
"""

# The page lists cameras from /v1/streams and polls each one's tracks, so the names seen are
# also in the DOM (readable by assistive technology and by the browser test), not only drawn.
_PREVIEW_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>facestream: live preview</title>
<style>
body { font-family: sans-serif; margin: 1em; background: #111; color: #eee }
.camera { display: inline-block; margin: 0 1em 1em 0; vertical-align: top }
.camera img { max-width: 640px; background: #000; display: block }
.tracks { list-style: none; padding: 0 }
</style></head>
<body>
<h1>facestream live preview</h1>
<div id="cameras"></div>
<script>
async function getJson(path) {
  const reply = await fetch(path, {credentials: "same-origin"});
  if (!reply.ok) { throw new Error(path + ": " + reply.status); }
  return reply.json();
}
function trackText(track) {
  if (track.distance === null) { return "#" + track.track_id + " (encoding)"; }
  const who = track.name === null ? "unknown" : track.name;
  return who + " (distance " + track.distance.toFixed(2) + ")";
}
async function refresh() {
  const root = document.getElementById("cameras");
  const {streams} = await getJson("/v1/streams");
  for (const stream of streams) {
    const id = stream.camera_id;
    let box = document.getElementById("camera-" + id);
    if (box === null) {
      box = document.createElement("div");
      box.className = "camera";
      box.id = "camera-" + id;
      const title = document.createElement("h2");
      title.textContent = id;
      const image = document.createElement("img");
      image.alt = "live preview of " + id;
      image.src = "/v1/streams/" + encodeURIComponent(id) + "/preview.mjpg";
      const state = document.createElement("p");
      state.className = "state";
      const list = document.createElement("ul");
      list.className = "tracks";
      box.append(title, image, state, list);
      root.append(box);
    }
    const detail = await getJson("/v1/streams/" + encodeURIComponent(id));
    box.querySelector(".state").textContent = "state: " + detail.state;
    const list = box.querySelector(".tracks");
    list.replaceChildren(...detail.tracks.map(track => {
      const item = document.createElement("li");
      item.textContent = trackText(track);
      return item;
    }));
  }
}
refresh();
setInterval(() => refresh().catch(error => console.error(error)), 500);
</script>
</body></html>
"""
