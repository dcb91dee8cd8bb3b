"""/v1/streams: the cameras, their states and the tracks of their latest frames. Adding and
removing a camera needs the admin token: its URL is opened by FFmpeg or GStreamer."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Depends, Response

from pipeline.capture import CameraConfig
from pipeline.capture.admission import admit_api_camera
from pipeline.service.http.auth import require_admin
from pipeline.service.http.guard import AdmissionKind
from pipeline.service.http.schemas import CameraView, StreamDetail, StreamList, TrackView
from pipeline.service.http.state import State

__all__ = ["ADMISSIONS", "router"]

router = APIRouter(tags=["streams"])


@router.get("/streams")
def list_streams(state: State) -> StreamList:
    """Every camera and its state."""
    return StreamList(
        streams=[CameraView.from_status(status) for status in state.service.camera_statuses()]
    )


@router.post("/streams", status_code=201, dependencies=[Depends(require_admin)])
def add_stream(state: State, camera: CameraConfig) -> CameraView:
    """Start a camera: the fields of a ``[[capture.cameras]]`` entry (id, url, ...). Needs
    the admin token. Only rtsp(s)://, http(s):// and device URLs, files under
    ``capture.media_dir``, and hosts with public addresses or in
    ``capture.api_allowed_networks``; anything else is 422 with a ``reason``."""
    admitted = admit_api_camera(camera, state.service.config.capture)
    return CameraView.from_status(state.service.add_camera(admitted))


@router.get("/streams/{camera_id}")
def get_stream(state: State, camera_id: str) -> StreamDetail:
    """One camera's state and the tracks of its latest frame."""
    status = CameraView.from_status(state.service.camera_status(camera_id))
    tracks = [
        TrackView(
            track_id=track.track_id,
            box=[round(value, 1) for value in track.box],
            name=track.name,
            distance=None if track.distance is None else round(track.distance, 4),
            liveness=track.liveness,
        )
        for track in state.service.preview.tracks(camera_id)
    ]
    return StreamDetail(**status.model_dump(), tracks=tracks)


@router.delete("/streams/{camera_id}", status_code=204, dependencies=[Depends(require_admin)])
def remove_stream(state: State, camera_id: str) -> Response:
    """Stop and forget a camera (needs the admin token)."""
    state.service.remove_camera(camera_id)
    return Response(status_code=204)


ADMISSIONS: dict[Callable[..., object], AdmissionKind] = {
    add_stream: "camera_admin",
    remove_stream: "camera_admin",
}
