"""HTTP routes of door credentials, mounted under /v1 by ``pipeline.service.http.app`` (bearer
token).

* ``PUT|GET|DELETE /v1/identities/{id}/credential``: set, show, clear an identity's card number
  (checked against every OSDP and card-reader door's format: an error names ``card_number``).
* ``POST /v1/doors/{id}/credential``: a card shown at a card + face door, for panels that
  forward the card instead of facestream polling the reader.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Body, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from pipeline.access.credentials import CredentialFormatError
from pipeline.errors import IdentityNotFoundError

if TYPE_CHECKING:
    from pipeline.access.policy import DoorConfig
    from pipeline.service.service import FaceStreamService

__all__ = [
    "CardNumber",
    "CardPresented",
    "CredentialView",
    "check_card_number",
    "credential_routes",
]


class CardNumber(BaseModel):
    """A card number (the credential), as the API takes it."""

    card_number: int = Field(ge=0, lt=1 << 128, description="the number printed on the card")


class CredentialView(BaseModel):
    """An identity's card number (None: it holds none)."""

    identity_id: str
    card_number: int | None


class CardPresented(BaseModel):
    """A card shown at a card + face door: waiting for its holder's face, or refused."""

    door_id: str
    status: Literal["waiting_for_face", "refused"]
    reason: str | None


def check_card_number(doors: list[DoorConfig], card_number: int) -> None:
    """CredentialFormatError naming ``card_number`` and the door unless the number fits the
    format of every door that sends or reads cards."""
    for door in doors:
        for link in (door.osdp, door.card_reader):
            if link is None:
                continue
            try:
                link.format.check(card_number)
            except CredentialFormatError as exc:
                raise CredentialFormatError(f"{exc} at door {door.id!r}") from exc


def credential_routes(service_of: Callable[[Request], FaceStreamService]) -> APIRouter:
    """The routes, reading the running service with ``service_of``."""
    routes = APIRouter(tags=["credentials"])

    @routes.put("/identities/{identity_id}/credential")
    def set_credential(
        request: Request, identity_id: str, body: Annotated[CardNumber, Body()]
    ) -> CredentialView:
        """Give an identity a card number (replacing its old one); 409 when another identity
        holds it, 422 when it does not fit a door's format."""
        service = service_of(request)
        check_card_number(service.config.doors, body.card_number)
        service.credentials.set(identity_id, body.card_number)
        return CredentialView(identity_id=identity_id, card_number=body.card_number)

    @routes.get("/identities/{identity_id}/credential")
    def show_credential(request: Request, identity_id: str) -> CredentialView:
        """The identity's card number (null: none)."""
        service = service_of(request)
        service.identity(identity_id)  # 404 for an unknown identity
        return CredentialView(
            identity_id=identity_id, card_number=service.credentials.get(identity_id)
        )

    @routes.delete("/identities/{identity_id}/credential", status_code=204)
    def clear_credential(request: Request, identity_id: str) -> Response:
        """Take the identity's card number away."""
        service = service_of(request)
        if not service.credentials.clear(identity_id):
            raise IdentityNotFoundError(f"identity {identity_id!r} holds no card number")
        return Response(status_code=204)

    @routes.post("/doors/{door_id}/credential")
    def present_credential(
        request: Request, door_id: str, body: Annotated[CardNumber, Body()]
    ) -> CardPresented:
        """A card shown at a card + face door: waits for its holder's face, or (unknown card)
        is refused at once; the decision comes as an event either way."""
        service = service_of(request)
        refusal = service.access.present_credential(door_id, body.card_number, source="api")
        if refusal is None:
            return CardPresented(door_id=door_id, status="waiting_for_face", reason=None)
        return CardPresented(door_id=door_id, status="refused", reason=refusal.reason)

    return routes
