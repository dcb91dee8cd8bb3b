"""/v1/decisions/{event_id}/feedback and /v1/identities/{id}/quarantined: the operator's
corrections of door decisions and the templates they took out of the search."""

from __future__ import annotations

from fastapi import APIRouter

from pipeline.service.http.schemas import (
    FeedbackRequest,
    FeedbackView,
    IdentityView,
    QuarantinedList,
)
from pipeline.service.http.state import State

__all__ = ["router"]

router = APIRouter(tags=["feedback"])


@router.post("/decisions/{event_id}/feedback")
def give_feedback(state: State, event_id: str, answer: FeedbackRequest) -> FeedbackView:
    """Say whether the decision announced as ``event_id`` named the right person. A wrong match
    quarantines the template it matched and tightens that identity's tau; 404: no decision
    awaits feedback under that id (or ``identity_id`` is not enrolled); 409: it had one."""
    service = state.service
    result = service.feedback(
        event_id, correct=answer.correct, correct_identity_id=answer.identity_id
    )
    return FeedbackView.from_result(result, service.identity_tau(result.identity))


@router.get("/identities/{identity_id}/quarantined")
def list_quarantined(state: State, identity_id: str) -> QuarantinedList:
    """The identity's templates that corrections took out of the search."""
    return QuarantinedList.from_templates(identity_id, state.service.quarantined(identity_id))


@router.post("/identities/{identity_id}/quarantined/{template_id}/restore")
def restore_template(state: State, identity_id: str, template_id: str) -> IdentityView:
    """Put a quarantined template back in the search (its identity's tau worked out again)."""
    return IdentityView.from_identity(state.service.restore_template(identity_id, template_id))
