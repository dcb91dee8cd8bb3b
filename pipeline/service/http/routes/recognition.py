"""/v1/identify, /v1/verify and /v1/liveness: one photo's face, matched or judged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Form, UploadFile

from engines.errors import ConfigError
from pipeline.service.http.guard import AdmissionKind
from pipeline.service.http.routes.uploads import largest_face, read_upload
from pipeline.service.http.schemas import (
    FaceLiveness,
    GalleryName,
    IdentifyResult,
    LivenessResult,
    MatchView,
    VerifyResult,
)
from pipeline.service.http.state import State

__all__ = ["ADMISSIONS", "router"]

router = APIRouter(tags=["matching"])


@router.post("/identify")
def identify(
    state: State,
    image: Annotated[UploadFile, File()],
    top_k: Annotated[int, Form(ge=1, le=100)] = 5,
    galleries: Annotated[
        list[GalleryName] | None,
        Form(description="search only this named gallery, repeatable; default: every one"),
    ] = None,
) -> IdentifyResult:
    """1:N: the identities within tau of the largest face, best first (empty: nobody), among
    those of ``galleries`` (none given: everyone); ``found_by`` names the still search that
    found the face."""
    probe = largest_face(state, image)
    found = state.service.identify(probe.embedding, top_k=top_k, galleries=galleries or None)
    matches = [
        MatchView(identity_id=m.identity_id, name=m.name, distance=round(m.distance, 4))
        for m in found
    ]
    return IdentifyResult(matches=matches, tau=state.service.tau, found_by=probe.found_by)


@router.post("/verify")
def verify(
    state: State,
    image: Annotated[UploadFile, File()],
    identity_id: Annotated[str, Form(min_length=1)],
) -> VerifyResult:
    """1:1: is the largest face the claimed identity? ``found_by`` as for identify."""
    state.service.identity(identity_id)  # 404 before any face work
    probe = largest_face(state, image)
    distance = state.service.distance_to(probe.embedding, identity_id)
    tau = state.service.tau
    return VerifyResult(
        match=distance <= tau, distance=round(distance, 4), tau=tau, found_by=probe.found_by
    )


@router.post("/liveness")
def passive_liveness(state: State, image: Annotated[UploadFile, File()]) -> LivenessResult:
    """Passive liveness of each face of one photo (a remote enrolment's selfie, say): the
    one-frame cues (MiniFASNet, texture), largest face first. A door never relies on this: at
    a camera a face must also move in 3-D to be "live"."""
    judge = state.still_judge
    if judge is None:
        raise ConfigError("liveness is disabled: set [liveness] enabled = true")
    rgb = read_upload(state, image)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    with state.analysis_lock:
        faces = state.service.services.analyzer.detector.detect_still(rgb)
        verdicts = judge.judge_still(bgr, faces)
    return LivenessResult(
        faces=[
            FaceLiveness(
                box=[round(float(value), 1) for value in faces.boxes[row]],
                verdict=liveness.verdict,
                score=round(liveness.score, 4),
                cues={name: round(value, 4) for name, value in liveness.cues.items()},
            )
            for row, liveness in enumerate(verdicts)
        ]
    )


# one image each, and the face-analysis rate limit
ADMISSIONS: dict[Callable[..., object], AdmissionKind] = {
    identify: "analysis",
    verify: "analysis",
    passive_liveness: "analysis",
}
