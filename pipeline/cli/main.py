"""The ``facestream`` command: every group and command mounted on one Typer app.

Errors of the FaceStreamError family print one line on stderr and exit with status 2; anything
else is a bug and keeps its traceback. The order commands are added in is the order ``--help``
lists them (Typer lists commands first, then groups).
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from calibration.cli import eval_liveness_command
from calibration.commands import calibrate_app, eval_identify_command, eval_pairs_command
from calibration.doors_cli import eval_doors_command
from calibration.learning import eval_verifier_command, train_app
from calibration.unknowns_cli import eval_unknowns_command
from pipeline.cli.audit import audit_app
from pipeline.cli.config import check_config, config_app, doctor
from pipeline.cli.engines import engines_app
from pipeline.cli.events import events_app
from pipeline.cli.feedback import feedback
from pipeline.cli.identities import enroll, gallery_app, identify, identities_app, verify
from pipeline.cli.process import process
from pipeline.cli.run import run, sample
from pipeline.cli.unknowns import unknowns_app
from pipeline.style.cli import style_app, stylize

__all__ = ["app", "main"]

app = typer.Typer(
    help="facestream: streaming face recognition",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


eval_app = typer.Typer(help="accuracy on your own data", no_args_is_help=True)
eval_app.command("pairs")(eval_pairs_command)
eval_app.command("identify")(eval_identify_command)
eval_app.command("liveness")(eval_liveness_command)
eval_app.command("verifier")(eval_verifier_command)
eval_app.command("doors")(eval_doors_command)
eval_app.command("unknowns")(eval_unknowns_command)

app.command("stylize")(stylize)
app.command("check-config")(check_config)
app.command("doctor")(doctor)
app.command("enroll")(enroll)
app.command("identify")(identify)
app.command("verify")(verify)
app.command("process")(process)
app.command("run")(run)
app.command("sample")(sample)
app.command("feedback")(feedback)
app.add_typer(engines_app, name="engines")
app.add_typer(calibrate_app, name="calibrate")
app.add_typer(eval_app, name="eval")
app.add_typer(train_app, name="train")
app.add_typer(style_app, name="style")
app.add_typer(identities_app, name="identities")
app.add_typer(gallery_app, name="gallery")
app.add_typer(audit_app, name="audit")
app.add_typer(config_app, name="config")
app.add_typer(events_app, name="events")
app.add_typer(unknowns_app, name="unknowns")


def main() -> None:
    """Entry point of the ``facestream`` console script."""
    app()


if __name__ == "__main__":
    main()
