"""A camera's live preview: its latest frame as JPEG, or MJPEG for an ``<img>``."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.responses import StreamingResponse

from pipeline.service.http.state import State
from pipeline.service.preview import MJPEG_BOUNDARY

__all__ = ["router"]

router = APIRouter(tags=["preview"])


@router.get("/streams/{camera_id}/snapshot.jpg")
def snapshot(state: State, camera_id: str) -> Response:
    """The latest frame with boxes and names (204 before the first frame)."""
    jpeg = state.service.preview.snapshot(camera_id)
    if jpeg is None:
        return Response(status_code=204)
    return Response(jpeg, media_type="image/jpeg")


@router.get("/streams/{camera_id}/preview.mjpg")
async def preview_stream(request: Request, state: State, camera_id: str) -> StreamingResponse:
    """Live MJPEG preview with boxes, names and distances (an ``<img>`` shows it)."""
    # async: a viewer waiting for its camera holds no thread of the shared pool
    parts = state.service.preview.stream(camera_id, request.is_disconnected)
    return StreamingResponse(
        parts, media_type=f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}"
    )
