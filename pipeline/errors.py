"""Errors of the pipeline layer; all derive from ``engines.errors.FaceStreamError``.

FaceStreamError                  (engines.errors)
└── ConfigFileError(ConfigError) the config file is missing, unparsable or invalid
"""

from __future__ import annotations

from engines.errors import ConfigError

__all__ = ["ConfigFileError"]


class ConfigFileError(ConfigError):
    """The config file is missing, is not valid TOML, or fails validation (names the field)."""
