"""Commands that learn from a site's labelled faces: ``facestream train adapter`` and
``facestream eval verifier`` (mounted by ``pipeline.cli.main``).

Both read a folder-per-identity layout (``FACES/<identity>/<photo>``) through the service's own
detect + align + encode. With ``--json`` the last stdout line is one JSON object. Errors of the
FaceStreamError family print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.progress import Progress

from calibration.degrade import parse_degradations
from calibration.embed import PipelineEmbedder
from calibration.faceset import LabelledFaces, embed_identity_folders, split_identities
from calibration.verifier import compare_verifiers
from engines.errors import ConfigError
from engines.models.encoder import build_encoder_onnx
from engines.store import ModelStore, atomic_write
from pipeline.cli.errors import reports_errors
from pipeline.config.service import FaceStreamConfig, load_config
from pipeline.service.app import open_analyzer

__all__ = ["eval_verifier_command", "train_app"]

train_app = typer.Typer(help="adapt the models to a site's own faces", no_args_is_help=True)

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file")]
JsonOption = Annotated[bool, typer.Option("--json", help="print a JSON object as the last line")]
FacesOption = Annotated[
    Path, typer.Option("--faces", help="folder of identity folders: FACES/<identity>/<photo>")
]
SeedOption = Annotated[int, typer.Option(help="seed of the identity split and the training")]


DegradeOption = Annotated[
    str | None,
    typer.Option(help="learn and judge on degraded copies: one of small,dark,noise,jpeg,all"),
]


def _embed_faces(
    config: FaceStreamConfig, faces: Path, *, degrade: str | None, seed: int
) -> LabelledFaces:
    """Descriptors of every photo under ``faces`` (or of its degraded copy) with the
    configured pipeline."""
    conditions = parse_degradations(degrade or "")
    if len(conditions) > 1:
        raise ConfigError(f"--degrade takes one condition, got {degrade!r}")
    with (
        open_analyzer(config) as analyzer,
        Progress(console=Console(stderr=True), transient=True) as bars,
    ):
        task = bars.add_task("encoding faces")
        found = embed_identity_folders(
            faces,
            PipelineEmbedder(analyzer),
            model_id=analyzer.model_id,
            condition=conditions[0] if conditions else None,
            seed=seed,
            progress=lambda done, total: bars.update(task, completed=done, total=total),
        )
    if found.no_face:
        typer.echo(
            f"no face found in {len(found.no_face)} photo(s), left out: "
            + ", ".join(str(path) for path in found.no_face[:5])
            + (" ..." if len(found.no_face) > 5 else ""),
            err=True,
        )
    return found


@reports_errors
def eval_verifier_command(
    *,
    faces: FacesOption,
    config: ConfigOption = None,
    folds: Annotated[int, typer.Option(min=2, help="identity folds (each held out once)")] = 5,
    l2: Annotated[float, typer.Option(min=0.0, help="L2 penalty of the logistic unit")] = 1.0,
    degrade: DegradeOption = None,
    seed: SeedOption = 0,
    as_json: JsonOption = False,
) -> None:
    """Does a logistic unit on |f(a) - f(b)| (or chi-square) beat the distance threshold on
    people it never saw? Identity-fold cross-validation; the verdict needs McNemar p < 0.05."""
    found = _embed_faces(load_config(config), faces, degrade=degrade, seed=seed)
    report = compare_verifiers(found, folds=folds, seed=seed, l2=l2)
    typer.echo(
        f"{report.identities} people, {report.faces} faces, {report.folds} identity folds: "
        f"{report.genuine_pairs} genuine and {report.impostor_pairs} impostor held-out pairs"
    )
    for name, result in report.methods.items():
        verdict = "" if name == "distance" else f"  beats distance: {report.beats_distance(name)}"
        typer.echo(
            f"{name:>14}: accuracy {result.accuracy:.2%} (FAR {result.far:.2%}, FRR "
            f"{result.frr:.2%}), AUC {result.auc:.4f}, EER {result.eer:.2%}, McNemar p "
            f"{result.p_value:.3f}{verdict}"
        )
    if as_json:
        typer.echo(json.dumps(report.as_dict()))


def _base_encoder_config(config: FaceStreamConfig) -> FaceStreamConfig:
    """``config`` with the plain fp32 encoder: the head learns on the encoder's descriptors."""
    engine = config.engine.model_copy(update={"adapter": None, "precision": "fp32"})
    return config.model_copy(update={"engine": engine})


@train_app.command("adapter")
@reports_errors
def train_adapter_command(  # noqa: PLR0917  (typer maps each parameter to an option)
    faces: FacesOption,
    config: ConfigOption = None,
    out: Annotated[
        Path | None,
        typer.Option(help="where to write the head (default DATA_DIR/adapters/adapter-<sha>.onnx)"),
    ] = None,
    holdout: Annotated[
        float,
        typer.Option(
            min=0.0, max=0.9, help="fraction of the people held out to judge it (0: train on all)"
        ),
    ] = 0.3,
    mining: Annotated[
        str, typer.Option(help="batch-hard | semi-hard negatives inside each batch")
    ] = "batch-hard",
    margin: Annotated[float, typer.Option(help="triplet margin alpha (squared distance)")] = 0.2,
    steps: Annotated[int, typer.Option(min=1, help="training steps (batches)")] = 400,
    stay_close: Annotated[
        float, typer.Option(min=0.0, help="weight of ||W - I||^2: keeps the head near identity")
    ] = 1.0,
    degrade: DegradeOption = None,
    seed: SeedOption = 0,
    as_json: JsonOption = False,
) -> None:
    """Train a triplet-loss head on the frozen encoder and append it to the encoder's ONNX."""
    from calibration.adapter import (  # noqa: PLC0415  (torch is the optional [torch] extra)
        AdapterSettings,
        evaluate_adapter,
        train_adapter,
    )
    from engines.models.adapter import build_adapted_encoder  # noqa: PLC0415

    settings_file = _base_encoder_config(load_config(config))
    training = AdapterSettings(
        mining=_mining(mining), margin=margin, steps=steps, stay_close=stay_close, seed=seed
    )
    found = _embed_faces(settings_file, faces, degrade=degrade, seed=seed)
    if holdout > 0:
        learn_from, held_out = split_identities(found, holdout_fraction=holdout, seed=seed)
    else:
        learn_from, held_out = found, None
    adapter = train_adapter(learn_from, training)
    report = evaluate_adapter(adapter, learn_from, held_out) if held_out is not None else None
    data = adapter.onnx_model().SerializeToString()
    digest = hashlib.sha256(data).hexdigest()
    store = ModelStore(settings_file.data_dir)
    path = out if out is not None else store.data_dir / "adapters" / f"adapter-{digest[:12]}.onnx"
    atomic_write(path, data)
    adapted = build_adapted_encoder(store, build_encoder_onnx(store), path)
    summary: dict[str, object] = {
        "adapter": str(path),
        "base_model_id": adapter.base_model_id,
        "model_id": adapted.manifest.model_id,
        "encoder_onnx": str(adapted.path),
        "identities": len(found.identity_names),
        "faces": len(found),
        "no_face": len(found.no_face),
        "mining": training.mining,
        "degrade": degrade,
        "steps": training.steps,
        "held_out": report.as_dict() if report is not None else None,
    }
    atomic_write(path.with_suffix(".report.json"), (json.dumps(summary, indent=2) + "\n").encode())
    typer.echo(f"adapter head: {path} (model id {adapted.manifest.model_id})")
    if report is not None:
        typer.echo(
            f"held-out people ({report.held_out_identities}, {report.held_out_genuine_pairs} "
            f"genuine / {report.held_out_impostor_pairs} impostor pairs): accuracy "
            f"{report.encoder.accuracy:.2%} -> {report.adapted.accuracy:.2%}, EER "
            f"{report.encoder.eer:.2%} -> {report.adapted.eer:.2%}, AUC {report.encoder.auc:.4f} "
            f"-> {report.adapted.auc:.4f}, McNemar p {report.adapted.p_value:.3f}; helps: "
            f"{report.helps}"
        )
    typer.echo(
        f'to use it: set [engine] adapter = "{path}", run `facestream gallery reencode`, '
        "then `facestream calibrate threshold` for the new model's tau"
    )
    if as_json:
        typer.echo(json.dumps(summary))


def _mining(name: str) -> Literal["batch-hard", "semi-hard"]:
    if name == "batch-hard":
        return "batch-hard"
    if name == "semi-hard":
        return "semi-hard"
    raise typer.BadParameter(f"mining must be batch-hard or semi-hard, got {name!r}")
