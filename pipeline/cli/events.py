"""``facestream events``: follow the event stream."""

from __future__ import annotations

from typing import Annotated

import typer

from engines.errors import ConfigError
from pipeline.cli.errors import reports_errors
from pipeline.cli.options import (
    ConfigOption,
    load_settings,
)
from pipeline.events.bus import EventBus
from pipeline.gallery.store import connect
from pipeline.metrics import PipelineMetrics
from pipeline.redis.server import running_embedded_url

__all__ = ["events_app"]

events_app = typer.Typer(help="follow the event stream", no_args_is_help=True)


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
    settings = load_settings(config)
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
