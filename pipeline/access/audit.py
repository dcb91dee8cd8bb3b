"""Append-only, hash-chained audit log of door decisions, and its verifier.

File format: UTF-8, one JSON object per line, each line ended by ``\\n``, keys sorted, no spaces
(``json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False)``)::

    {"event":{...},"hash":"…","prev":"…","seq":1,"ts":"2025-01-01T12:00:00.123456+00:00"}

- ``seq``: 1 on the first line, then one more on each line (so ``seq`` equals the line number).
- ``ts``: UTC time of the append, ISO 8601 with microseconds.
- ``event``: the decision, a JSON object chosen by the caller (``pipeline.access.policy`` / events).
- ``prev``: SHA-256 hex of the previous line's exact bytes, without its ``\\n``;
  ``GENESIS_PREV`` (64 zeros) on line 1.
- ``hash``: SHA-256 hex of the line's canonical encoding without the ``hash`` key.

- ``mac`` (when the log has a key, ``audit.key``): HMAC-SHA256 hex, under the key, of the same
  canonical encoding ``hash`` covers. The key is not in the log nor next to it (config, env, a
  mounted secret).

``hash`` catches an edit of any line, the last one included; ``prev`` and ``seq`` catch deleted,
inserted, duplicated and reordered lines. Without a key, someone who can write the file can
rewrite it and recompute every ``hash``: the chain stays intact. With a key, each ``mac`` needs
the key and each line's ``prev`` binds it to every line before (an HMAC chain), so a rewrite
shows at its first line in ``verify_audit_log(path, key=...)``. What the key cannot catch: the
last lines cut off, or the whole log replaced by an older copy. Against those, the head is
anchored outside: each published decision event carries ``audit_seq`` and ``audit_head`` (the
SHA-256 of its line), and :meth:`AuditLog.checkpoint` is published periodically as a signed
``audit_checkpoint`` event; ``verify_audit_log(..., expected_head=...)`` checks that the log
still holds that line.

What a line keeps: ids, never names (``pipeline.access.recorder``): deleting an identity removes
its name from Redis, and the audit log, which cannot be rewritten, holds none to remove. Lines
written before this rule may hold names; they stay, since removing them would break the chain.

Durability: each append is one ``write`` on an ``O_APPEND`` descriptor followed by ``fsync``, so a
decision that ``append`` returned survives a crash or power loss; it costs one disk sync per
decision (milliseconds on an SSD), cheap at door-decision rates. A crash mid-write can leave a
torn last line: :class:`AuditLog` finds it on open and refuses to append until
:meth:`AuditLog.repair` moves it aside. One process writes a file at a time (an exclusive
``flock`` enforces it); threads of that process share one :class:`AuditLog`, whose lock
serialises appends.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from pipeline.errors import AuditEventError, AuditLogCorruptError, AuditLogError

__all__ = [
    "GENESIS_PREV",
    "AuditCheckpoint",
    "AuditHead",
    "AuditLog",
    "AuditRecord",
    "AuditReport",
    "checkpoint_mac",
    "checkpoint_message",
    "verify_audit_log",
]

logger = logging.getLogger(__name__)

GENESIS_PREV = "0" * 64
"""The ``prev`` of line 1: there is no previous line to hash."""

_KEYS = frozenset({"event", "hash", "prev", "seq", "ts"})
_KEYED_KEYS = _KEYS | {"mac"}
_CHECKPOINT_LABEL = "facestream/audit-checkpoint/v1"
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class AuditHead:
    """Where the chain ends: the last line's ``seq`` (0 when empty) and its SHA-256 hex."""

    seq: int
    digest: str


@dataclass(frozen=True, slots=True)
class AuditCheckpoint:
    """A statement of the head, for the event stream: ``mac`` is the HMAC-SHA256 hex, under
    the audit key, of ``checkpoint_message(seq, digest)`` (None: the log has no key)."""

    seq: int
    digest: str
    mac: str | None


def checkpoint_message(seq: int, digest: str) -> bytes:
    """What a checkpoint's MAC covers: a fixed label, the seq and the head digest."""
    return f"{_CHECKPOINT_LABEL}\n{seq}\n{digest}".encode()


def checkpoint_mac(key: bytes, seq: int, digest: str) -> str:
    """The MAC of a checkpoint of (seq, digest) under the audit key."""
    return hmac.new(key, checkpoint_message(seq, digest), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One appended line: its ``seq``, UTC ISO 8601 timestamp, and the SHA-256 hex of its bytes."""

    seq: int
    timestamp: str
    digest: str


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The verdict of :func:`verify_audit_log`.

    ``lines_checked``: lines read, up to and including the first bad one (verification stops
    there). ``first_bad_line``: its 1-based number, None when ``ok``. ``reason``: what is wrong
    with it, None when ``ok``.
    """

    path: Path
    lines_checked: int
    ok: bool
    first_bad_line: int | None = None
    reason: str | None = None
    keyed: bool = False  # whether every line's MAC was checked under a key

    def summary(self) -> str:
        """One line for a person: the file, and either the line count or the bad line."""
        if self.ok:
            how = (
                "every MAC checked"
                if self.keyed
                else "no key given: a rewrite with recomputed hashes would not show"
            )
            return f"{self.path}: ok, {self.lines_checked} lines, chain intact ({how})"
        return f"{self.path}: line {self.first_bad_line}: {self.reason}"

    def as_dict(self) -> dict[str, object]:
        """The report as JSON-ready values (the path as a string)."""
        return {
            "path": str(self.path),
            "lines_checked": self.lines_checked,
            "ok": self.ok,
            "first_bad_line": self.first_bad_line,
            "reason": self.reason,
            "keyed": self.keyed,
        }


class _BadLineError(Exception):
    """Internal: a line fails a check; the message is the reason. Never leaves this module."""


@dataclass(frozen=True, slots=True)
class _Line:
    seq: int
    prev: str
    digest: str


def _encode(document: Mapping[str, object]) -> bytes:
    """The canonical bytes of a JSON object: sorted keys, compact, UTF-8, no NaN."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _mac(key: bytes, content: bytes) -> str:
    return hmac.new(key, content, hashlib.sha256).hexdigest()


def _parse_line(raw: bytes, key: bytes | None = None) -> _Line:
    """Check one line on its own (everything but its place in the chain); with ``key``, its
    MAC too (a line without one fails).

    raw: the line's bytes as read, ``\\n`` included when present. Raises _BadLineError.
    """
    if not raw.endswith(b"\n"):
        raise _BadLineError("truncated: the line has no terminating newline (a torn write)")
    body = raw[:-1]
    try:
        document = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _BadLineError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise _BadLineError(f"invalid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(document, dict):
        raise _BadLineError(f"a JSON {type(document).__name__}, expected an object")
    if set(document) not in (_KEYS, _KEYED_KEYS):
        raise _BadLineError(f"keys {sorted(document)}, expected {sorted(_KEYED_KEYS)}")
    seq, prev, claimed = _check_fields(document)
    try:
        content = _encode({k: v for k, v in document.items() if k not in ("hash", "mac")})
        canonical = _encode(document)
    except ValueError as exc:  # NaN/Infinity, lone surrogates
        raise _BadLineError(f"holds a value JSON cannot encode ({exc})") from exc
    if _sha256(content) != claimed:
        raise _BadLineError("hash does not match the line's content: the line was edited")
    if key is not None:
        mac = document.get("mac")
        if mac is None:
            raise _BadLineError(
                "no MAC: written without an audit key, or the MAC was stripped (a log started "
                "before audit.key was set verifies only without --key)"
            )
        # bytes: compare_digest raises TypeError on a str with non-ASCII characters
        if not isinstance(mac, str) or not hmac.compare_digest(
            mac.encode(), _mac(key, content).encode()
        ):
            raise _BadLineError(
                "MAC does not match under this key: the line was rewritten (or the key is wrong)"
            )
    if canonical != body:
        raise _BadLineError("not in canonical form (sorted keys, no spaces): the line was edited")
    return _Line(seq=seq, prev=prev, digest=_sha256(body))


def _check_fields(document: dict[str, object]) -> tuple[int, str, str]:
    """Check the type of each field; returns seq, prev and hash. Raises _BadLineError."""
    seq, prev, claimed, timestamp = (document[k] for k in ("seq", "prev", "hash", "ts"))
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise _BadLineError(f"seq is {seq!r}, expected an integer >= 1")
    if not isinstance(prev, str) or not _HEX64.fullmatch(prev):
        raise _BadLineError(f"prev is {prev!r}, expected 64 lowercase hex digits")
    if not isinstance(claimed, str) or not _HEX64.fullmatch(claimed):
        raise _BadLineError(f"hash is {claimed!r}, expected 64 lowercase hex digits")
    if not isinstance(document["event"], dict):
        raise _BadLineError("event is not a JSON object")
    if not _is_utc_timestamp(timestamp):
        raise _BadLineError(f"ts is {timestamp!r}, expected a UTC ISO 8601 timestamp")
    return seq, prev, claimed


def _is_utc_timestamp(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return False
    return parsed.utcoffset() == timedelta(0)


def _chain_problem(line: _Line, line_number: int, prev_digest: str) -> str | None:
    """Why a self-consistent line does not belong at ``line_number``, or None.

    Lines 1 .. line_number - 1 are already verified, so line k holds seq k.
    """
    if line.seq < line_number:
        return f"duplicate sequence number {line.seq} (line {line.seq} has it already)"
    if line.seq > line_number:
        return (
            f"sequence number {line.seq}, expected {line_number}: "
            "a line before it is missing, or lines are out of order"
        )
    if line.prev != prev_digest:
        if line_number == 1:
            return "prev is not the genesis value (64 zeros): lines before it were removed"
        return (
            f"prev does not match the SHA-256 of line {line_number - 1}: "
            "the line was inserted or forged, or the line before it was replaced"
        )
    return None


@contextmanager
def _open_for_reading(path: Path) -> Iterator[IO[bytes]]:
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise AuditLogError(f"audit log {path}: cannot open for reading: {exc}") from exc
    with stream:
        yield stream


def _bad(path: Path, line_number: int, reason: str) -> AuditReport:
    return AuditReport(path, line_number, ok=False, first_bad_line=line_number, reason=reason)


def verify_audit_log(
    path: Path, *, key: bytes | None = None, expected_head: AuditHead | None = None
) -> AuditReport:
    """Check every line of an audit log and the chain between them; stop at the first bad line.

    Finds edited, deleted, inserted, duplicated and reordered lines, a torn (unterminated) last
    line, and lines that are not JSON or not in the format above. key: the audit key; every
    line's MAC must match under it (this is what catches a rewrite with recomputed hashes).
    expected_head: a head published earlier (a decision event's ``audit_seq`` and
    ``audit_head``, or a checkpoint): the log must hold that line, so a log cut short or
    replaced by an older copy is caught. Streams the file (memory is one line). A verify that
    races an append may see the new line half-written: run it again. Raises AuditLogError when
    the file cannot be read; a bad file is a report, not an error.
    """
    prev_digest = GENESIS_PREV
    line_number = 0
    try:
        with _open_for_reading(path) as stream:
            for raw in stream:
                line_number += 1
                try:
                    line = _parse_line(raw, key)
                except _BadLineError as exc:
                    return _bad(path, line_number, str(exc))
                problem = _chain_problem(line, line_number, prev_digest)
                if problem is None and expected_head is not None:
                    problem = _head_problem(line, expected_head)
                if problem is not None:
                    return _bad(path, line_number, problem)
                prev_digest = line.digest
    except OSError as exc:
        if isinstance(exc, AuditLogError):
            raise
        raise AuditLogError(f"audit log {path}: read failed at line {line_number}: {exc}") from exc
    if expected_head is not None and expected_head.seq > line_number:
        return _bad(
            path,
            line_number + 1,
            f"the log ends at line {line_number}, but line {expected_head.seq} was published "
            "as its head: lines were cut off the end, or the log was replaced by an older copy",
        )
    return AuditReport(path, line_number, ok=True, keyed=key is not None)


def _head_problem(line: _Line, head: AuditHead) -> str | None:
    if line.seq == head.seq and line.digest != head.digest:
        return (
            f"line {line.seq} is not the one published as the head ({head.digest[:16]}...): "
            "the log was rewritten"
        )
    return None


@dataclass(frozen=True, slots=True)
class _Tail:
    """The last line of a file: its 1-based number (0: empty file), byte offset and bytes."""

    line_number: int
    offset: int
    raw: bytes


def _read_tail(path: Path) -> _Tail:
    line_number, offset, last_offset, last = 0, 0, 0, b""
    with _open_for_reading(path) as stream:
        for raw in stream:
            line_number += 1
            last_offset, last = offset, raw
            offset += len(raw)
    return _Tail(line_number=line_number, offset=last_offset, raw=last)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class AuditLog:
    """An open audit log: appends hash-chained lines, each synced to disk before returning.

    Opening creates the file if needed, takes an exclusive lock on it (one writing process),
    and recovers the head from the last line. If that line is torn or corrupt, the log opens
    but :meth:`append` raises AuditLogCorruptError until :meth:`repair` is called. Only the last
    line is checked on open; :func:`verify_audit_log` checks them all.
    """

    def __init__(self, path: Path, *, key: bytes | None = None) -> None:
        """path: the log file; its directory must exist. key: the audit key (``audit.key``):
        each line gets a MAC under it; None writes unkeyed lines. Raises AuditLogError."""
        self.path = path
        self._key = key
        self._lock = threading.Lock()
        existed = path.exists()
        try:
            self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        except OSError as exc:
            raise AuditLogError(f"audit log {path}: cannot open for appending: {exc}") from exc
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not existed:
                _fsync_directory(path.parent)  # the new file's name survives a crash too
            self._head, self._damage = self._recover()
        except BaseException as exc:
            os.close(self._fd)
            self._fd = None
            if isinstance(exc, BlockingIOError):
                raise AuditLogError(
                    f"audit log {path}: another writer holds it (one process writes a log)"
                ) from exc
            if isinstance(exc, OSError) and not isinstance(exc, AuditLogError):
                raise AuditLogError(f"audit log {path}: cannot open: {exc}") from exc
            raise
        logger.info("audit log %s opened at seq %d", path, self._head.seq)

    def _recover(self) -> tuple[AuditHead, str | None]:
        """The head from the last line, and what is wrong with that line (None when sound)."""
        tail = _read_tail(self.path)
        if tail.line_number == 0:
            return AuditHead(seq=0, digest=GENESIS_PREV), None
        try:
            line = _parse_line(tail.raw)
        except _BadLineError as exc:
            damage = f"audit log {self.path}: line {tail.line_number} (the last): {exc}"
            logger.warning("%s; appends refused until repair()", damage)
            return AuditHead(seq=0, digest=GENESIS_PREV), damage
        if line.seq != tail.line_number:
            logger.warning(
                "audit log %s: last line %d holds seq %d; lines were removed or added, "
                "run `facestream audit verify`",
                self.path,
                tail.line_number,
                line.seq,
            )
        if self._key is not None:
            try:
                _parse_line(tail.raw, self._key)
            except _BadLineError as exc:
                # not a reason to stop deciding doors: the rewrite is evidence, and verify
                # names its first line
                logger.error(
                    "audit log %s: last line %d fails under the audit key (%s); run "
                    "`facestream audit verify --key-file ...`",
                    self.path,
                    tail.line_number,
                    exc,
                )
        return AuditHead(seq=line.seq, digest=line.digest), None

    @property
    def head(self) -> AuditHead:
        """The last line's seq and SHA-256 hex: publish it elsewhere to anchor the chain."""
        with self._lock:
            return self._head

    def checkpoint(self) -> AuditCheckpoint:
        """The head with its MAC under the audit key (None without a key), to publish."""
        with self._lock:
            head = self._head
        mac = None if self._key is None else checkpoint_mac(self._key, head.seq, head.digest)
        return AuditCheckpoint(seq=head.seq, digest=head.digest, mac=mac)

    @property
    def damage(self) -> str | None:
        """Why appends are refused (a torn or corrupt last line), or None."""
        with self._lock:
            return self._damage

    def append(self, event: Mapping[str, object]) -> AuditRecord:
        """Append one event as the next line, and fsync it before returning.

        event: a JSON object (str keys; values JSON can encode, no NaN). Thread-safe.
        Raises AuditEventError (bad event; nothing written), AuditLogCorruptError (torn or
        corrupt last line: call repair()), AuditLogError (closed, or the write/fsync failed).
        """
        if not isinstance(event, Mapping):
            raise AuditEventError(f"an audit event must be a mapping, got {type(event).__name__}")
        with self._lock:
            if self._fd is None:
                raise AuditLogError(f"audit log {self.path}: append after close()")
            if self._damage is not None:
                raise AuditLogCorruptError(f"{self._damage}; call repair() before appending")
            seq = self._head.seq + 1
            timestamp = datetime.now(UTC).isoformat(timespec="microseconds")
            content: dict[str, object] = {
                "event": dict(event),
                "prev": self._head.digest,
                "seq": seq,
                "ts": timestamp,
            }
            try:
                encoded = _encode(content)
                line: dict[str, object] = {**content, "hash": _sha256(encoded)}
                if self._key is not None:
                    line["mac"] = _mac(self._key, encoded)
                body = _encode(line)
            except (TypeError, ValueError) as exc:
                raise AuditEventError(f"audit event cannot be encoded as JSON: {exc}") from exc
            try:
                self._write_all(body + b"\n")
                os.fsync(self._fd)
            except OSError as exc:
                self._damage = f"audit log {self.path}: line {seq} may be torn ({exc})"
                raise AuditLogError(f"audit log {self.path}: append failed: {exc}") from exc
            self._head = AuditHead(seq=seq, digest=_sha256(body))
            return AuditRecord(seq=seq, timestamp=timestamp, digest=self._head.digest)

    def _write_all(self, data: bytes) -> None:
        assert self._fd is not None  # checked by the caller, under the lock
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def repair(self) -> Path | None:
        """Move a torn or corrupt last line aside, so appends can resume.

        The bad bytes are saved, synced, next to the log as ``<name>.torn-<UTC time>`` (kept as
        evidence), then the log is truncated at the start of that line. Removes one line per
        call; returns the saved file, or None when the last line was sound. Raises AuditLogError.
        """
        with self._lock:
            if self._fd is None:
                raise AuditLogError(f"audit log {self.path}: repair after close()")
            try:
                tail = _read_tail(self.path)
                saved = None
                try:
                    if tail.line_number:
                        _parse_line(tail.raw)
                except _BadLineError:
                    saved = self._save_aside(tail.raw)
                    os.truncate(self.path, tail.offset)
                    os.fsync(self._fd)
                    logger.warning(
                        "audit log %s: moved line %d (%d bytes) aside to %s",
                        self.path,
                        tail.line_number,
                        len(tail.raw),
                        saved,
                    )
                self._head, self._damage = self._recover()
            except OSError as exc:
                if isinstance(exc, AuditLogError):
                    raise
                raise AuditLogError(f"audit log {self.path}: repair failed: {exc}") from exc
            return saved

    def _save_aside(self, raw: bytes) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = self.path.with_name(f"{self.path.name}.torn-{stamp}")
        temporary = target.with_name(f".{target.name}.tmp")
        with temporary.open("wb") as stream:
            stream.write(raw)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
        _fsync_directory(self.path.parent)
        return target

    def close(self) -> None:
        """Release the lock and close the file; later appends raise AuditLogError."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)  # closing drops the flock
                self._fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
