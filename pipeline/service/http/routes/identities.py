"""/v1/identities: enrol, list, show, change the galleries of, add photos to and delete
people."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile

from pipeline.gallery.model import DEFAULT_GALLERY
from pipeline.service.http.guard import AdmissionKind
from pipeline.service.http.routes.uploads import templates
from pipeline.service.http.schemas import (
    EnrolledIdentity,
    GalleryName,
    IdentityList,
    IdentityPatch,
    IdentityView,
)
from pipeline.service.http.state import State

__all__ = ["ADMISSIONS", "router"]

router = APIRouter(tags=["identities"])


@router.get("/identities")
def list_identities(state: State) -> IdentityList:
    """Every enrolled identity."""
    identities = state.service.identities()
    return IdentityList(identities=[IdentityView.from_identity(each) for each in identities])


@router.post("/identities", status_code=201)
def create_identity(
    state: State,
    name: Annotated[str, Form(min_length=1, max_length=200)],
    images: Annotated[list[UploadFile], File(description="photos, one face each")],
    identity_id: Annotated[str | None, Form(description="id to use; default: a new one")] = None,
    galleries: Annotated[
        list[GalleryName] | None,
        Form(description="a named gallery it joins, repeatable; default: default"),
    ] = None,
) -> EnrolledIdentity:
    """Enrol a person from one or more photos; photos that cannot be used are listed in
    ``rejected`` (the identity is made from the others); ``found_by`` names the still search
    that found each accepted photo's face. ``galleries``: the named galleries it joins (a
    door searches only its own)."""
    found = templates(state, images)
    identity = state.service.enroll(
        name, found.templates, identity_id=identity_id, galleries=galleries or (DEFAULT_GALLERY,)
    )
    return EnrolledIdentity.from_enrolment(
        identity, rejected=found.rejected, found_by=found.found_by
    )


@router.get("/identities/{identity_id}")
def get_identity(state: State, identity_id: str) -> IdentityView:
    """One identity."""
    return IdentityView.from_identity(state.service.identity(identity_id))


@router.patch("/identities/{identity_id}")
def update_identity(state: State, identity_id: str, change: IdentityPatch) -> IdentityView:
    """Replace the named galleries an identity belongs to, in one transaction: a door of a
    gallery it joins grants it from the next search, one of a gallery it left no longer does.
    404: no such identity; 422: a bad gallery name or none (nothing is written)."""
    identity = state.service.set_galleries(identity_id, change.galleries)
    return IdentityView.from_identity(identity)


@router.post("/identities/{identity_id}/images")
def add_images(
    state: State, identity_id: str, images: Annotated[list[UploadFile], File()]
) -> EnrolledIdentity:
    """Add photos (templates) to an identity; ``found_by`` as for enrolment."""
    state.service.identity(identity_id)  # 404 before any face work
    found = templates(state, images)
    identity = state.service.add_templates(identity_id, found.templates)
    return EnrolledIdentity.from_enrolment(
        identity, rejected=found.rejected, found_by=found.found_by
    )


@router.delete("/identities/{identity_id}", status_code=204)
def delete_identity(state: State, identity_id: str) -> Response:
    """Delete an identity, all its templates, and its name from the event stream, the
    webhook outbox, the dead letters and the MQTT broker's retained topics."""
    state.service.remove_identity(identity_id)  # and purges its events
    return Response(status_code=204)


# enrolment takes every image of a request: its own body cap, and the face-analysis limit
ADMISSIONS: dict[Callable[..., object], AdmissionKind] = {
    create_identity: "enrolment",
    add_images: "enrolment",
}
