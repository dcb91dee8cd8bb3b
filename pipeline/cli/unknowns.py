"""``facestream unknowns list|enroll|delete``: the unknown faces the cameras saw, grouped by
person (``[unknowns] enabled``), read and changed in the gallery's Redis as the API does.
With unknown faces off every command says so and exits 2."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from pipeline.cli.errors import reports_errors
from pipeline.cli.options import ConfigOption, load_settings
from pipeline.gallery.model import DEFAULT_GALLERY
from pipeline.gallery.unknowns import UnknownCluster
from pipeline.service.app import open_services
from pipeline.service.unknowns import unknowns_store

__all__ = ["unknowns_app"]

unknowns_app = typer.Typer(
    help="unknown faces seen, grouped by person ([unknowns] enabled)", no_args_is_help=True
)
ClusterArgument = Annotated[str, typer.Argument(help="cluster id (32 hex, from `list`)")]


def _cluster_json(cluster: UnknownCluster) -> dict[str, object]:
    return {
        "cluster_id": cluster.cluster_id,
        "count": cluster.count,
        "first_seen": cluster.first_seen,
        "last_seen": cluster.last_seen,
        "cameras": list(cluster.cameras),
        "thumbnail": cluster.thumbnail_rank is not None,
    }


@unknowns_app.command("list")
@reports_errors
def unknowns_list(config: ConfigOption = None) -> None:
    """Print the clusters, the most recently seen first, as one JSON object."""
    with open_services(load_settings(config)) as services:
        clusters = unknowns_store(services).clusters()
    typer.echo(json.dumps({"clusters": [_cluster_json(cluster) for cluster in clusters]}))


@unknowns_app.command("enroll")
@reports_errors
def unknowns_enroll(
    cluster_id: ClusterArgument,
    name: Annotated[str, typer.Option(help="the person's name")],
    gallery: Annotated[
        list[str] | None,
        typer.Option(help="a named gallery it joins, repeatable (default: default)"),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Make an identity of a cluster's encodings; prints the identity as JSON."""
    with open_services(load_settings(config)) as services:
        identity = unknowns_store(services).enroll(
            cluster_id, name, galleries=gallery or [DEFAULT_GALLERY]
        )
    typer.echo(json.dumps(identity.as_dict()))


@unknowns_app.command("delete")
@reports_errors
def unknowns_delete(cluster_id: ClusterArgument, config: ConfigOption = None) -> None:
    """Forget a cluster: its encodings and its thumbnail."""
    with open_services(load_settings(config)) as services:
        unknowns_store(services).delete(cluster_id)
    typer.echo(f"deleted unknown cluster {cluster_id}")
