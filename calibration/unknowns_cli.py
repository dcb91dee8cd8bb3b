"""``facestream eval unknowns`` (mounted by ``pipeline.cli.main``): how well unknown faces are
grouped by person (``calibration.unknowns``): purity and clusters per true person over the
labelled photos of ../shared/data/faces (as videos), alone and after the unknown tracks of the
shared videos.

Prints a table; with ``--json`` the last stdout line is one JSON object
``{"name": "unknowns_clustering", "tau", "encodings_per_track", "photos", "video_tracks",
"runs": [{"cluster_distance", "photos_only": {...}, "with_videos": {...}}]}``. Bad input (no
labels.csv, no labelled person) prints one line on stderr, exit status 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from calibration.errors import CalibrationDataError
from calibration.liveness_dataset import default_shared_data
from calibration.unknowns import UnknownsEvaluation, evaluate_unknowns
from engines.errors import FaceStreamError
from pipeline.config.service import load_config

__all__ = ["eval_unknowns_command", "unknowns_table"]


def eval_unknowns_command(
    data: Annotated[
        Path | None,
        typer.Option(
            help="shared data folder: faces/labels.csv, video/faces/*.mp4 (default ../shared/data)"
        ),
    ] = None,
    distance: Annotated[
        list[float] | None,
        typer.Option(
            "--distance",
            min=0.01,
            max=2.0,
            help="cluster distance to measure (repeat for several); default: the tau",
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="facestream config (default: the shipped defaults)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON object last")] = False,
) -> None:
    """Purity and clusters per true person of the unknown-face clustering, on real faces
    through the service's own detect, track, encode and clustering."""
    folder = data if data is not None else default_shared_data()
    try:
        faces = folder / "faces"
        if not (faces / "labels.csv").is_file():
            raise CalibrationDataError(f"{faces / 'labels.csv'}: not found (--data FOLDER)")
        videos = sorted((folder / "video" / "faces").glob("*.mp4"))
        result = evaluate_unknowns(load_config(config), faces, videos, distance or [])
    except FaceStreamError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(unknowns_table(result))
    if as_json:
        typer.echo(json.dumps(result.as_dict()))


def unknowns_table(result: UnknownsEvaluation) -> str:
    """One line per cluster distance and set: purity, clusters per person, splits, merges."""
    lines = [
        f"{result.photos} labelled photo tracks, {result.video_tracks} unknown video tracks; "
        f"tau {result.tau:.4f}, {result.encodings_per_track} encodings per track",
        "distance  set          purity  clusters/person  split  merged  clusters",
    ]
    for distance, alone, together in result.runs:
        for name, figures in (("photos", alone), ("+videos", together)):
            lines.append(
                f"{distance:8.3f}  {name:<11}  {figures.purity:6.3f}  "
                f"{figures.clusters_per_person:15.2f}  {figures.split_persons:5d}  "
                f"{figures.merged_clusters:6d}  {figures.clusters:8d}"
            )
    return "\n".join(lines)
