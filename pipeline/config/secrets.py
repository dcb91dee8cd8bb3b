"""Secrets from an environment variable, a file (a mounted Kubernetes Secret) or the config file.

Every secret of the service (webhook secrets, the audit key, the MQTT password and signing
secret) can be given four ways, so that none has to sit in a ConfigMap or a file that many
people read. The first one present wins:

1. the environment variable ``NAME`` (e.g. ``FACESTREAM_AUDIT_KEY``), as ``FACESTREAM_API_TOKEN``
   overrides ``api.token``;
2. the file named by the environment variable ``NAME_FILE`` (e.g. ``FACESTREAM_AUDIT_KEY_FILE``);
3. the config's ``<key>_file`` path (e.g. ``audit.key_file``);
4. the config's ``<key>`` value itself.

A file's content is used without its trailing newline (``echo`` and editors add one). The
config keeps the path, never the content, so ``facestream check-config`` prints no secret.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from engines.errors import ConfigError

__all__ = ["SecretSpec", "read_secret_file", "resolve_secret"]

_MAX_SECRET_FILE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class SecretSpec:
    """Where one secret may come from: ``what`` names it in errors (e.g. ``audit.key``),
    ``environment`` is the variable ``NAME`` (``NAME_FILE`` is derived; None: no variable),
    ``file`` and ``inline`` are the config's ``<key>_file`` and ``<key>`` values."""

    what: str
    environment: str | None
    file: Path | None
    inline: SecretStr | None


def read_secret_file(path: Path, what: str) -> SecretStr:
    """The secret stored in ``path`` without its trailing newline; ConfigError when the file
    cannot be read, is too big to be a secret or is empty."""
    try:
        with path.open("rb") as stream:
            data = stream.read(_MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read the secret file {path}: {exc}") from exc
    if len(data) > _MAX_SECRET_FILE_BYTES:
        raise ConfigError(f"{what}: {path} holds over {_MAX_SECRET_FILE_BYTES} bytes, not a secret")
    try:
        text = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what}: {path} is not UTF-8 text") from exc
    if not text:
        raise ConfigError(f"{what}: the secret file {path} is empty")
    return SecretStr(text)


def resolve_secret(spec: SecretSpec) -> SecretStr | None:
    """The secret ``spec`` describes (see the module docstring for the order), or None when
    none of its sources is set. Raises ConfigError (a ValueError) for an unreadable file."""
    if spec.environment is not None:
        value = os.environ.get(spec.environment)
        if value:
            return SecretStr(value)
        file_variable = f"{spec.environment}_FILE"
        named = os.environ.get(file_variable)
        if named:
            return read_secret_file(Path(named), f"{spec.what} (from ${file_variable})")
    if spec.file is not None:
        return read_secret_file(spec.file, f"{spec.what}_file")
    return spec.inline
