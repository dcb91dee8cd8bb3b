"""How every ``facestream`` command reports the project's errors: one line, exit status 2."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

import typer

from engines.errors import FaceStreamError

__all__ = ["reports_errors"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def reports_errors(command: Callable[_P, _R]) -> Callable[_P, _R]:
    """Wrap a command: a FaceStreamError prints ``error: <message>`` on stderr and exits 2;
    anything else is a bug and keeps its traceback."""

    @wraps(command)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return command(*args, **kwargs)
        except FaceStreamError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc

    return run
