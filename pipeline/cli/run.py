"""``facestream run`` and ``sample``: the door-access service, with the bundled sample."""

from __future__ import annotations

import json
import os
import secrets
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
import uvicorn

from engines.errors import ConfigError
from pipeline.access.policy import DoorConfig
from pipeline.capture import CameraConfig
from pipeline.cli.engines import prepare_models
from pipeline.cli.errors import reports_errors
from pipeline.cli.options import (
    ConfigOption,
)
from pipeline.config.secrets import SecretSpec, resolve_secret
from pipeline.config.service import ApiConfig, FaceStreamConfig, load_config
from pipeline.redis.server import make_private_dir
from pipeline.service.enrolment import enroll_people, person_folders
from pipeline.service.http.app import create_app, uvicorn_config
from pipeline.service.sample import make_sample
from pipeline.service.service import FaceStreamService, run_service

__all__ = ["run", "sample"]

TOKEN_ENVIRONMENT_VARIABLE = "FACESTREAM_API_TOKEN"
ADMIN_TOKEN_ENVIRONMENT_VARIABLE = "FACESTREAM_ADMIN_TOKEN"


def _api_token(settings: FaceStreamConfig, *, required: bool = False) -> tuple[str, bool]:
    """The API token and whether it was made now: FACESTREAM_API_TOKEN, else the config's,
    else (unless ``required``: ConfigError) a new random one saved to data_dir/api_token
    (readable by the owner only)."""
    from_env = os.environ.get(TOKEN_ENVIRONMENT_VARIABLE)
    if from_env:
        if len(from_env) < 16:
            raise ConfigError(f"{TOKEN_ENVIRONMENT_VARIABLE} must be at least 16 characters")
        return from_env, False
    if settings.api.token is not None:
        return settings.api.token.get_secret_value(), False
    if required:
        raise ConfigError(
            f"no API token: set {TOKEN_ENVIRONMENT_VARIABLE} (16+ characters) or api.token"
        )
    token = secrets.token_urlsafe(24)
    make_private_dir(settings.data_dir)
    path = settings.data_dir / "api_token"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(token + "\n")
    return token, True


def _with_demo(settings: FaceStreamConfig, *, sample: bool, camera: str | None) -> FaceStreamConfig:
    """``settings`` plus the sample (a looping camera 'sample' over the sample video) and/or
    camera 'camera' (``--camera``: a device index such as 0, an RTSP URL or a file), and a demo
    door watching them when none is configured. The door is the secure default: it requires
    liveness, so the sample (a moving photo) is refused and a real person at a camera can pass."""
    added = []
    if sample:
        files = make_sample(settings.data_dir / "sample")
        added.append(CameraConfig(id="sample", url=str(files.video), loop=True, realtime=True))
    if camera is not None:
        added.append(CameraConfig(id="camera", url=int(camera) if camera.isdigit() else camera))
    capture = settings.capture.model_copy(update={"cameras": [*settings.capture.cameras, *added]})
    doors = settings.doors or [DoorConfig(id="demo", cameras=[each.id for each in added])]
    return settings.model_copy(update={"capture": capture, "doors": doors})


def _enroll_sample(service: FaceStreamService, gallery_dir: Path) -> None:
    """Enrol the sample's person unless the gallery already knows the face (then its photo is
    refused as a duplicate and nothing is said)."""
    for person in enroll_people(service.services, person_folders(gallery_dir)):
        if person.identity is not None:
            identity = person.identity
            typer.echo(f"enrolled the sample's {identity.name} ({identity.identity_id})", err=True)


@reports_errors
def run(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="address to listen on (api.host)")] = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535, help="TCP port (api.port)")] = None,
    with_sample: Annotated[
        bool,
        typer.Option(
            "--sample",
            help="also run the bundled sample: a looping video of a public-domain photo as "
            "camera 'sample', its face enrolled, and a door 'demo' when none is configured "
            "(the door requires liveness: the sample, a moving photo, is refused)",
        ),
    ] = False,
    token_required: Annotated[
        bool,
        typer.Option(
            "--token-required",
            help=f"exit with an error when neither {TOKEN_ENVIRONMENT_VARIABLE} nor api.token "
            "is set, instead of making a random token (containers)",
        ),
    ] = False,
    *,
    camera: Annotated[
        str | None,
        typer.Option(
            "--camera",
            metavar="URL",
            help="also run camera 'camera' from a device index (0), an RTSP URL or a file, "
            "watched by the door 'demo' when none is configured (enrol yourself first: "
            "`facestream enroll`)",
        ),
    ] = None,
) -> None:
    """Run the door-access service: cameras, recognition, decisions, events and the HTTP API."""
    os.umask(0o077)  # what the service writes (audit log, token, Redis data) is its own
    settings = load_config(config)
    api = settings.api.model_copy(
        update={key: value for key, value in (("host", host), ("port", port)) if value is not None}
    )
    settings = settings.model_copy(update={"api": api})
    if with_sample or camera is not None:
        settings = _with_demo(settings, sample=with_sample, camera=camera)
    token, generated = _api_token(settings, required=token_required)
    prepare_models(settings)  # a plain `pip install` then `run` needs no other step
    # uvicorn shuts down on SIGINT/SIGTERM, then re-raises the signal; with this handler that
    # becomes an exception, so the service below still stops in order (tracks decided, events
    # flushed, audit log closed) instead of the process dying at once
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with run_service(settings) as service:
            if with_sample:
                _enroll_sample(service, settings.data_dir / "sample" / "gallery")
            _serve(service, api, token=token, generated=generated, data_dir=settings.data_dir)
    except (_TerminatedError, KeyboardInterrupt):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    typer.echo("facestream stopped", err=True)


class _TerminatedError(Exception):
    """SIGTERM arrived."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise _TerminatedError


def _admin_token(api: ApiConfig) -> str | None:
    """The admin token (cameras): FACESTREAM_ADMIN_TOKEN, FACESTREAM_ADMIN_TOKEN_FILE or
    api.admin_token; None makes the API token the admin token too."""
    secret = resolve_secret(
        SecretSpec("api.admin_token", ADMIN_TOKEN_ENVIRONMENT_VARIABLE, None, api.admin_token)
    )
    if secret is None:
        return None
    if len(secret.get_secret_value()) < 16:
        raise ConfigError("the admin token (api.admin_token) must be at least 16 characters")
    return secret.get_secret_value()


def _serve(
    service: FaceStreamService, api: ApiConfig, *, token: str, generated: bool, data_dir: Path
) -> None:
    admin_token = _admin_token(api)
    app = create_app(service, token=token, admin_token=admin_token)
    server = uvicorn.Server(uvicorn_config(app, api))
    base = f"http://{api.host}:{api.port}"
    typer.echo(f"facestream serving on {base} (API under /v1, docs at {base}/docs)", err=True)
    if admin_token is None:
        typer.echo(
            "no admin token set (api.admin_token, $FACESTREAM_ADMIN_TOKEN): the API token "
            "also adds and removes cameras",
            err=True,
        )
    if generated:
        typer.echo(
            f"API token (saved in {data_dir / 'api_token'}): {token}\n"
            f"live preview: {base}/login (sign in with the token)",
            err=True,
        )
    server.run()


@reports_errors
def sample(
    directory: Annotated[Path, typer.Argument(help="where to write the sample files")] = Path(
        "data/sample"
    ),
) -> None:
    """Write a demo recording and a one-person gallery made from a public-domain photo."""
    files = make_sample(directory)
    typer.echo(json.dumps({"video": str(files.video), "gallery": str(files.gallery)}))
