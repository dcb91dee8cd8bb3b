"""The exception family: one root, and the builtin each error is also catchable as."""

from __future__ import annotations

import pytest

from engines import errors
from pipeline.errors import ConfigFileError


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (errors.ConfigError, ValueError),
        (errors.ModelFileError, ValueError),
        (errors.ManifestMismatchError, ValueError),
        (errors.InputSpecError, ValueError),
        (errors.BackendUnavailableError, RuntimeError),
        (errors.EngineStateError, RuntimeError),
        (ConfigFileError, ValueError),
    ],
)
def test_error_has_project_root_and_builtin(
    error: type[Exception], builtin: type[Exception]
) -> None:
    """Every error derives from FaceStreamError and from the builtin a caller would catch."""
    assert issubclass(error, errors.FaceStreamError)
    assert issubclass(error, builtin)


def test_manifest_mismatch_is_a_model_file_error() -> None:
    """A plan that does not match its manifest is caught by `except ModelFileError`."""
    assert issubclass(errors.ManifestMismatchError, errors.ModelFileError)
