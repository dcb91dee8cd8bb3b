"""``facestream eval doors`` (mounted by ``pipeline.cli.main``): door-level error rates of
recordings replayed through the whole door chain (``calibration.doors``).

Prints a table; with ``--json`` the last stdout line is one JSON object:
``{"false_grants": int, "missed_grants": int, "granted": [names], "spoof_refusals": int,
"median_time_to_decision_s": float | null, ...}``. Bad input (a video that does not decode, an
expected name not in the gallery, an empty gallery) prints one line on stderr, exit status 2.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Annotated

import typer

from calibration.doors import (
    DoorEvalPlan,
    DoorEvalResult,
    eval_door,
    plan_from_folders,
    plan_from_manifest,
)
from calibration.errors import DoorEvalError
from calibration.liveness_dataset import default_shared_data
from engines.errors import FaceStreamError
from pipeline.config.service import load_config

__all__ = ["eval_doors_command"]


def eval_doors_command(  # noqa: PLR0917  (typer maps each parameter to an option)
    video: Annotated[
        list[Path] | None, typer.Option("--video", help="a recording (repeat for several)")
    ] = None,
    gallery: Annotated[
        Path | None, typer.Option(help="enrolment photos: DIR/<name>/*.jpg (.jpeg, .png)")
    ] = None,
    expect: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME[,NAME...] who should be granted: once for every video, or once per "
            '--video in order ("" for nobody); everybody else must not be'
        ),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            help="TOML manifest of videos, expected names and gallery photos "
            "(instead of --video/--gallery/--expect; e.g. deploy/examples/eval_doors.toml)"
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="folder the manifest's paths are relative to (default ../shared/data)"),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="facestream config: its first door and its settings (default: the "
            "shipped defaults)"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON object last")] = False,
) -> None:
    """False grants, missed grants, spoof refusals and time to decision of a door, replaying
    recordings through detect, track, liveness, the gallery and the door policy."""
    try:
        plan = _plan(video or [], gallery, expect or [], manifest, data)
        result = eval_door(plan, load_config(config))
    except FaceStreamError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(door_table(result))
    if as_json:
        typer.echo(json.dumps(result.as_dict()))


def _plan(
    videos: list[Path],
    gallery: Path | None,
    expect: list[str],
    manifest: Path | None,
    data: Path | None,
) -> DoorEvalPlan:
    if manifest is not None:
        if videos or gallery is not None or expect:
            raise DoorEvalError("give either --manifest or --video/--gallery/--expect, not both")
        return plan_from_manifest(manifest, data if data is not None else default_shared_data())
    if gallery is None:
        raise DoorEvalError("--gallery DIR is needed (or --manifest)")
    if not expect:
        raise DoorEvalError('--expect is needed (NAME[,NAME...], or "" for nobody)')
    lists = [[name.strip() for name in item.split(",") if name.strip()] for item in expect]
    return plan_from_folders(videos, gallery, lists)


def door_table(result: DoorEvalResult) -> str:
    """One row per video and a total row: expected, granted, false and missed grants, spoof
    refusals, median time to decision (video seconds)."""
    header = ("video", "expected", "granted", "false", "missed", "spoof", "ttd_s")
    rows = []
    for outcome in result.outcomes:
        times = [seconds for _, seconds in outcome.decisions]
        rows.append(
            (
                Path(outcome.path).name,
                ",".join(outcome.expected) or "-",
                ",".join(outcome.granted) or "-",
                str(outcome.false_grants),
                ",".join(outcome.missed) or "0",
                str(outcome.spoof_refusals),
                f"{statistics.median(times):.2f}" if times else "-",
            )
        )
    totals = result.as_dict()
    median = totals["median_time_to_decision_s"]
    rows.append(
        (
            "total",
            "",
            str(len(totals["granted"])) if isinstance(totals["granted"], list) else "",
            str(totals["false_grants"]),
            str(totals["missed_grants"]),
            str(totals["spoof_refusals"]),
            "-" if median is None else f"{median:.2f}",
        )
    )
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    )
