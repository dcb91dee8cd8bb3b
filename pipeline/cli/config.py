"""``facestream check-config``, ``doctor`` and ``config reference``: the configuration and what
the machine has for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli.errors import reports_errors
from pipeline.cli.options import (
    ConfigOption,
    JsonOption,
)
from pipeline.config.reference import render_reference
from pipeline.config.service import load_config
from pipeline.service.doctor import diagnose

__all__ = ["check_config", "config_app", "doctor"]


@reports_errors
def check_config(path: Annotated[Path, typer.Argument(help="TOML config file")]) -> None:
    """Validate a config file and print the resolved settings (secrets hidden), after a
    warning line for anything valid but probably mistaken."""
    config = load_config(path)  # logs the warnings
    typer.echo(json.dumps(config.printable(), indent=2))


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


config_app = typer.Typer(help="the configuration reference", no_args_is_help=True)


@config_app.command("reference")
def config_reference() -> None:
    """Print the Markdown reference of every config section and key (docs/configuration.md)."""
    typer.echo(render_reference(), nl=False)
