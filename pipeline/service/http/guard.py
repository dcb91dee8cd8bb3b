"""The one ASGI admission gate in front of the API: token, admin token, body caps, face-analysis
rate limit, and how a refused request is answered.

FastAPI reads (and spools) a whole form before any dependency runs, so a token check in a
dependency lets anyone make the server take in the largest allowed body first. The guard
decides from the headers alone: the token (401), the admin token on camera routes (403), the
route's body cap on a declared Content-Length (413) and the face-analysis rate limit (429). A
body without a Content-Length is counted as it streams and cut off at the route's cap (413).
A refusal reads at most a small body (so the client sees the answer, not a reset), waiting no
longer than ``api.drain_timeout_seconds``, and otherwise says ``Connection: close``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.config.service import ApiConfig
from pipeline.service.http.auth import ADMIN_MISSING, TOKEN_MISSING, authorised
from pipeline.service.http.ratelimit import retry_after_header
from pipeline.service.http.state import ApiState

__all__ = ["Admission", "AdmissionKind", "GatedRoute", "RequestGuard", "gated_routes", "one_image"]

AdmissionKind = Literal["enrolment", "analysis", "camera_admin"]
"""What a route needs beyond the token and a one-image body cap: enrolment (every image of a
request, rate-limited), analysis (one image, rate-limited), camera_admin (the admin token)."""

_FORM_ROOM_BYTES = 1024 * 1024  # multipart boundaries and form fields beside the images
_DRAIN_UNAUTHORISED_BYTES = 64 * 1024  # read before a 401 or 403; more is not read


@dataclass(frozen=True, slots=True)
class Admission:
    """What the guard lets through to one route."""

    max_body_bytes: int
    limit_source: str  # the settings the body cap comes from, for the 413 message
    analysis: bool  # face analysis: rate-limited per client
    admin: bool = False  # needs the admin token (cameras: their URLs are opened)


@dataclass(frozen=True, slots=True)
class GatedRoute:
    route: APIRoute
    admission: Admission


def one_image(api: ApiConfig, *, analysis: bool = False, admin: bool = False) -> Admission:
    """A route that takes at most one image."""
    return Admission(
        api.max_upload_bytes + _FORM_ROOM_BYTES,
        "api.max_upload_bytes, plus 1 MiB for the form",
        analysis=analysis,
        admin=admin,
    )


def gated_routes(
    api: ApiConfig,
    routes: Sequence[APIRoute],
    kinds: Mapping[Callable[..., object], AdmissionKind],
) -> list[GatedRoute]:
    """Each /v1 route's body cap (enrolment: every image; others: one) and rate limit, from
    the kind its endpoint is listed under in ``kinds`` (absent: a one-image route)."""
    enrolment = Admission(
        api.max_upload_bytes * api.max_images_per_request + _FORM_ROOM_BYTES,
        "api.max_upload_bytes x api.max_images_per_request, plus 1 MiB for the form",
        analysis=True,
    )
    by_kind: dict[AdmissionKind, Admission] = {
        "enrolment": enrolment,
        "analysis": one_image(api, analysis=True),
        "camera_admin": one_image(api, admin=True),
    }
    plain = one_image(api)
    return [
        GatedRoute(route, by_kind[kinds[route.endpoint]] if route.endpoint in kinds else plain)
        for route in routes
    ]


class RequestGuard:
    """ASGI middleware answering the requests that must be refused before their body is read,
    and capping the body of every other one. Open pages (outside /v1) are only capped."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        state: ApiState,
        routes: Sequence[GatedRoute],
        default: Admission,
    ) -> None:
        self._app = app
        self._state = state
        self._routes = routes
        self._default = default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if not (path == "/v1" or path.startswith("/v1/")):  # open pages: still capped
            await self._capped((scope, receive, send), self._default.max_body_bytes)
            return
        request = Request(scope)
        admission = self._default  # a /v1 path no route matches
        for gated in self._routes:
            if gated.route.matches(scope)[0] is Match.FULL:
                scope["route"] = gated.route  # the metrics' route label, as the router sets it
                admission = gated.admission
                break
        refusal = self._refusal(request, admission)
        if refusal is None:
            await self._capped((scope, receive, send), admission.max_body_bytes)
            return
        status, detail, headers, drain_bytes = refusal
        await self._refuse((scope, receive, send), status, detail, headers, drain_bytes)

    def _refusal(
        self, request: Request, admission: Admission
    ) -> tuple[int, str, dict[str, str], int] | None:
        """(status, detail, headers, bytes to drain) of a refusal from the headers, or None."""
        if not authorised(request, self._state, allow_cookie=request.method in ("GET", "HEAD")):
            return 401, TOKEN_MISSING, {"WWW-Authenticate": "Bearer"}, _DRAIN_UNAUTHORISED_BYTES
        if admission.admin and not authorised(request, self._state, allow_cookie=False, admin=True):
            return 403, ADMIN_MISSING, {}, _DRAIN_UNAUTHORISED_BYTES
        declared = request.headers.get("content-length")
        if declared is not None and not _within(declared, admission.max_body_bytes):
            detail = (
                f"request body of {declared[:20]} bytes is over the {admission.max_body_bytes} "
                f"bytes this route takes ({admission.limit_source})"
            )
            return 413, detail, {}, 0
        if admission.analysis:
            client = request.client.host if request.client is not None else "unknown"
            wait_seconds = self._state.analysis_limit.acquire(client)
            if wait_seconds > 0:
                detail = (
                    f"too many face-analysis requests; retry in {wait_seconds:.1f} s "
                    "(api.analysis_per_minute)"
                )
                # a client of ours: let it read the 429
                headers = {"Retry-After": retry_after_header(wait_seconds)}
                return 429, detail, headers, admission.max_body_bytes
        return None

    async def _refuse(
        self,
        asgi: tuple[Scope, Receive, Send],
        status: int,
        detail: str,
        headers: Mapping[str, str],
        drain_bytes: int,
    ) -> None:
        """Answer ``status`` without passing the request on. A body of at most ``drain_bytes``
        is read and dropped first: closing a connection with unread data in it makes the
        kernel reset it, and the client sees "connection reset" instead of this answer. A
        larger body, or one that does not arrive within ``api.drain_timeout_seconds``, is not
        read (any further), and the connection is closed after the answer."""
        scope, receive, _ = asgi
        declared = Request(scope).headers.get("content-length")
        try:
            async with asyncio.timeout(self._state.service.config.api.drain_timeout_seconds):
                drained = await _drain(receive, declared=declared, limit=drain_bytes)
        except TimeoutError:  # declared a body and sent none (or too slowly): hold nothing
            drained = False
        await _answer(asgi, status, detail, headers, close=not drained)

    async def _capped(self, asgi: tuple[Scope, Receive, Send], max_bytes: int) -> None:
        """Pass the request on with its body capped at ``max_bytes``: 413 for a longer one,
        whether declared (refused before reading) or streamed (once the count passes it)."""
        scope, receive, send = asgi
        detail = (
            f"request body over the {max_bytes} bytes this route allows "
            "(api.max_upload_bytes per image; enrolment: x api.max_images_per_request)"
        )
        declared = Request(scope).headers.get("content-length")
        if declared is not None and not _within(declared, max_bytes):
            await _answer(asgi, 413, detail, {}, close=True)
            return
        received = 0
        refused = False
        answered = False

        async def counted() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    refused = True  # the app sees a client that went away, and stops reading
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            nonlocal answered
            if not refused:
                await send(message)
            elif not answered and message["type"] == "http.response.start":
                answered = True  # the app's answer to the cut-off body is replaced by ours
                await _answer(asgi, 413, detail, {}, close=True)

        try:
            await self._app(scope, counted, guarded)
        except Exception:
            if not refused:
                raise
        if refused and not answered:
            await _answer(asgi, 413, detail, {}, close=True)


def _within(declared: str, max_bytes: int) -> bool:
    return declared.isdigit() and int(declared) <= max_bytes


async def _answer(
    asgi: tuple[Scope, Receive, Send],
    status: int,
    detail: str,
    headers: Mapping[str, str],
    *,
    close: bool,
) -> None:
    """``{"detail": ...}`` with ``status``; ``close``: the connection is closed after it."""
    answer_headers = dict(headers)
    if close:
        answer_headers["Connection"] = "close"
    await JSONResponse({"detail": detail}, status_code=status, headers=answer_headers)(*asgi)


async def _drain(receive: Receive, *, declared: str | None, limit: int) -> bool:
    """Read and drop the request body if it is at most ``limit`` bytes; False (not all read)
    when it is declared or found to be longer, or the client went away."""
    if declared is not None and not _within(declared, limit):
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
