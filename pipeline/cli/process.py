"""``facestream process``: recognise the faces of a recording."""

from __future__ import annotations

import json
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, track

from engines.errors import ConfigError
from pipeline.cli.errors import reports_errors
from pipeline.cli.options import (
    ConfigOption,
    JsonOption,
    load_settings,
)
from pipeline.recognition.offline import RecordingProcessor
from pipeline.service.app import Services, open_services
from pipeline.service.enrolment import enroll_people, person_folders

__all__ = ["process"]


def _enroll_folder(services: Services, gallery_dir: Path) -> None:
    people = person_folders(gallery_dir)
    if not people:
        raise ConfigError(f"{gallery_dir}: expected one sub-folder of photos per person")
    enrolments = enroll_people(services, people)
    for person in track(
        enrolments,
        total=len(people),
        description="enrolling",
        console=Console(stderr=True),
        transient=True,
    ):
        for problem in person.found.rejected:
            typer.echo(f"skipped {problem}", err=True)
        if person.identity is None:
            typer.echo(f"skipped {person.name}: no usable photo", err=True)


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
    settings = load_settings(config)
    if detect_every is not None:
        recognition = settings.recognition.model_copy(update={"detect_every_frames": detect_every})
        settings = settings.model_copy(update={"recognition": recognition})
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
        processor = RecordingProcessor(services.analyzer, services.gallery, settings.recognition)
        with Progress(console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task(f"processing {video.name}", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total or None)

            # with --json every track is printed once the recording ends, then the summary
            # (always the last line); else each track as it ends
            summary = processor.run(
                video,
                on_track=None
                if as_json
                else lambda finished: typer.echo(json.dumps(finished.as_dict())),
                on_progress=advance,
            )
    if as_json:
        for finished in summary.tracks:
            typer.echo(json.dumps(finished.as_dict()))
    typer.echo(json.dumps(summary.as_dict()))
