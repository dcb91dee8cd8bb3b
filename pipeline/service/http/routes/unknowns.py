"""/v1/unknowns: the unknown faces the cameras saw, grouped by person; enrol or forget one.

Every route answers 404 with a message when unknown faces are not kept (``[unknowns] enabled =
false``). Listing and thumbnails are reads (the preview page's cookie opens them, as for the
identities); enrolling and deleting need the bearer token, as enrolling and deleting
identities do.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from pipeline.service.http.schemas import (
    EnrolledIdentity,
    UnknownClusterList,
    UnknownClusterView,
    UnknownEnrollRequest,
)
from pipeline.service.http.state import State

__all__ = ["router"]

router = APIRouter(tags=["unknowns"])


@router.get("/unknowns")
def list_unknowns(state: State) -> UnknownClusterList:
    """The unknown clusters (not enrolled), the most recently seen first."""
    clusters = state.service.unknowns().store.clusters()
    return UnknownClusterList(clusters=[UnknownClusterView.from_cluster(each) for each in clusters])


@router.post("/unknowns/{cluster_id}/enroll", status_code=201)
def enroll_unknown(
    state: State, cluster_id: str, request: UnknownEnrollRequest
) -> EnrolledIdentity:
    """Make an identity of the cluster: its encodings become the identity's templates, and the
    cluster is marked enrolled. 404: no such cluster; 409: enrolled already, or empty; 422: a
    bad name or gallery. A refusal writes nothing."""
    identity = state.service.enroll_unknown(cluster_id, request.name, galleries=request.galleries)
    return EnrolledIdentity.from_enrolment(identity, rejected=[], found_by=[])


@router.delete("/unknowns/{cluster_id}", status_code=204)
def delete_unknown(state: State, cluster_id: str) -> Response:
    """Forget a cluster: its encodings and its thumbnail. 404: no such cluster."""
    state.service.unknowns().store.delete(cluster_id)
    return Response(status_code=204)


@router.get(
    "/unknowns/{cluster_id}/thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "the cluster's best face"}},
)
def unknown_thumbnail(state: State, cluster_id: str) -> Response:
    """The cluster's best face (JPEG), when ``unknowns.keep_thumbnails`` kept one; else 404."""
    jpeg = state.service.unknowns().store.thumbnail(cluster_id)
    return Response(jpeg, media_type="image/jpeg")
