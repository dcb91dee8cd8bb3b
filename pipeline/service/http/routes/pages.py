"""The browser pages: sign-in (sets the preview cookie) and every camera's live preview, with
the operator's corrections and unknown faces below it."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from pipeline.service.http.auth import (
    PREVIEW_COOKIE,
    authorised,
    is_api_token,
    preview_cookie_value,
)
from pipeline.service.http.operator_page import OPERATOR_SECTION
from pipeline.service.http.state import State

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


@router.get("/login")
def login_page() -> HTMLResponse:
    """The sign-in form. The token goes in a POST body, never in the URL (where browser
    history, proxies and referrers keep it); a ``?token=`` here is ignored."""
    return HTMLResponse(_LOGIN_PAGE.format(problem=""))


@router.post("/login")
def login(
    request: Request, state: State, token: Annotated[str, Form(max_length=4096)] = ""
) -> Response:
    """Set the preview cookie for a right token and go to the preview. The cookie expires
    after ``api.preview_session_seconds``, checked by the server, and is ``Secure`` when the
    page was served over TLS (directly or through a trusted proxy)."""
    if not is_api_token(token, state):
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


@router.get("/")
def index() -> RedirectResponse:
    """The preview is the home page."""
    return RedirectResponse("/preview", status_code=303)


@router.get("/preview")
def preview_page(request: Request, state: State) -> Response:
    """Every camera's live preview, with the names seen (needs the /login cookie)."""
    if not authorised(request, state, allow_cookie=True):
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
# also in the DOM (readable by assistive technology and by the browser test), not only drawn;
# below them, the operator's section (recent decisions, unknown faces: ``operator_page``).
_PREVIEW_PAGE = (
    """<!doctype html>
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
"""
    + OPERATOR_SECTION
    + """</body></html>
"""
)
