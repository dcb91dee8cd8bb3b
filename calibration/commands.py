"""The calibration commands: ``facestream calibrate threshold``, ``eval pairs``, ``eval identify``.

``calibrate quality`` (the door's face-quality gate) lives in ``calibration.quality_cli`` and is
registered on ``calibrate_app`` here.

``calibrate_app`` is a Typer app mounted by ``pipeline.cli.main`` as ``facestream calibrate``;
``eval_pairs_command`` and ``eval_identify_command`` are plain command functions it registers
under ``facestream eval``. Errors of the FaceStreamError family print one line on stderr and
exit with status 2. With ``--json`` the last stdout line is one JSON object.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, TaskID

from calibration.degrade import parse_degradations
from calibration.errors import CalibrationDataError, ThresholdFileError
from calibration.identify import evaluate_identification
from calibration.int8 import build_int8_encoder, collect_calibration_chips, compare_int8
from calibration.pairs import load_pairs
from calibration.plots import write_det_plot, write_roc_plot
from calibration.quality_cli import calibrate_quality_command
from calibration.threshold import (
    FACE_RECOGNITION_TOLERANCE,
    CalibratedTau,
    OpenSetTarget,
    ThresholdReport,
    ThresholdSettings,
    calibrate_threshold,
    load_calibrated_tau,
    save_calibrated_tau,
)
from engines.models.encoder import build_encoder_onnx
from engines.quantize import QuantizeSettings
from engines.runtime.onnxrt import OrtEngine, OrtSettings
from engines.store import ModelStore, atomic_write
from pipeline.cli.errors import reports_errors
from pipeline.config.service import FaceStreamConfig, load_config
from pipeline.recognition.align import FaceAligner
from pipeline.recognition.detect.factory import load_detector
from pipeline.service.app import open_analyzer

__all__ = [
    "calibrate_app",
    "calibrate_int8_command",
    "calibrate_threshold_command",
    "eval_identify_command",
    "eval_pairs_command",
    "write_report_files",
]


calibrate_app = typer.Typer(
    help="turn labelled data into the numbers the service runs with", no_args_is_help=True
)

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file")]
JsonOption = Annotated[bool, typer.Option("--json", help="print a JSON object as the last line")]
PairsOption = Annotated[
    Path,
    typer.Option(
        "--pairs",
        help="pairs CSV (path_a,path_b,same; paths relative to it) or a folder of identity folders",
    ),
]
SeedOption = Annotated[int, typer.Option(help="seed of pair making, resampling, degradation")]
MaxPairsOption = Annotated[
    int | None, typer.Option(help="use a seeded sample of at most this many pairs")
]
DegradeOption = Annotated[
    str | None,
    typer.Option(
        help="also measure degraded copies: comma-separated "
        "small,dark,noise,jpeg,all,crop,small_crop"
    ),
]


@contextmanager
def _progress() -> Iterator[Callable[[str, int, int], None]]:
    """A progress callback (stage, done, total) drawing bars on stderr."""
    tasks: dict[str, TaskID] = {}
    with Progress(console=Console(stderr=True), transient=True) as bars:

        def advance(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total)
            bars.update(tasks[stage], completed=done)

        yield advance


def write_report_files(report: ThresholdReport, folder: Path) -> dict[str, Path]:
    """``report.json``, ``roc.png`` and ``det.png`` of ``report`` in ``folder``."""
    clean = [result for result in report.results if result.condition == "clean"]
    target = report.settings.target_far
    impostors = report.ours.scored.scores.impostor.size
    floor = min(target, 1.0 / impostors) / 2  # below the smallest FAR the data can show
    files = {
        "report": folder / "report.json",
        "roc": write_roc_plot(
            report.results, folder / "roc.png", target_far=target, floor_far=floor
        ),
        "det": write_det_plot(clean, folder / "det.png", target_far=target, floor_far=floor),
    }
    payload = {**report.as_dict(), "files": {name: str(path) for name, path in files.items()}}
    atomic_write(files["report"], (json.dumps(payload, indent=2) + "\n").encode())
    return files


def _settings(
    config: FaceStreamConfig,
    *,
    target_far: float,
    degrade: str | None,
    baseline: bool,
    bootstrap: int,
    seed: int,
    open_set: OpenSetTarget | None = None,
) -> ThresholdSettings:
    return ThresholdSettings(
        target_far=target_far if open_set is None else open_set.target_far,
        open_set=open_set,
        service_tau=config.recognition.match.max_distance,
        baseline=baseline,
        degradations=parse_degradations(degrade or ""),
        bootstrap_resamples=bootstrap,
        seed=seed,
    )


def _summary_lines(report: ThresholdReport) -> list[str]:
    lines = []
    for result in report.results:
        point = result.reference
        lines.append(
            f"{result.pipeline:>16} {result.condition:>6}: accuracy {point.accuracy:.2%} at "
            f"tau {point.tau:.3f} (FAR {point.far:.2%}, FRR {point.frr:.2%}), AUC "
            f"{result.auc:.4f}, EER {result.eer:.2%}, no face in {result.scored.no_face_pairs} "
            "pairs"
        )
    ours = report.ours
    interval = ours.tau_interval
    open_set = report.settings.open_set
    if open_set is not None:
        impostors = int(ours.scored.scores.impostor.size)
        lines.append(
            f"open set: FPIR <= {open_set.target_fpir:g} at a gallery of "
            f"{open_set.gallery_size} needs FAR <= {open_set.target_far:.3g} per comparison; "
            f"tau gives FAR {ours.at_target.far:.3g}, FPIR {open_set.fpir(ours.at_target.far):.3g}"
            + (
                ""
                if open_set.target_far >= 1.0 / impostors
                else f" (below the {impostors} impostor pairs' resolution: tau lies under every "
                "impostor distance measured; measure on more pairs)"
            )
        )
    lines.append(
        f"tau at FAR <= {report.settings.target_far:g}: {ours.at_target.tau:.4f}"
        + (f" (95% CI {interval.low:.4f}..{interval.high:.4f})" if interval else "")
        + f", FAR {ours.at_target.far:.3%}, FRR {ours.at_target.frr:.2%} "
        f"on {len(ours.scored.scores)} pairs (model {report.model_id})"
    )
    return lines


@calibrate_app.command("threshold")
@reports_errors
def calibrate_threshold_command(
    *,
    pairs: PairsOption,
    config: ConfigOption = None,
    target_far: Annotated[
        float | None,
        typer.Option(
            help="false accept rate the tau must not exceed (default: recognition.match.target_far)"
        ),
    ] = None,
    target_fpir: Annotated[
        float | None,
        typer.Option(
            help="open set: the share of strangers that may match someone in a gallery of "
            "--gallery-size identities; tau is chosen for it instead of --target-far"
        ),
    ] = None,
    gallery_size: Annotated[
        int | None,
        typer.Option(
            min=1, help="open set: the number of identities the gallery will hold (saved with tau)"
        ),
    ] = None,
    degrade: DegradeOption = None,
    baseline: Annotated[
        bool, typer.Option(help="also run face_recognition (tolerance 0.6) on the same pairs")
    ] = True,
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples of the tau interval")] = 1000,
    seed: SeedOption = 0,
    max_pairs: MaxPairsOption = None,
    out: Annotated[
        Path | None, typer.Option(help="report folder (default: DATA_DIR/calibration)")
    ] = None,
    save: Annotated[
        bool, typer.Option(help="save tau for this encoder to DATA_DIR/calibration/tau.json")
    ] = True,
    as_json: JsonOption = False,
) -> None:
    """Measure ROC/EER/AUC on labelled pairs and save tau at the target FAR for this encoder
    (or, with --target-fpir and --gallery-size, at the FAR that keeps 1:N false positives at
    that rate for a gallery of that size)."""
    if (target_fpir is None) != (gallery_size is None):
        raise CalibrationDataError("--target-fpir and --gallery-size go together")
    if target_fpir is not None and target_far is not None:
        raise CalibrationDataError("give --target-far or --target-fpir, not both")
    open_set = (
        None
        if target_fpir is None or gallery_size is None
        else OpenSetTarget(target_fpir=target_fpir, gallery_size=gallery_size)
    )
    settings_file = load_config(config)
    pair_set = load_pairs(pairs, seed=seed)
    if max_pairs is not None:
        pair_set = pair_set.subsample(max_pairs, seed=seed)
    settings = _settings(
        settings_file,
        target_far=target_far
        if target_far is not None
        else settings_file.recognition.match.target_far,
        degrade=degrade,
        baseline=baseline,
        bootstrap=bootstrap,
        seed=seed,
        open_set=open_set,
    )
    with open_analyzer(settings_file) as analyzer, _progress() as progress:
        report = calibrate_threshold(pair_set, analyzer, settings, progress=progress)
    files = write_report_files(report, out or settings_file.data_dir / "calibration")
    saved = (
        save_calibrated_tau(settings_file.data_dir, CalibratedTau.from_report(report))
        if save
        else None
    )
    for line in _summary_lines(report):
        typer.echo(line)
    typer.echo(f"report {files['report']}, plots {files['roc']} {files['det']}")
    if saved is not None:
        typer.echo(f"saved tau for {report.model_id} to {saved}")
    if as_json:
        typer.echo(
            json.dumps({**report.as_dict(), "tau_file": None if saved is None else str(saved)})
        )


@calibrate_app.command("int8")
@reports_errors
def calibrate_int8_command(
    *,
    calib: Annotated[
        Path, typer.Option("--calib", help="folder of face photos (or 150x150 aligned chips)")
    ],
    config: ConfigOption = None,
    method: Annotated[
        str, typer.Option(help="activation ranges: percentile | entropy | minmax")
    ] = "percentile",
    check: Annotated[
        Path | None,
        typer.Option(help="folder of other face photos: cosine of int8 vs fp32 descriptors"),
    ] = None,
    pairs: Annotated[
        Path | None, typer.Option(help="pairs CSV or identity folder: accuracy fp32 vs int8")
    ] = None,
    force: Annotated[bool, typer.Option(help="quantise again even if up to date")] = False,
    as_json: JsonOption = False,
) -> None:
    """Build the INT8 encoder from real faces and report its parity with fp32."""
    settings_file = load_config(config)
    store = ModelStore(settings_file.data_dir)
    quantize = QuantizeSettings(method=method)  # type: ignore[arg-type]  # checked inside
    int8 = build_int8_encoder(store, calib, quantize, detect=settings_file.detect, force=force)
    typer.echo(f"int8 encoder: {int8.path} (model id {int8.manifest.model_id})")
    if check is None:
        if as_json:
            typer.echo(json.dumps({"path": str(int8.path), "model_id": int8.manifest.model_id}))
        return
    fp32 = build_encoder_onnx(store)
    threads = OrtSettings(intra_op_threads=settings_file.engine.threads)
    detector = load_detector(settings_file.detect, store)
    with ExitStack() as stack:
        stack.callback(detector.close)
        reference = stack.enter_context(OrtEngine(fp32.path, store, threads))
        quantized = stack.enter_context(OrtEngine(int8.path, store, threads))
        chips = collect_calibration_chips(check, detector, FaceAligner())
        pair_set = None if pairs is None else load_pairs(pairs)
        report = compare_int8(
            reference,
            quantized,
            chips,
            pairs=pair_set,
            detector=detector,
            settings=ThresholdSettings(
                service_tau=settings_file.recognition.match.max_distance, bootstrap_resamples=10
            ),
        )
    typer.echo(
        f"cosine int8 vs fp32 on {report.n_chips} chips: min {report.cosine_min:.5f}, mean "
        f"{report.cosine_mean:.5f}"
    )
    if report.fp32 is not None and report.int8 is not None:
        typer.echo(
            f"accuracy at tau {report.fp32.reference.tau:.3f}: fp32 "
            f"{report.fp32.reference.accuracy:.2%}, int8 {report.int8.reference.accuracy:.2%} "
            f"(drop {report.accuracy_drop_points:.2f} points); AUC fp32 {report.fp32.auc:.5f}, "
            f"int8 {report.int8.auc:.5f}"
        )
    if as_json:
        typer.echo(json.dumps({"path": str(int8.path), **report.as_dict()}))


calibrate_app.command("quality")(reports_errors(calibrate_quality_command))


@reports_errors
def eval_pairs_command(
    *,
    pairs: PairsOption,
    config: ConfigOption = None,
    tau: Annotated[
        float | None,
        typer.Option(help="match distance (default: the config's recognition.match.max_distance)"),
    ] = None,
    calibrated: Annotated[
        bool, typer.Option(help="use the tau saved by `calibrate threshold` for this encoder")
    ] = False,
    degrade: DegradeOption = None,
    seed: SeedOption = 0,
    max_pairs: MaxPairsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Accuracy of facestream and face_recognition (tolerance 0.6) on the same labelled pairs."""
    settings_file = load_config(config)
    pair_set = load_pairs(pairs, seed=seed)
    if max_pairs is not None:
        pair_set = pair_set.subsample(max_pairs, seed=seed)
    with open_analyzer(settings_file) as analyzer:
        service_tau = tau if tau is not None else settings_file.recognition.match.max_distance
        tau_source = "option" if tau is not None else "config"
        if calibrated:
            saved = load_calibrated_tau(settings_file.data_dir, analyzer.model_id)
            if saved is None:
                raise ThresholdFileError(
                    f"no calibrated tau in {settings_file.data_dir}; run `facestream calibrate "
                    "threshold --pairs CSV` first"
                )
            service_tau, tau_source = saved, "calibrated"
        settings = ThresholdSettings(
            service_tau=service_tau,
            degradations=parse_degradations(degrade or ""),
            bootstrap_resamples=10,  # eval reports no interval; the minimum keeps it quick
            seed=seed,
        )
        with _progress() as progress:
            report = calibrate_threshold(pair_set, analyzer, settings, progress=progress)
    for line in _summary_lines(report)[:-1]:
        typer.echo(line)
    ours, theirs = report.ours, report.result("face_recognition")
    summary: dict[str, object] = {
        "n_pairs": len(ours.scored.scores),
        "accuracy": round(ours.reference.accuracy, 6),
        "baseline_accuracy": round(theirs.reference.accuracy, 6),
        "tau": service_tau,
        "far": round(ours.reference.far, 6),
        "frr": round(ours.reference.frr, 6),
        "auc": round(ours.auc, 6),
        "tar_at_far_1e-3": round(1.0 - ours.at_far_1e3.frr, 6),
        "no_face": ours.scored.no_face_pairs,
        "tau_source": tau_source,
        "model_id": report.model_id,
        "baseline_tolerance": FACE_RECOGNITION_TOLERANCE,
        "baseline_far": round(theirs.reference.far, 6),
        "baseline_frr": round(theirs.reference.frr, 6),
        "baseline_auc": round(theirs.auc, 6),
        "baseline_no_face": theirs.scored.no_face_pairs,
        "eer": round(ours.eer, 6),
        "best_accuracy": round(ours.best.accuracy, 6),
        "best_tau": round(ours.best.tau, 6),
        "degraded": {
            result.condition: {
                "pipeline": result.pipeline,
                "accuracy": round(result.reference.accuracy, 6),
                "far": round(result.reference.far, 6),
                "frr": round(result.reference.frr, 6),
                "auc": round(result.auc, 6),
                "no_face": result.scored.no_face_pairs,
                "best_accuracy": round(result.best.accuracy, 6),
            }
            for result in report.results
            if result.condition != "clean" and result.pipeline == "facestream"
        },
        "baseline_degraded": {
            result.condition: {
                "accuracy": round(result.reference.accuracy, 6),
                "no_face": result.scored.no_face_pairs,
            }
            for result in report.results
            if result.condition != "clean" and result.pipeline == "face_recognition"
        },
    }
    if as_json:
        typer.echo(json.dumps(summary))


@reports_errors
def eval_identify_command(
    *,
    gallery: Annotated[Path, typer.Option("--gallery", help="folder of identity folders")],
    probes: Annotated[
        Path,
        typer.Option(
            "--probes", help="folder of identity folders; names not in the gallery are unknown"
        ),
    ],
    config: ConfigOption = None,
    target_fpir: Annotated[
        float, typer.Option(help="false positive identification rate for the FNIR figure")
    ] = 0.01,
    as_json: JsonOption = False,
) -> None:
    """1:N identification: rank-1 accuracy and FNIR at FPIR 1 % with unknown probes."""
    settings_file = load_config(config)
    with open_analyzer(settings_file) as analyzer:
        report = evaluate_identification(
            analyzer,
            gallery,
            probes,
            target_fpir=target_fpir,
            service_tau=settings_file.recognition.match.max_distance,
        )
    typer.echo(
        f"rank-1 {report.rank1_accuracy:.2%} over {report.mated_probes} enrolled probes; "
        f"FNIR {report.fnir:.2%} at FPIR {report.fpir:.2%} (tau {report.tau_at_fpir:.4f}, "
        f"{report.non_mated_probes} unknown probes); at the service tau "
        f"{report.service_tau:.3f}: FNIR {report.fnir_at_service_tau:.2%}, FPIR "
        f"{report.fpir_at_service_tau:.2%}"
    )
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
