"""Who may call what: the API token, the admin token (cameras) and the preview cookie.

Every /v1 route needs ``Authorization: Bearer <token>``; GET and HEAD also accept the cookie a
POST to /login sets (derived from the token, not the token, with its own signed expiry), so a
browser ``<img>`` can show the live preview. Mutations never accept the cookie, so a forged
cross-site form cannot enrol or delete anyone. Tokens are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from fastapi import HTTPException, Request

from pipeline.service.http.state import ApiState, State

__all__ = [
    "ADMIN_MISSING",
    "PREVIEW_COOKIE",
    "TOKEN_MISSING",
    "authorised",
    "is_api_token",
    "preview_cookie_value",
    "require_admin",
    "require_token",
]

PREVIEW_COOKIE = "facestream_preview"
TOKEN_MISSING = "missing or wrong API token: send 'Authorization: Bearer <token>'"
ADMIN_MISSING = (
    "adding or removing cameras needs the admin token (api.admin_token): send "
    "'Authorization: Bearer <admin token>'"
)
_COOKIE_CONTEXT = b"facestream preview cookie v2|"


def authorised(
    request: Request, state: ApiState, *, allow_cookie: bool, admin: bool = False
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


def is_api_token(token: str, state: ApiState) -> bool:
    """Whether ``token`` (typed into /login) is the API or the admin token."""
    given = token.encode()
    return hmac.compare_digest(given, state.token) or hmac.compare_digest(given, state.admin_token)


def preview_cookie_value(token: bytes, expires_at: int) -> str:
    """The browser cookie /login sets: ``<expiry>.<HMAC of the expiry under the token>``.
    Derived from the token, not the token itself, so a cookie that leaks (a browser profile, a
    proxy log) opens the read-only pages and nothing that needs the token; and it stops
    working at ``expires_at`` (Unix seconds) whatever the browser keeps."""
    digest = hmac.new(token, _COOKIE_CONTEXT + str(expires_at).encode(), hashlib.sha256)
    return f"{expires_at}.{digest.hexdigest()}"


def _cookie_valid(cookie: str, state: ApiState) -> bool:
    expires_text, _, _ = cookie.partition(".")
    if not expires_text.isdigit() or len(expires_text) > 12:
        return False
    expected = preview_cookie_value(state.token, int(expires_text))
    return hmac.compare_digest(cookie.encode(), expected.encode()) and time.time() < int(
        expires_text
    )


def require_token(request: Request, state: State) -> None:
    """Route dependency of /v1: a second line behind the request guard, which refuses these
    before the body is read."""
    if not authorised(request, state, allow_cookie=request.method in ("GET", "HEAD")):
        raise HTTPException(
            status_code=401, detail=TOKEN_MISSING, headers={"WWW-Authenticate": "Bearer"}
        )


def require_admin(request: Request, state: State) -> None:
    """Route dependency of the camera mutations: the admin token."""
    if not authorised(request, state, allow_cookie=False, admin=True):
        raise HTTPException(status_code=403, detail=ADMIN_MISSING)
