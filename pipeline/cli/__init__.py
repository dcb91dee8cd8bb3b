"""The ``facestream`` command: the composition root, the only place in pipeline/ that
imports calibration.

Modules and their public names:

- ``errors``: How every ``facestream`` command reports the project's errors: one line, exit
  status 2. Public: ``reports_errors``.
- ``main``: The ``facestream`` command. Public: ``app``, ``main``.
"""

from pipeline.cli.main import app, main

__all__ = ["app", "main"]
