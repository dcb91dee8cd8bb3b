"""``facestream identities credential``: set, show and clear an identity's card number."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from pipeline.access.credentials import CredentialStore
from pipeline.access.http import check_card_number
from pipeline.cli.errors import reports_errors
from pipeline.cli.options import ConfigOption
from pipeline.config.service import load_config
from pipeline.errors import IdentityNotFoundError
from pipeline.service.app import gallery_client

__all__ = ["credential_app"]

credential_app = typer.Typer(
    help="the card number (credential) an identity holds", no_args_is_help=True
)
IdentityArgument = Annotated[str, typer.Argument(help="identity id")]


@credential_app.command("set")
@reports_errors
def credential_set(
    identity_id: IdentityArgument,
    card_number: Annotated[int, typer.Argument(help="the number on the card")],
    config: ConfigOption = None,
) -> None:
    """Give an identity a card number (checked against every OSDP door's format)."""
    settings = load_config(config)
    check_card_number(settings.doors, card_number)
    with gallery_client(settings) as client:
        CredentialStore(client, namespace=settings.gallery.namespace).set(identity_id, card_number)
    typer.echo(json.dumps({"identity_id": identity_id, "card_number": card_number}))


@credential_app.command("show")
@reports_errors
def credential_show(identity_id: IdentityArgument, config: ConfigOption = None) -> None:
    """Print the identity's card number (null: none) as JSON."""
    settings = load_config(config)
    with gallery_client(settings) as client:
        number = CredentialStore(client, namespace=settings.gallery.namespace).get(identity_id)
    typer.echo(json.dumps({"identity_id": identity_id, "card_number": number}))


@credential_app.command("clear")
@reports_errors
def credential_clear(identity_id: IdentityArgument, config: ConfigOption = None) -> None:
    """Take the identity's card number away."""
    settings = load_config(config)
    with gallery_client(settings) as client:
        if not CredentialStore(client, namespace=settings.gallery.namespace).clear(identity_id):
            raise IdentityNotFoundError(f"identity {identity_id!r} holds no card number")
    typer.echo(f"cleared the card number of {identity_id}")
