"""``facestream enroll``, ``identify``, ``verify``, ``identities`` and ``gallery``: the people
the gallery knows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from engines.errors import ConfigError
from engines.models.adapter import read_adapter
from engines.models.encoder import encoder_onnx
from engines.store import ModelStore
from pipeline.cli.credentials import credential_app
from pipeline.cli.errors import reports_errors
from pipeline.cli.options import (
    ConfigOption,
    JsonOption,
    load_settings,
)
from pipeline.errors import EnrollmentRejectedError
from pipeline.events.bus import EventBus
from pipeline.gallery.model import DEFAULT_GALLERY, check_gallery_names
from pipeline.gallery.reencode import reencode_from
from pipeline.gallery.store import Gallery
from pipeline.images import read_image
from pipeline.metrics import PipelineMetrics
from pipeline.service.app import gallery_client, open_services

__all__ = ["enroll", "gallery_app", "identify", "identities_app", "verify"]

GalleriesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--gallery",
        help="a named gallery it joins, repeatable (default: default)",
        show_default=False,
    ),
]

identities_app = typer.Typer(help="list and remove gallery identities", no_args_is_help=True)
identities_app.add_typer(credential_app, name="credential")


@reports_errors
def enroll(
    name: Annotated[str, typer.Argument(help="the person's name")],
    images: Annotated[list[Path], typer.Argument(help="one or more photos of the person")],
    *,
    identity_id: Annotated[str | None, typer.Option("--id", help="identity id to use")] = None,
    face_index: Annotated[
        int | None, typer.Option(help="which face (0 = largest) when a photo shows several")
    ] = None,
    galleries: GalleriesOption = None,
    config: ConfigOption = None,
) -> None:
    """Enrol a person from photos (one usable face each) and print the identity as JSON, with
    the still search that found each enrolled photo's face (``found_by``). ``--gallery``: the
    named galleries it joins (default: default), as the API's ``galleries``."""
    names = check_gallery_names(galleries or [DEFAULT_GALLERY])  # a bad name before face work
    with open_services(load_settings(config)) as services:
        found = services.enrolment_templates(
            [(str(path), read_image(path)) for path in images], face_index=face_index
        )
        for problem in found.rejected:
            typer.echo(f"skipped {problem}", err=True)
        if not len(found.templates):
            raise EnrollmentRejectedError("no_usable_photo", "none of the photos can be enrolled")
        identity = services.enroll(name, found.templates, identity_id=identity_id, galleries=names)
    typer.echo(json.dumps({**identity.as_dict(), "found_by": found.found_by}))


@reports_errors
def identify(
    image: Annotated[Path, typer.Argument(help="photo to identify")],
    top_k: Annotated[int, typer.Option(min=1, max=100)] = 5,
    galleries: Annotated[
        list[str] | None,
        typer.Option(
            "--gallery",
            help="search only this named gallery's identities, repeatable (default: everyone)",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """1:N: print, for each face in the photo (largest first), the gallery matches within tau
    (among the ``--gallery`` galleries' identities when given, as the API's ``galleries``)."""
    searched = check_gallery_names(galleries) if galleries else None
    settings = load_settings(config)
    with open_services(settings) as services:
        analyzed = services.analyzer.analyze(read_image(image))
        matches = services.gallery.identify(
            analyzed.embeddings,
            top_k=top_k,
            max_distance=settings.recognition.match.max_distance,
            galleries=searched,
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
    tau = settings.recognition.match.max_distance
    # every face of one photo was found by the same search ("blazeface" when one pass did it)
    typer.echo(json.dumps({"faces": faces, "tau": tau, "found_by": analyzed.faces.found_by}))


@reports_errors
def verify(
    image: Annotated[Path, typer.Argument(help="photo of the person")],
    identity_id: Annotated[str, typer.Option("--identity", help="claimed identity id")],
    config: ConfigOption = None,
) -> None:
    """1:1: is the largest face in the photo the claimed identity? Prints match, distance, tau."""
    settings = load_settings(config)
    tau = settings.recognition.match.max_distance
    with open_services(settings) as services:
        services.gallery.get(identity_id)  # IdentityNotFoundError before any face work
        analyzed = services.analyzer.analyze(read_image(image))
        if not len(analyzed):
            raise EnrollmentRejectedError("no_face", f"{image}: no face was found")
        distance = services.gallery.distance_to(analyzed.embeddings, identity_id)
    verdict = {"match": distance <= tau, "distance": round(distance, 4), "tau": tau}
    typer.echo(json.dumps({**verdict, "found_by": analyzed.faces.found_by}))


@identities_app.command("list")
@reports_errors
def identities_list(config: ConfigOption = None) -> None:
    """Print every identity as one JSON array."""
    with open_services(load_settings(config)) as services:
        identities = services.gallery.list_identities()
    typer.echo(json.dumps([identity.as_dict() for identity in identities]))


@identities_app.command("remove")
@reports_errors
def identities_remove(
    identity_id: Annotated[str, typer.Argument(help="identity id")], config: ConfigOption = None
) -> None:
    """Delete an identity and all its templates."""
    settings = load_settings(config)
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


@identities_app.command("galleries")
@reports_errors
def identities_galleries(
    identity_id: Annotated[str, typer.Argument(help="identity id")],
    galleries: Annotated[
        list[str],
        typer.Option(
            "--gallery",
            help="a named gallery it belongs to from now on, repeatable",
            show_default=False,
        ),
    ],
    config: ConfigOption = None,
) -> None:
    """Replace the named galleries an identity belongs to (a door searches only its own) and
    print the identity as JSON; a bad name or an unknown id changes nothing."""
    check_gallery_names(galleries)  # before any Redis work
    with open_services(load_settings(config)) as services:
        identity = services.gallery.set_galleries(identity_id, galleries)
    typer.echo(json.dumps(identity.as_dict()))


gallery_app = typer.Typer(help="maintain the gallery's face templates", no_args_is_help=True)


@gallery_app.command("reencode")
@reports_errors
def gallery_reencode(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Make templates for the configured encoder + adapter from the plain encoder's ones.

    The adapter is a head on the encoder's descriptors, so no photo is needed; the plain
    encoder's templates stay, and switching back needs nothing.
    """
    settings = load_settings(config)
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
        result = reencode_from(gallery, head.base_model_id, head.apply)
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
