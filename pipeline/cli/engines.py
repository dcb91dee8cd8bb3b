"""``facestream engines``: build, list and check the face encoder engines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from calibration.int8 import build_int8_encoder
from engines.convert.parity import (
    DlibOracle,
    astronaut_rgb,
    compare_with_dlib,
    image_files,
)
from engines.errors import ConfigError
from engines.models.antispoof import build_liveness_onnx
from engines.models.detector import build_detector_onnx
from engines.models.encoder import build_encoder_onnx, load_encoder
from engines.store import ModelStore, StoredModel, default_encoder_source, installed_dlib_model
from pipeline.cli.errors import reports_errors
from pipeline.cli.options import (
    BackendOption,
    ConfigOption,
    JsonOption,
    PrecisionOption,
    load_settings,
)
from pipeline.config.service import FaceStreamConfig
from pipeline.images import read_image

__all__ = ["engines_app", "prepare_models"]

engines_app = typer.Typer(
    help="build, list and check the face encoder engines", no_args_is_help=True
)


def prepare_models(
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
    settings = load_settings(config, backend, precision)
    store = ModelStore(settings.data_dir)
    if calib is not None:
        if settings.engine.precision != "int8" or settings.engine.backend != "onnxruntime":
            raise ConfigError("--calib builds the onnxruntime int8 encoder: add --precision int8")
        int8 = build_int8_encoder(store, calib, detect=settings.detect, force=force)
        typer.echo(f"int8: {int8.path} (model id {int8.manifest.model_id})")
    for role, stored in prepare_models(settings, force=force):
        typer.echo(f"onnx: {stored.path} ({role} {stored.manifest.model_id})")
    engine = load_encoder(store, settings.engine.settings())
    typer.echo(f"engine ready: {engine.backend}")
    engine.close()


@engines_app.command("list")
@reports_errors
def engines_list(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """List the models and compiled plans in the data directory."""
    store = ModelStore(load_settings(config).data_dir)
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
    settings = load_settings(config, backend)
    oracle = DlibOracle(
        encoder_path=default_encoder_source(),
        predictor_path=installed_dlib_model("shape_predictor_5_face_landmarks.dat"),
    )
    chips = []
    for path in image_files(images or []):
        chips.extend(oracle.chips(read_image(path)))
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
