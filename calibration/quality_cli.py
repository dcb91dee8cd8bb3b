"""``facestream calibrate quality``: measure the door's face-quality gate on labelled pairs
and their degraded copies, and choose the loosest gate that keeps FAR <= target at every
condition (``calibration.quality``). With ``--json`` the last stdout line is one JSON object.
Registered on ``calibrate_app`` by ``calibration.commands``, which wraps it in
``pipeline.cli``'s ``reports_errors`` (an import of ``pipeline.cli`` here would close a cycle
through ``pipeline.cli.main``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from calibration.degrade import DEGRADATIONS, parse_degradations
from calibration.embed import PipelineEmbedder
from calibration.errors import CalibrationDataError
from calibration.pairs import load_pairs
from calibration.quality import (
    GateGrid,
    GateResult,
    QualityGate,
    evaluate_gate,
    measure_conditions,
    search_gate,
)
from calibration.threshold import load_calibrated_tau
from pipeline.config.service import FaceStreamConfig, load_config
from pipeline.service.app import open_analyzer

__all__ = ["calibrate_quality_command"]


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _table(label: str, results: Sequence[GateResult]) -> list[str]:
    lines = [
        f"{label}:",
        "  condition    pairs  no face  refused  FAR (false / accepted impostors)  FRR",
    ]
    for result in results:
        lines.append(
            f"  {result.condition:<11} {result.pairs:>5} {result.no_face_pairs:>8} "
            f"{result.refused_share:>8.1%}  {_rate(result.far):>7} "
            f"({result.false_accepts}/{result.impostor_accepted}){'':<14} {_rate(result.frr)}"
        )
    return lines


def _resolution_line(results: Sequence[GateResult], target_far: float) -> str:
    measured = [r for r in results if r.impostor_accepted]
    refused_all = [r.condition for r in results if not r.impostor_accepted]
    closed = f"; no impostor pair accepted at {', '.join(refused_all)}" if refused_all else ""
    if not measured:
        return f"FAR is not measured: the gate accepts no impostor pair anywhere{closed}"
    fewest = min(measured, key=lambda r: r.impostor_accepted)
    if target_far >= 1.0 / fewest.impostor_accepted:
        return (
            f"FAR <= {target_far:g} is resolved: every measured condition has >= "
            f"{fewest.impostor_accepted} accepted impostor pairs{closed}"
        )
    return (
        f"FAR <= {target_far:g} is NOT measurable here: {fewest.condition} has "
        f"{fewest.impostor_accepted} accepted impostor pairs (FAR step "
        f"{1.0 / fewest.impostor_accepted:.2%}), so FAR <= target means 0 false accepts, which "
        f"bounds FAR only at ~{3.0 / fewest.impostor_accepted:.2%} (95 %, rule of three); "
        f"{target_far:g} needs >= {round(3.0 / target_far)} accepted impostor pairs per "
        f"condition{closed}"
    )


def _service_tau(config: FaceStreamConfig, model_id: str, tau: float | None) -> tuple[float, str]:
    """The distance the door would accept a match at: an explicit option; else the service's
    tau (the config's own setting, the tau calibrated for this encoder, or the config's
    default, in that order), or the first door's ``max_match_distance`` when it is stricter."""
    match = config.recognition.match
    if tau is not None:
        return tau, "option"
    if "max_distance" in match.model_fields_set:
        service_tau, source = match.max_distance, "config"
    else:
        calibrated = load_calibrated_tau(config.data_dir, model_id)
        service_tau, source = (
            (calibrated, "calibrated")
            if calibrated is not None
            else (match.max_distance, "default")
        )
    door_limit = config.doors[0].max_match_distance if config.doors else None
    if door_limit is not None and door_limit < service_tau:
        return door_limit, "door max_match_distance"
    return service_tau, source


def calibrate_quality_command(
    *,
    pairs: Annotated[
        Path,
        typer.Option(
            "--pairs",
            help="pairs CSV (path_a,path_b,same; paths relative to it), labels CSV (path,identity:"
            " every pair) or a folder of identity folders",
        ),
    ],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file")] = None,
    degrade: Annotated[
        str,
        typer.Option(help=f"degraded copies measured besides clean: from {','.join(DEGRADATIONS)}"),
    ] = ",".join(DEGRADATIONS),
    target_far: Annotated[
        float,
        typer.Option(help="false accept rate among accepted pairs the gate must keep everywhere"),
    ] = 0.001,
    tau: Annotated[
        float | None,
        typer.Option(help="match distance (default: the service's: config, calibrated, default)"),
    ] = None,
    max_clean_refused: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="consider only gates refusing at most this share of clean pairs"
        ),
    ] = 0.05,
    seed: Annotated[int, typer.Option(help="seed of pair making and degradation")] = 0,
    max_pairs: Annotated[
        int | None, typer.Option(min=1, help="use a seeded sample of at most this many pairs")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON object last")] = False,
) -> None:
    """Choose the door's face-quality gate: FAR, FRR and refused share per degradation at the
    service's tau, and the loosest gate keeping FAR <= target at every degradation."""
    if not 0.0 < target_far < 1.0:
        raise CalibrationDataError(f"--target-far must be in (0, 1), got {target_far}")
    settings = load_config(config)
    pair_set = load_pairs(pairs, seed=seed)
    if max_pairs is not None:
        pair_set = pair_set.subsample(max_pairs, seed=seed)
    door = settings.doors[0] if settings.doors else None
    configured = QualityGate() if door is None else QualityGate.from_door(door)
    with open_analyzer(settings) as analyzer:
        service_tau, tau_source = _service_tau(settings, analyzer.model_id, tau)
        measured = measure_conditions(
            pair_set,
            PipelineEmbedder(analyzer),
            parse_degradations(degrade),
            seed=seed,
            progress=lambda line: typer.echo(line, err=True),
        )
        model_id = analyzer.model_id
    search = search_gate(
        measured,
        GateGrid(),
        tau=service_tau,
        target_far=target_far,
        max_clean_refused=max_clean_refused,
    )
    found_name = "chosen" if search.chosen is not None else "closest"
    gates = {
        "no_gate": QualityGate.open(),
        "configured": configured,
        found_name: search.chosen or search.closest,
    }
    results = {
        name: [evaluate_gate(pairs, gate, tau=service_tau) for pairs in measured]
        for name, gate in gates.items()
    }
    typer.echo(
        f"{len(pair_set)} pairs ({pair_set.genuine_count} genuine), tau {service_tau:.4f} "
        f"({tau_source}), model {model_id}"
    )
    for name, gate in gates.items():
        for line in _table(f"{name} {gate.as_dict()}", results[name]):
            typer.echo(line)
    verdict = (
        f"loosest safe gate ({search.safe_gates} of {search.gates_tried} safe): "
        f"{search.chosen.as_dict()}"
        if search.chosen is not None
        else f"no gate of {search.gates_tried} keeps FAR <= {target_far:g} at every condition; "
        f"closest: {search.closest.as_dict()}"
    )
    typer.echo(verdict)
    typer.echo(_resolution_line(results[found_name], target_far))
    if as_json:
        payload = {
            "n_pairs": len(pair_set),
            "genuine_pairs": pair_set.genuine_count,
            "tau": service_tau,
            "tau_source": tau_source,
            "target_far": target_far,
            "max_clean_refused": max_clean_refused,
            "model_id": model_id,
            "gates_tried": search.gates_tried,
            "safe_gates": search.safe_gates,
            "chosen": None if search.chosen is None else search.chosen.as_dict(),
            "closest": search.closest.as_dict(),
            "far_measurable": _resolution_line(results[found_name], target_far).startswith(
                f"FAR <= {target_far:g} is resolved"
            ),
            "far_resolution": _resolution_line(results[found_name], target_far),
            "gates": {
                name: {
                    "gate": gate.as_dict(),
                    "conditions": [result.as_dict() for result in results[name]],
                }
                for name, gate in gates.items()
            },
        }
        typer.echo(json.dumps(payload))
