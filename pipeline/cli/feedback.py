"""``facestream feedback``: tell the running service whether a door decision named the right
person (its HTTP API, so the service's own audit log records the answer)."""

from __future__ import annotations

import json
import os
from typing import Annotated

import httpx
import typer

from engines.errors import ConfigError, FaceStreamError
from pipeline.cli.errors import reports_errors
from pipeline.cli.options import ConfigOption, load_settings
from pipeline.config.service import FaceStreamConfig

__all__ = ["feedback"]

_TOKEN_VARIABLE = "FACESTREAM_API_TOKEN"
_TIMEOUT_SECONDS = 30.0


class FeedbackRefusedError(FaceStreamError, RuntimeError):
    """The service refused the feedback, or could not be reached; names the reason."""


def _token(settings: FaceStreamConfig) -> str:
    """FACESTREAM_API_TOKEN, else api.token, else the one ``facestream run`` saved."""
    from_env = os.environ.get(_TOKEN_VARIABLE)
    if from_env:
        return from_env
    if settings.api.token is not None:
        return settings.api.token.get_secret_value()
    saved = settings.data_dir / "api_token"
    try:
        return saved.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"no API token: set {_TOKEN_VARIABLE} or api.token ({saved}: {exc.strerror})"
        ) from exc


@reports_errors
def feedback(
    event_id: Annotated[str, typer.Argument(help="the decision's event id (32 hex)")],
    wrong: Annotated[
        bool | None,
        typer.Option("--wrong/--right", help="the decision named the wrong / the right person"),
    ] = None,
    identity_id: Annotated[
        str | None, typer.Option("--identity", help="who it really was (an identity id)")
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="the service's API; default http://api.host:api.port")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Correct a door decision: --wrong quarantines the template it matched and tightens that
    identity's tau; prints the service's answer as JSON."""
    if wrong is None:
        raise ConfigError("say --wrong or --right")
    settings = load_settings(config)
    base = url or f"http://{settings.api.host}:{settings.api.port}"
    body: dict[str, object] = {"correct": not wrong}
    if identity_id is not None:
        body["identity_id"] = identity_id
    try:
        answer = httpx.post(
            f"{base}/v1/decisions/{event_id}/feedback",
            json=body,
            headers={"Authorization": f"Bearer {_token(settings)}"},
            timeout=_TIMEOUT_SECONDS,
        )
    except httpx.HTTPError as exc:
        raise FeedbackRefusedError(f"cannot reach the service at {base}: {exc}") from exc
    if answer.status_code != 200:
        try:
            detail = answer.json().get("detail", answer.text)
        except ValueError:
            detail = answer.text
        raise FeedbackRefusedError(f"the service answered {answer.status_code}: {detail}")
    typer.echo(json.dumps(answer.json()))
