"""The ``facestream`` command.

Errors of the FaceStreamError family print one line on stderr and exit with status 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from engines.backends import build_encoder_onnx, load_encoder
from engines.errors import FaceStreamError
from engines.parity import (
    DlibOracle,
    astronaut_rgb,
    compare_with_dlib,
    image_files,
    read_rgb,
)
from engines.store import ModelStore, default_encoder_source, installed_dlib_model
from pipeline.config import FaceStreamConfig, load_config, with_engine_overrides

__all__ = ["app", "main"]

_P = ParamSpec("_P")
_R = TypeVar("_R")

app = typer.Typer(
    help="facestream: streaming face recognition",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
engines_app = typer.Typer(
    help="build, list and check the face encoder engines", no_args_is_help=True
)
app.add_typer(engines_app, name="engines")

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file")]
JsonOption = Annotated[bool, typer.Option("--json", help="print a JSON object as the last line")]
BackendOption = Annotated[
    str | None, typer.Option(help="onnxruntime (ort) | tensorrt (trt) | torch | auto")
]
PrecisionOption = Annotated[str | None, typer.Option(help="fp32 | fp16 | int8")]


def _reports_errors(command: Callable[_P, _R]) -> Callable[_P, _R]:
    @wraps(command)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return command(*args, **kwargs)
        except FaceStreamError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc

    return run


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
@_reports_errors
def check_config(path: Annotated[Path, typer.Argument(help="TOML config file")]) -> None:
    """Validate a config file and print the resolved settings."""
    config = load_config(path)
    typer.echo(json.dumps(config.model_dump(mode="json"), indent=2))


@engines_app.command("build")
@_reports_errors
def engines_build(
    config: ConfigOption = None,
    backend: BackendOption = None,
    precision: PrecisionOption = None,
    force: Annotated[bool, typer.Option(help="rebuild even if up to date")] = False,
) -> None:
    """Convert dlib's encoder to ONNX and build the configured backend's engine."""
    settings = _config(config, backend, precision)
    store = ModelStore(settings.data_dir)
    stored = build_encoder_onnx(store, force=force)
    typer.echo(f"onnx: {stored.path} (model id {stored.manifest.model_id})")
    engine = load_encoder(store, settings.engine.settings())
    typer.echo(f"engine ready: {engine.backend}")
    engine.close()


@engines_app.command("list")
@_reports_errors
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
@_reports_errors
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


def main() -> None:
    """Entry point of the ``facestream`` console script."""
    app()
