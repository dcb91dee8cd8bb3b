"""The ``facestream`` command.

Errors of the FaceStreamError family print one line on stderr and exit with status 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Annotated

import numpy as np
import numpy.typing as npt
import typer
import uvicorn
from pydantic import SecretStr
from rich.console import Console
from rich.progress import Progress, track
from rich.table import Table

from calibration.cli import eval_liveness_command
from calibration.commands import calibrate_app, eval_identify_command, eval_pairs_command
from calibration.int8 import build_int8_encoder
from calibration.learning import eval_verifier_command, train_app
from engines.convert.parity import (
    DlibOracle,
    astronaut_rgb,
    compare_with_dlib,
    image_files,
    read_rgb,
)
from engines.errors import ConfigError
from engines.models.adapter import read_adapter
from engines.models.antispoof import build_liveness_onnx
from engines.models.detector import build_detector_onnx
from engines.models.encoder import build_encoder_onnx, encoder_onnx, load_encoder
from engines.store import ModelStore, StoredModel, default_encoder_source, installed_dlib_model
from pipeline.access.audit import AuditHead, verify_audit_log
from pipeline.access.policy import DoorConfig
from pipeline.capture import CameraConfig
from pipeline.cli.credentials import credential_app
from pipeline.cli.errors import reports_errors
from pipeline.config.reference import render_reference
from pipeline.config.secrets import SecretSpec, resolve_secret
from pipeline.config.service import ApiConfig, FaceStreamConfig, load_config, with_engine_overrides
from pipeline.errors import EnrollmentRejectedError, ImageDecodeError
from pipeline.events.bus import EventBus
from pipeline.gallery.store import Gallery, connect
from pipeline.images import decode_image
from pipeline.metrics import PipelineMetrics
from pipeline.recognition.offline import RecordingProcessor
from pipeline.redis.server import make_private_dir, running_embedded_url
from pipeline.service.app import Services, gallery_client, open_services
from pipeline.service.doctor import diagnose
from pipeline.service.http.app import create_app, uvicorn_config
from pipeline.service.sample import make_sample
from pipeline.service.service import FaceStreamService, run_service
from pipeline.style.cli import style_app, stylize
from pipeline.types import TrackResult

__all__ = ["app", "main"]

TOKEN_ENVIRONMENT_VARIABLE = "FACESTREAM_API_TOKEN"
ADMIN_TOKEN_ENVIRONMENT_VARIABLE = "FACESTREAM_ADMIN_TOKEN"

app = typer.Typer(
    help="facestream: streaming face recognition",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
engines_app = typer.Typer(
    help="build, list and check the face encoder engines", no_args_is_help=True
)
app.add_typer(engines_app, name="engines")
app.add_typer(calibrate_app, name="calibrate")
eval_app = typer.Typer(help="accuracy on your own data", no_args_is_help=True)
eval_app.command("pairs")(eval_pairs_command)
eval_app.command("identify")(eval_identify_command)
eval_app.command("liveness")(eval_liveness_command)
eval_app.command("verifier")(eval_verifier_command)
app.add_typer(eval_app, name="eval")
app.add_typer(train_app, name="train")
app.add_typer(style_app, name="style")
app.command("stylize")(stylize)

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file")]
JsonOption = Annotated[bool, typer.Option("--json", help="print a JSON object as the last line")]
BackendOption = Annotated[
    str | None, typer.Option(help="onnxruntime (ort) | tensorrt (trt) | torch | auto")
]
PrecisionOption = Annotated[str | None, typer.Option(help="fp32 | fp16 | int8")]


def _config(
    path: Path | None, backend: str | None = None, precision: str | None = None
) -> FaceStreamConfig:
    return with_engine_overrides(load_config(path), backend=backend, precision=precision)


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command("check-config")
@reports_errors
def check_config(path: Annotated[Path, typer.Argument(help="TOML config file")]) -> None:
    """Validate a config file and print the resolved settings (secrets hidden), after a
    warning line for anything valid but probably mistaken."""
    config = load_config(path)  # logs the warnings
    typer.echo(json.dumps(config.printable(), indent=2))


@app.command("doctor")
@reports_errors
def doctor(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Check every part the service and its tests use (Python packages, GStreamer, Redis,
    ONNX Runtime, CUDA/TensorRT, the model store, the data directory, the test browsers,
    the configured cameras), with the fix for each; exit 1 when a runtime part is missing."""
    report = diagnose(load_config(config))
    if as_json:
        typer.echo(json.dumps(report.to_json()))
    else:
        styles = {"ok": "green", "missing": "red", "wrong_version": "red", "unavailable": "yellow"}
        table = Table("part", "status", "needed by", "detail", "fix")
        for part in report.parts:
            status = f"[{styles[part.status]}]{part.status}[/]"
            table.add_row(
                part.name, status, "run" if part.runtime else "tests/GPU", part.detail, part.fix
            )
        Console(width=160).print(table)
        typer.echo("all runtime parts ok" if report.ok else "a runtime part is missing (see fix)")
    if not report.ok:
        raise typer.Exit(1)


def _prepare_models(
    settings: FaceStreamConfig, *, force: bool = False
) -> list[tuple[str, StoredModel]]:
    """The ONNX models ``settings`` uses, in its data directory: dlib's encoder converted
    (seconds, once), the detector and the anti-spoofing CNN copied from the package
    (engines/bundled). Each is kept when an intact copy of the same source is there."""
    store = ModelStore(settings.data_dir)
    prepared = [("encoder", build_encoder_onnx(store, force=force))]
    if settings.detect.model != "dlib_hog":
        prepared.append(
            ("detector", build_detector_onnx(store, settings.detect.model, force=force))
        )
    if settings.liveness.enabled and settings.liveness.cnn:
        prepared.append(("liveness", build_liveness_onnx(store, force=force)))
    return prepared


@engines_app.command("build")
@reports_errors
def engines_build(
    config: ConfigOption = None,
    backend: BackendOption = None,
    precision: PrecisionOption = None,
    force: Annotated[bool, typer.Option(help="rebuild even if up to date")] = False,
    calib: Annotated[
        Path | None,
        typer.Option(
            help="folder of face photos to calibrate an int8 encoder on (--precision int8 with "
            "onnxruntime); see docs/calibration.md"
        ),
    ] = None,
) -> None:
    """Convert dlib's encoder (and the configured CNN detector) to ONNX and build the
    configured backend's engine."""
    settings = _config(config, backend, precision)
    store = ModelStore(settings.data_dir)
    if calib is not None:
        if settings.engine.precision != "int8" or settings.engine.backend != "onnxruntime":
            raise ConfigError("--calib builds the onnxruntime int8 encoder: add --precision int8")
        int8 = build_int8_encoder(store, calib, detect=settings.detect, force=force)
        typer.echo(f"int8: {int8.path} (model id {int8.manifest.model_id})")
    for role, stored in _prepare_models(settings, force=force):
        typer.echo(f"onnx: {stored.path} ({role} {stored.manifest.model_id})")
    engine = load_encoder(store, settings.engine.settings())
    typer.echo(f"engine ready: {engine.backend}")
    engine.close()


@engines_app.command("list")
@reports_errors
def engines_list(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """List the models and compiled plans in the data directory."""
    store = ModelStore(_config(config).data_dir)
    stored = store.list()
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {"path": str(item.path), **item.manifest.model_dump(mode="json")}
                    for item in stored
                ]
            )
        )
        return
    table = Table("file", "model id", "format", "precision", "device")
    for item in stored:
        manifest = item.manifest
        table.add_row(
            str(item.path),
            manifest.model_id,
            manifest.format,
            manifest.precision,
            manifest.device or "-",
        )
    Console().print(table)


@engines_app.command("parity")
@reports_errors
def engines_parity(
    images: Annotated[
        list[Path] | None,
        typer.Option(
            "--images", help="image file or folder (repeatable); default: scikit-image's astronaut"
        ),
    ] = None,
    config: ConfigOption = None,
    backend: BackendOption = None,
    as_json: JsonOption = False,
    batch_size: Annotated[int, typer.Option(min=1, max=1024)] = 16,
) -> None:
    """Compare the engine's descriptors with dlib's on every face found in the images."""
    settings = _config(config, backend)
    oracle = DlibOracle(
        encoder_path=default_encoder_source(),
        predictor_path=installed_dlib_model("shape_predictor_5_face_landmarks.dat"),
    )
    chips = []
    for path in image_files(images or []):
        chips.extend(oracle.chips(read_rgb(path)))
    if not images:
        chips.extend(oracle.chips(astronaut_rgb()))
    store = ModelStore(settings.data_dir)
    engine = load_encoder(store, settings.engine.settings())
    try:
        report = compare_with_dlib(engine, oracle, chips, batch_size=batch_size)
    finally:
        engine.close()
    if not as_json:
        typer.echo(
            f"{report.n_faces} faces, {report.backend}: max |diff| "
            f"{report.max_abs_diff:.3g}, max euclidean {report.max_euclidean:.3g}"
        )
    typer.echo(json.dumps(report.as_dict()))


identities_app = typer.Typer(help="list and remove gallery identities", no_args_is_help=True)
app.add_typer(identities_app, name="identities")
identities_app.add_typer(credential_app, name="credential")


def _read_image(path: Path) -> npt.NDArray[np.uint8]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"{path}: cannot read: {exc.strerror}") from exc
    return decode_image(data, name=str(path))


@app.command("enroll")
@reports_errors
def enroll(
    name: Annotated[str, typer.Argument(help="the person's name")],
    images: Annotated[list[Path], typer.Argument(help="one or more photos of the person")],
    identity_id: Annotated[str | None, typer.Option("--id", help="identity id to use")] = None,
    face_index: Annotated[
        int | None, typer.Option(help="which face (0 = largest) when a photo shows several")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Enrol a person from photos (one usable face each) and print the identity as JSON, with
    the still search that found each enrolled photo's face (``found_by``)."""
    with open_services(_config(config)) as services:
        found = services.enrolment_templates(
            [(str(path), _read_image(path)) for path in images], face_index=face_index
        )
        for problem in found.rejected:
            typer.echo(f"skipped {problem}", err=True)
        if not len(found.templates):
            raise EnrollmentRejectedError("no_usable_photo", "none of the photos can be enrolled")
        identity = services.enroll(name, found.templates, identity_id=identity_id)
    typer.echo(json.dumps({**identity.as_dict(), "found_by": found.found_by}))


@app.command("identify")
@reports_errors
def identify(
    image: Annotated[Path, typer.Argument(help="photo to identify")],
    top_k: Annotated[int, typer.Option(min=1, max=100)] = 5,
    config: ConfigOption = None,
) -> None:
    """1:N: print, for each face in the photo (largest first), the gallery matches within tau."""
    settings = _config(config)
    with open_services(settings) as services:
        analyzed = services.analyzer.analyze(_read_image(image))
        matches = services.gallery.identify(
            analyzed.embeddings, top_k=top_k, max_distance=settings.process.match.max_distance
        )
    faces = [
        {
            "box": [round(float(value), 1) for value in analyzed.faces.boxes[index]],
            "matches": [
                {"identity_id": m.identity_id, "name": m.name, "distance": round(m.distance, 4)}
                for m in matches[index]
            ],
        }
        for index in range(len(analyzed))
    ]
    tau = settings.process.match.max_distance
    # every face of one photo was found by the same search ("blazeface" when one pass did it)
    typer.echo(json.dumps({"faces": faces, "tau": tau, "found_by": analyzed.faces.found_by}))


@app.command("verify")
@reports_errors
def verify(
    image: Annotated[Path, typer.Argument(help="photo of the person")],
    identity_id: Annotated[str, typer.Option("--identity", help="claimed identity id")],
    config: ConfigOption = None,
) -> None:
    """1:1: is the largest face in the photo the claimed identity? Prints match, distance, tau."""
    settings = _config(config)
    tau = settings.process.match.max_distance
    with open_services(settings) as services:
        services.gallery.get(identity_id)  # IdentityNotFoundError before any face work
        analyzed = services.analyzer.analyze(_read_image(image))
        if not len(analyzed):
            raise EnrollmentRejectedError("no_face", f"{image}: no face was found")
        distance = services.gallery.distance_to(analyzed.embeddings, identity_id)
    verdict = {"match": distance <= tau, "distance": round(distance, 4), "tau": tau}
    typer.echo(json.dumps({**verdict, "found_by": analyzed.faces.found_by}))


@identities_app.command("list")
@reports_errors
def identities_list(config: ConfigOption = None) -> None:
    """Print every identity as one JSON array."""
    with open_services(_config(config)) as services:
        identities = services.gallery.list_identities()
    typer.echo(json.dumps([identity.as_dict() for identity in identities]))


@identities_app.command("remove")
@reports_errors
def identities_remove(
    identity_id: Annotated[str, typer.Argument(help="identity id")], config: ConfigOption = None
) -> None:
    """Delete an identity and all its templates."""
    settings = _config(config)
    with open_services(settings) as services:
        services.gallery.remove(identity_id)
        # what Redis's event keys hold about the person goes too (retained MQTT topics are
        # cleared by the service's bridge; the audit log keeps ids only)
        purged = EventBus(services.redis, settings.events, services.metrics).purge_identity(
            identity_id
        )
    typer.echo(
        f"removed {identity_id} (and from the events: {purged.stream_entries} stream entries, "
        f"{purged.deliveries} pending deliveries, {purged.dead_letters} dead letters)"
    )


gallery_app = typer.Typer(help="maintain the gallery's face templates", no_args_is_help=True)
app.add_typer(gallery_app, name="gallery")


@gallery_app.command("reencode")
@reports_errors
def gallery_reencode(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Make templates for the configured encoder + adapter from the plain encoder's ones.

    The adapter is a head on the encoder's descriptors, so no photo is needed; the plain
    encoder's templates stay, and switching back needs nothing.
    """
    settings = _config(config)
    engine = settings.engine.settings()
    if engine.adapter is None:
        raise ConfigError(
            "the configured encoder has no adapter ([engine] adapter): templates of another "
            "encoder can only be made from photos; enrol them again"
        )
    head = read_adapter(engine.adapter)
    target = encoder_onnx(ModelStore(settings.data_dir), engine).manifest.model_id
    with gallery_client(settings) as client:
        gallery = Gallery(
            client, PipelineMetrics.create(), model_id=target, config=settings.gallery
        )
        result = gallery.reencode_from(head.base_model_id, head.apply)
    summary = {
        "from_model_id": head.base_model_id,
        "to_model_id": target,
        "identities": result.identities,
        "templates": result.templates,
    }
    typer.echo(
        f"re-encoded {result.templates} templates of {result.identities} identities from "
        f"{head.base_model_id} to {target}"
    )
    if as_json:
        typer.echo(json.dumps(summary))


def _enroll_folder(services: Services, gallery_dir: Path) -> None:
    folders = sorted(path for path in gallery_dir.iterdir() if path.is_dir())
    if not folders:
        raise ConfigError(f"{gallery_dir}: expected one sub-folder of photos per person")
    for folder in track(
        folders, description="enrolling", console=Console(stderr=True), transient=True
    ):
        photos = image_files([folder])
        templates, problems = services.templates([(str(p), _read_image(p)) for p in photos])
        for problem in problems:
            typer.echo(f"skipped {problem}", err=True)
        if len(templates):
            services.enroll(folder.name, templates)
        else:
            typer.echo(f"skipped {folder.name}: no usable photo", err=True)


@app.command("process")
@reports_errors
def process(
    video: Annotated[Path, typer.Argument(help="recording to process")],
    gallery_dir: Annotated[
        Path | None,
        typer.Option(
            "--gallery",
            help="folder with one sub-folder of photos per person, "
            "enrolled into a temporary gallery; default: the configured gallery",
        ),
    ] = None,
    as_json: JsonOption = False,
    detect_every: Annotated[
        int | None, typer.Option(min=1, max=1000, help="detect on every n-th frame")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Process a recording: one line per finished track, then a JSON summary."""
    settings = _config(config)
    if detect_every is not None:
        process_config = settings.process.model_copy(update={"detect_every_frames": detect_every})
        settings = settings.model_copy(update={"process": process_config})
    with ExitStack() as stack:
        redis_dir = None
        if gallery_dir is not None:  # a throw-away gallery: its own embedded Redis
            redis_dir = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "redis"
            settings = settings.model_copy(
                update={"gallery": settings.gallery.model_copy(update={"redis_url": None})}
            )
        services = stack.enter_context(open_services(settings, redis_dir=redis_dir))
        if gallery_dir is not None:
            _enroll_folder(services, gallery_dir)
        processor = RecordingProcessor(services.analyzer, services.gallery, settings.process)

        def report(finished: TrackResult) -> None:
            if not as_json:
                typer.echo(json.dumps(finished.as_dict()))

        with Progress(console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task(f"processing {video.name}", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total or None)

            summary = processor.run(video, on_track=report, on_progress=advance)
    if as_json:
        for finished in summary.tracks:
            typer.echo(json.dumps(finished.as_dict()))
    typer.echo(json.dumps(summary.as_dict()))


audit_app = typer.Typer(help="check the hash-chained audit log", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


def _expected_head(text: str | None) -> AuditHead | None:
    if text is None:
        return None
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise ConfigError(f"--expect-head: expected SEQ:SHA256HEX, got {text[:80]!r}")
    return AuditHead(seq=int(seq), digest=digest.lower())


@audit_app.command("verify")
@reports_errors
def audit_verify(
    path: Annotated[Path, typer.Argument(help="audit log file (JSON lines)")],
    key_file: Annotated[
        Path | None,
        typer.Option(help="file holding the audit key (audit.key): every line's MAC is checked"),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            help="the audit key itself (visible to other users in the process list: prefer "
            "--key-file, $FACESTREAM_AUDIT_KEY or $FACESTREAM_AUDIT_KEY_FILE)"
        ),
    ] = None,
    expect_head: Annotated[
        str | None,
        typer.Option(
            help="SEQ:DIGEST published earlier (a decision event's audit_seq and audit_head, or "
            "an audit_checkpoint event): the log must still hold that line"
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check every line's hash, MAC (with a key) and the chain; exit 2 naming the first bad
    line. Without a key, a rewrite with recomputed hashes passes: give the key."""
    given = SecretStr(key) if key else None
    # a key named on the command line wins over the environment's
    environment = None if key_file is not None or given is not None else "FACESTREAM_AUDIT_KEY"
    secret = resolve_secret(SecretSpec("the audit key", environment, key_file, given))
    report = verify_audit_log(
        path,
        key=None if secret is None else secret.get_secret_value().encode(),
        expected_head=_expected_head(expect_head),
    )
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
    if not report.ok:
        if not as_json:
            typer.echo(f"error: {report.summary()}", err=True)
        raise typer.Exit(2)
    if not as_json:
        typer.echo(report.summary())


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


def _with_sample(settings: FaceStreamConfig) -> FaceStreamConfig:
    """``settings`` plus the sample: a looping camera over the sample video and a demo door."""
    files = make_sample(settings.data_dir / "sample")
    camera = CameraConfig(id="sample", url=str(files.video), loop=True, realtime=True)
    capture = settings.capture.model_copy(update={"cameras": [*settings.capture.cameras, camera]})
    doors = settings.doors or [DoorConfig(id="demo", cameras=["sample"])]
    return settings.model_copy(update={"capture": capture, "doors": doors})


def _enroll_sample(service: FaceStreamService, gallery_dir: Path) -> None:
    """Enrol the sample's person unless the gallery already knows the face."""
    for folder in sorted(path for path in gallery_dir.iterdir() if path.is_dir()):
        photos = [(str(p), _read_image(p)) for p in image_files([folder])]
        templates, _ = service.services.templates(photos)  # a known face is a duplicate
        if len(templates):
            identity = service.services.enroll(folder.name, templates)
            typer.echo(f"enrolled the sample's {identity.name} ({identity.identity_id})", err=True)


@app.command("run")
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
            "camera 'sample', its face enrolled, and a door 'demo' when none is configured",
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
) -> None:
    """Run the door-access service: cameras, recognition, decisions, events and the HTTP API."""
    os.umask(0o077)  # what the service writes (audit log, token, Redis data) is its own
    settings = load_config(config)
    api = settings.api.model_copy(
        update={key: value for key, value in (("host", host), ("port", port)) if value is not None}
    )
    settings = settings.model_copy(update={"api": api})
    if with_sample:
        settings = _with_sample(settings)
    token, generated = _api_token(settings, required=token_required)
    _prepare_models(settings)  # a plain `pip install` then `run` needs no other step
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


config_app = typer.Typer(help="the configuration reference", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("reference")
def config_reference() -> None:
    """Print the Markdown reference of every config section and key (docs/configuration.md)."""
    typer.echo(render_reference(), nl=False)


events_app = typer.Typer(help="follow the event stream", no_args_is_help=True)
app.add_typer(events_app, name="events")


@events_app.command("tail")
@reports_errors
def events_tail(
    config: ConfigOption = None,
    last: Annotated[int, typer.Option(min=0, max=10_000, help="print this many past events")] = 10,
    follow: Annotated[
        bool, typer.Option("--follow/--no-follow", help="keep printing new events")
    ] = True,
    kind: Annotated[str | None, typer.Option(help="only events of this kind")] = None,
) -> None:
    """Print events as JSON lines: the last few, then new ones as they come (Ctrl-C stops)."""
    settings = _config(config)
    url = settings.gallery.redis_url or running_embedded_url(settings.data_dir / "redis")
    if url is None:
        raise ConfigError(
            "no Redis to read: set gallery.redis_url, or start `facestream run` (its embedded "
            "Redis) first"
        )
    client = connect(url, settings.gallery)
    try:
        bus = EventBus(client, settings.events, PipelineMetrics.create())
        for event in reversed(bus.recent(last, kind=kind) if last else ()):
            typer.echo(event.to_json().decode())
        if follow:
            for event in bus.follow(kind=kind):
                typer.echo(event.to_json().decode())
    except KeyboardInterrupt:
        pass
    finally:
        client.close()


@app.command("sample")
@reports_errors
def sample(
    directory: Annotated[Path, typer.Argument(help="where to write the sample files")] = Path(
        "data/sample"
    ),
) -> None:
    """Write a demo recording and a one-person gallery made from a public-domain photo."""
    files = make_sample(directory)
    typer.echo(json.dumps({"video": str(files.video), "gallery": str(files.gallery)}))


def main() -> None:
    """Entry point of the ``facestream`` console script."""
    app()


if __name__ == "__main__":
    main()
