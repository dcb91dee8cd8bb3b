"""``facestream audit``: check the hash-chained audit log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr

from engines.errors import ConfigError
from pipeline.access.audit import AuditHead, verify_audit_log
from pipeline.cli.errors import reports_errors
from pipeline.cli.options import (
    JsonOption,
)
from pipeline.config.secrets import SecretSpec, resolve_secret

__all__ = ["audit_app"]

audit_app = typer.Typer(help="check the hash-chained audit log", no_args_is_help=True)


def _expected_head(text: str | None) -> AuditHead | None:
    if text is None:
        return None
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise ConfigError(f"--expect-head: expected SEQ:SHA256HEX, got {text[:80]!r}")
    return AuditHead(seq=int(seq), digest=digest.lower())


@audit_app.command("verify")
@reports_errors
def audit_verify(
    path: Annotated[Path, typer.Argument(help="audit log file (JSON lines)")],
    key_file: Annotated[
        Path | None,
        typer.Option(help="file holding the audit key (audit.key): every line's MAC is checked"),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            help="the audit key itself (visible to other users in the process list: prefer "
            "--key-file, $FACESTREAM_AUDIT_KEY or $FACESTREAM_AUDIT_KEY_FILE)"
        ),
    ] = None,
    expect_head: Annotated[
        str | None,
        typer.Option(
            help="SEQ:DIGEST published earlier (a decision event's audit_seq and audit_head, or "
            "an audit_checkpoint event): the log must still hold that line"
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check every line's hash, MAC (with a key) and the chain; exit 2 naming the first bad
    line. Without a key, a rewrite with recomputed hashes passes: give the key."""
    given = SecretStr(key) if key else None
    # a key named on the command line wins over the environment's
    environment = None if key_file is not None or given is not None else "FACESTREAM_AUDIT_KEY"
    secret = resolve_secret(SecretSpec("the audit key", environment, key_file, given))
    report = verify_audit_log(
        path,
        key=None if secret is None else secret.get_secret_value().encode(),
        expected_head=_expected_head(expect_head),
    )
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
    if not report.ok:
        if not as_json:
            typer.echo(f"error: {report.summary()}", err=True)
        raise typer.Exit(2)
    if not as_json:
        typer.echo(report.summary())
