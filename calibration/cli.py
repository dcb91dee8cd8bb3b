"""``eval_app``: the ``facestream eval liveness`` command (mounted by ``pipeline.cli.main``).

With ``--json`` the last stdout line is one JSON object:
``{"apcer": {"print": ..., "replay": ...}, "bpcer": ..., "acer": ...,
"median_time_to_decision_s": ..., ...}``. Errors of the FaceStreamError family print one line
on stderr and exit with status 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from calibration.liveness import run_liveness_eval
from calibration.liveness_dataset import (
    EvalSettings,
    Split,
    StillPolicy,
    default_shared_data,
)
from engines.errors import FaceStreamError
from pipeline.config.service import load_config
from pipeline.liveness import LivenessConfig

__all__ = ["eval_app", "eval_liveness_command"]

eval_app = typer.Typer(help="measure error rates", no_args_is_help=True)


@eval_app.command("liveness")
def eval_liveness_command(  # noqa: PLR0917  (typer maps each parameter to an option)
    manifest: Annotated[
        Path | None,
        typer.Option(help="CSV with header path,label (bona_fide | print | replay | ...)"),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="shared data folder (default ../shared/data)")
    ] = None,
    store: Annotated[Path, typer.Option(help="model store (data_dir)")] = Path("data"),
    minifasnet: Annotated[
        Path | None, typer.Option(help="folder of the MiniFASNet .pth files")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the attack generator")] = 7,
    split: Annotated[
        str,
        typer.Option(help="half of the shared data: report (held out), tune (fitted on) or all"),
    ] = "report",
    max_prints: Annotated[int, typer.Option(min=1, help="synthetic print attacks")] = 24,
    max_replays: Annotated[int, typer.Option(min=1, help="synthetic screen replays")] = 16,
    static_attacks: Annotated[
        int,
        typer.Option(
            min=0,
            help="attacks of the second generator (static, frame-filling screens and prints: "
            "calibration/liveness_static_attacks.py), half replays, half prints",
        ),
    ] = 16,
    still_path: Annotated[
        bool,
        typer.Option(help="the still-person path to 'live' (--no-still-path: motion required)"),
    ] = True,
    stills: Annotated[
        str,
        typer.Option(
            help="images: passive (one-frame cues, as a photo upload check) or clip "
            "(held still as a video: never live, as at a door)"
        ),
    ] = "passive",
    cnn: Annotated[bool, typer.Option(help="use the MiniFASNet CNN cue")] = True,
    surround: Annotated[bool, typer.Option(help="use the surround-motion cue")] = True,
    scenes: Annotated[
        bool,
        typer.Option(
            help="film synthetic attacks in front of scene photos (--no-scenes: the plain "
            "backdrop of earlier versions)"
        ),
    ] = True,
    scale: Annotated[
        float,
        typer.Option(
            min=0.1,
            max=1.0,
            help="shrink every clip and image by this factor before judging it (a camera "
            "farther away: smaller faces)",
        ),
    ] = 1.0,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="facestream config whose [liveness] section is judged (on, whatever its "
            "'enabled' says; --no-cnn, --no-surround and --no-still-path apply on top)",
        ),
    ] = None,
    det_plot: Annotated[Path | None, typer.Option(help="write the DET curve PNG here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON object last")] = False,
) -> None:
    """APCER per attack type, BPCER and ACER (ISO/IEC 30107-3) of the liveness stage."""
    try:
        liveness = load_config(config).liveness if config is not None else LivenessConfig()
    except FaceStreamError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    # the flags only turn cues off, on top of the config's own choice
    cues = {"cnn": cnn, "surround": surround, "still_live": still_path}
    liveness = LivenessConfig.model_validate(
        {
            **liveness.model_dump(),
            "enabled": True,
            **{name: False for name, on in cues.items() if not on},
        }
    )
    settings = EvalSettings(
        data_dir=data if data is not None else default_shared_data(),
        store_dir=store,
        manifest=manifest,
        minifasnet_dir=minifasnet,
        seed=seed,
        max_prints=max_prints,
        max_replays=max_replays,
        static_attacks=static_attacks,
        split=_split(split),
        stills=_stills(stills),
        scene_backgrounds=scenes,
        frame_scale=scale,
        liveness=liveness,
    )
    try:
        report = run_liveness_eval(settings, det_plot=det_plot)
    except FaceStreamError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    summary = {
        key: report[key]
        for key in (
            "apcer",
            "bpcer",
            "acer",
            "median_time_to_decision_s",
            "clips",
            "split",
            "stills",
        )
    }
    if as_json:
        typer.echo(json.dumps({**report, **summary}))
    else:
        typer.echo(json.dumps(summary, indent=2))


def _stills(value: str) -> StillPolicy:
    if value == "passive":
        return "passive"
    if value == "clip":
        return "clip"
    raise typer.BadParameter(f"--stills must be passive or clip, not {value!r}")


def _split(value: str) -> Split:
    if value == "tune":
        return "tune"
    if value == "report":
        return "report"
    if value == "all":
        return "all"
    raise typer.BadParameter(f"--split must be tune, report or all, not {value!r}")
