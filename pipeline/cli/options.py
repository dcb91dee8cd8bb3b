"""Options and settings shared by the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.config.service import FaceStreamConfig, load_config, with_engine_overrides

__all__ = ["BackendOption", "ConfigOption", "JsonOption", "PrecisionOption", "load_settings"]

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file")]
JsonOption = Annotated[bool, typer.Option("--json", help="print a JSON object as the last line")]
BackendOption = Annotated[
    str | None, typer.Option(help="onnxruntime (ort) | tensorrt (trt) | torch | auto")
]
PrecisionOption = Annotated[str | None, typer.Option(help="fp32 | fp16 | int8")]


def load_settings(
    path: Path | None, backend: str | None = None, precision: str | None = None
) -> FaceStreamConfig:
    """The config file at ``path`` (None: the defaults) with the engine options given on the
    command line applied."""
    return with_engine_overrides(load_config(path), backend=backend, precision=precision)
