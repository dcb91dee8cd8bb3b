"""The hash-chained audit log: appends verify, every kind of tampering is found on the right line,
a torn last line blocks appends until repair, and concurrent appends keep one valid chain."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from engines.errors import FaceStreamError
from pipeline.access.audit import (
    GENESIS_PREV,
    AuditHead,
    AuditLog,
    checkpoint_mac,
    verify_audit_log,
)
from pipeline.errors import AuditEventError, AuditLogCorruptError, AuditLogError

ENTRIES = 10


def _event(index: int) -> dict[str, object]:
    """A door decision as pipeline.access.policy would log it (index picks the identity)."""
    return {"door": "front", "decision": "grant", "identity_id": f"id-{index}", "distance": 0.41}


def _write_log(path: Path, count: int = ENTRIES) -> list[bytes]:
    """Append ``count`` events and return the file's lines, each with its newline."""
    with AuditLog(path) as log:
        for index in range(count):
            log.append(_event(index))
    return path.read_bytes().splitlines(keepends=True)


def _canonical(document: dict[str, object]) -> bytes:
    """The file format written out independently of the module: sorted keys, compact, UTF-8."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _forge(seq: int, prev: str) -> bytes:
    """A line whose own hash is right (recomputed) for the given seq and prev."""
    content: dict[str, object] = {
        "event": {"door": "front", "decision": "grant", "identity_id": "intruder"},
        "prev": prev,
        "seq": seq,
        "ts": "2025-01-01T00:00:00.000000+00:00",
    }
    content["hash"] = hashlib.sha256(_canonical(content)).hexdigest()
    return _canonical(content) + b"\n"


def _digest(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def test_appended_entries_verify_and_follow_the_format(tmp_path: Path) -> None:
    """N appends give N canonical lines, seq 1..N, each prev the SHA-256 of the line before."""
    path = tmp_path / "audit.jsonl"
    lines = _write_log(path)

    report = verify_audit_log(path)

    assert report.ok, report.summary()
    assert (report.lines_checked, report.first_bad_line, report.reason) == (ENTRIES, None, None)
    prev = GENESIS_PREV
    for number, line in enumerate(lines, start=1):
        document = json.loads(line)
        assert _canonical(document) + b"\n" == line
        assert document["seq"] == number
        assert document["prev"] == prev
        assert document["event"] == _event(number - 1)
        content = {key: value for key, value in document.items() if key != "hash"}
        assert document["hash"] == hashlib.sha256(_canonical(content)).hexdigest()
        assert document["ts"].endswith("+00:00")
        prev = _digest(line)


def test_empty_log_verifies_and_missing_log_is_an_error(tmp_path: Path) -> None:
    """An empty file is a valid, empty chain; a missing file raises AuditLogError naming it."""
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    assert verify_audit_log(empty).ok
    assert verify_audit_log(empty).lines_checked == 0

    missing = tmp_path / "missing.jsonl"
    with pytest.raises(AuditLogError, match=r"missing\.jsonl"):
        verify_audit_log(missing)


def _edit_payload(lines: list[bytes]) -> list[bytes]:
    lines[3] = lines[3].replace(b'"id-3"', b'"id-9"')
    return lines


def _delete_middle(lines: list[bytes]) -> list[bytes]:
    del lines[4]
    return lines


def _swap(lines: list[bytes]) -> list[bytes]:
    lines[2], lines[3] = lines[3], lines[2]
    return lines


def _duplicate(lines: list[bytes]) -> list[bytes]:
    lines.insert(4, lines[3])
    return lines


def _insert_forged_wrong_prev(lines: list[bytes]) -> list[bytes]:
    lines.insert(6, _forge(seq=7, prev=_digest(lines[4])))  # prev of line 5, not line 6
    return lines


def _insert_forged_right_prev(lines: list[bytes]) -> list[bytes]:
    lines.insert(6, _forge(seq=7, prev=_digest(lines[5])))  # fits; the old line 7 then clashes
    return lines


def _invalid_json(lines: list[bytes]) -> list[bytes]:
    lines[1] = b'{"event": not json\n'
    return lines


def _add_whitespace(lines: list[bytes]) -> list[bytes]:
    lines[ENTRIES - 1] = lines[ENTRIES - 1].replace(b'","', b'", "', 1)  # same JSON, other bytes
    return lines


def _edit_last_line(lines: list[bytes]) -> list[bytes]:
    lines[ENTRIES - 1] = lines[ENTRIES - 1].replace(b'"grant"', b'"deny!"')
    return lines


def _remove_first_line(lines: list[bytes]) -> list[bytes]:
    return lines[1:]


@pytest.mark.parametrize(
    ("tamper", "bad_line", "reason"),
    [
        (_edit_payload, 4, "hash does not match"),
        (_edit_last_line, ENTRIES, "hash does not match"),
        (_delete_middle, 5, "sequence number 6, expected 5"),
        (_remove_first_line, 1, "sequence number 2, expected 1"),
        (_swap, 3, "sequence number 4, expected 3"),
        (_duplicate, 5, "duplicate sequence number 4"),
        (_insert_forged_wrong_prev, 7, "prev does not match the SHA-256 of line 6"),
        (_insert_forged_right_prev, 8, "duplicate sequence number 7"),
        (_invalid_json, 2, "invalid JSON"),
        (_add_whitespace, ENTRIES, "canonical"),
    ],
    ids=lambda value: getattr(value, "__name__", str(value)).lstrip("_"),
)
def test_tampering_is_found_on_the_right_line(
    tmp_path: Path, tamper: Callable[[list[bytes]], list[bytes]], bad_line: int, reason: str
) -> None:
    """Each kind of tampering makes verify fail, naming the first bad line and what is wrong."""
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"".join(tamper(_write_log(path))))

    report = verify_audit_log(path)

    assert not report.ok
    assert report.first_bad_line == bad_line, report.summary()
    assert report.lines_checked == bad_line
    assert report.reason is not None
    assert reason in report.reason
    assert f"line {bad_line}:" in report.summary()


@pytest.mark.parametrize("cut_line", [ENTRIES, 6])
def test_truncation_mid_line_is_found(tmp_path: Path, cut_line: int) -> None:
    """A file cut in the middle of a line (last line, or everything after a middle one) fails
    on that line as truncated."""
    path = tmp_path / "audit.jsonl"
    lines = _write_log(path)
    kept = b"".join(lines[: cut_line - 1]) + lines[cut_line - 1][:40]
    path.write_bytes(kept)

    report = verify_audit_log(path)

    assert (report.ok, report.first_bad_line) == (False, cut_line)
    assert report.reason is not None
    assert "truncated" in report.reason


def test_reopen_continues_the_chain(tmp_path: Path) -> None:
    """A reopened log recovers seq and digest from its last line and appends after it."""
    path = tmp_path / "audit.jsonl"
    lines = _write_log(path, count=3)

    with AuditLog(path) as log:
        assert log.head.seq == 3
        assert log.head.digest == _digest(lines[-1])
        record = log.append(_event(3))
        log.append(_event(4))

    assert record.seq == 4
    assert record.digest == _digest(path.read_bytes().splitlines(keepends=True)[3])
    report = verify_audit_log(path)
    assert (report.ok, report.lines_checked) == (True, 5)


def test_torn_last_line_blocks_appends_until_repair(tmp_path: Path) -> None:
    """A crash mid-write (partial last line) opens, refuses appends naming file and line, and
    repair() moves the torn bytes aside so the chain continues from the last sound line."""
    path = tmp_path / "audit.jsonl"
    _write_log(path, count=3)
    torn = _forge(seq=4, prev=GENESIS_PREV)[:25]
    with path.open("ab") as stream:
        stream.write(torn)

    with AuditLog(path) as log:
        assert log.damage is not None
        with pytest.raises(AuditLogCorruptError, match=r"audit\.jsonl: line 4 .*truncated"):
            log.append(_event(99))
        assert path.read_bytes().endswith(torn)  # nothing appended after the torn bytes

        saved = log.repair()

        assert saved is not None
        assert saved.read_bytes() == torn
        assert log.damage is None
        assert log.head.seq == 3
        assert log.append(_event(3)).seq == 4
        assert log.repair() is None  # a sound log has nothing to repair

    report = verify_audit_log(path)
    assert (report.ok, report.lines_checked) == (True, 4)


def test_corrupt_terminated_last_line_also_blocks_appends(tmp_path: Path) -> None:
    """A complete but invalid last line (not a torn write) is refused the same way."""
    path = tmp_path / "audit.jsonl"
    _write_log(path, count=2)
    with path.open("ab") as stream:
        stream.write(b"garbage\n")

    with AuditLog(path) as log, pytest.raises(AuditLogCorruptError, match="line 3"):
        log.append(_event(2))


def test_concurrent_appends_from_four_threads_form_one_chain(tmp_path: Path) -> None:
    """4 threads x 50 appends on one AuditLog: 200 lines, seq 1..200, chain valid, none lost."""
    path = tmp_path / "audit.jsonl"
    threads_count, per_thread = 4, 50
    start = threading.Barrier(threads_count)

    with AuditLog(path) as log:

        def worker(thread_index: int) -> None:
            start.wait()
            for index in range(per_thread):
                log.append({"thread": thread_index, "index": index})

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(threads_count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    report = verify_audit_log(path)
    assert report.ok, report.summary()
    assert report.lines_checked == threads_count * per_thread
    events = [json.loads(line)["event"] for line in path.read_bytes().splitlines()]
    assert sorted((e["thread"], e["index"]) for e in events) == [
        (t, i) for t in range(threads_count) for i in range(per_thread)
    ]


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    """Two AuditLogs on one file would fork the chain, so the second open raises."""
    path = tmp_path / "audit.jsonl"
    with AuditLog(path), pytest.raises(AuditLogError, match="another writer"):
        AuditLog(path)
    with AuditLog(path) as reopened:  # the lock went with close()
        assert reopened.head.seq == 0


@pytest.mark.parametrize(
    "event",
    [{"distance": float("nan")}, {"when": object()}, {1: "a", "b": 2}],
    ids=["nan", "object", "mixed-keys"],
)
def test_bad_event_is_refused_and_writes_nothing(
    tmp_path: Path, event: dict[object, object]
) -> None:
    """An event JSON cannot encode raises AuditEventError; the log is unchanged and usable."""
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.append(_event(0))
        size = path.stat().st_size
        with pytest.raises(AuditEventError):
            log.append(event)  # type: ignore[arg-type]  # the point: keys and values JSON refuses
        assert path.stat().st_size == size
        log.append(_event(1))
    assert verify_audit_log(path).ok


def test_append_after_close_raises(tmp_path: Path) -> None:
    """A closed log refuses appends with AuditLogError rather than writing to a stale fd."""
    log = AuditLog(tmp_path / "audit.jsonl")
    log.close()
    with pytest.raises(AuditLogError, match="after close"):
        log.append(_event(0))


@pytest.mark.parametrize(
    ("error", "builtin"),
    [(AuditLogError, OSError), (AuditLogCorruptError, ValueError), (AuditEventError, ValueError)],
)
def test_audit_errors_have_project_root_and_builtin(
    error: type[Exception], builtin: type[Exception]
) -> None:
    """Each audit error is a FaceStreamError and the builtin a caller would catch."""
    assert issubclass(error, FaceStreamError)
    assert issubclass(error, builtin)


def test_cli_audit_verify_names_the_bad_line(tmp_path: Path) -> None:
    """`facestream audit verify` exits 0 on an intact log and 2, naming the line, after a
    line is deleted; --json prints the report."""
    from typer.testing import CliRunner  # noqa: PLC0415

    from pipeline.cli.main import app  # noqa: PLC0415

    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        for index in range(5):
            log.append({"decision": "granted", "index": index})
    runner = CliRunner()
    intact = runner.invoke(app, ["audit", "verify", str(path)])
    assert intact.exit_code == 0, intact.output
    assert "ok" in intact.output
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2] + lines[3:]))
    broken = runner.invoke(app, ["audit", "verify", str(path)])
    assert broken.exit_code == 2
    assert "line 3" in broken.output
    as_json = runner.invoke(app, ["audit", "verify", str(path), "--json"])
    assert as_json.exit_code == 2
    assert '"first_bad_line": 3' in as_json.output


AUDIT_KEY = b"audit-key-kept-away-from-the-log-0123"


def _rewrite(lines: list[bytes], drop: int, rename: tuple[int, str]) -> list[bytes]:
    """The rewrite of issue 23: drop line ``drop`` (1-based), change the identity of line
    ``rename[0]`` to ``rename[1]``, then renumber and recompute every prev and hash, keeping
    each line's MAC as it was (the attacker has no key to recompute it)."""
    documents = [json.loads(line) for index, line in enumerate(lines, 1) if index != drop]
    documents[rename[0] - 1]["event"]["identity_id"] = rename[1]
    rewritten, prev = [], GENESIS_PREV
    for seq, document in enumerate(documents, 1):
        document.update(seq=seq, prev=prev)
        content = {k: v for k, v in document.items() if k not in ("hash", "mac")}
        document["hash"] = hashlib.sha256(_canonical(content)).hexdigest()
        line = _canonical(document)
        rewritten.append(line + b"\n")
        prev = hashlib.sha256(line).hexdigest()
    return rewritten


def test_a_rewritten_log_passes_the_plain_chain_but_not_the_keyed_one(tmp_path: Path) -> None:
    """Issue 23: deleting a line, renaming a person and recomputing the hashes gave "chain
    intact". The plain chain still cannot tell (shown first); with the key, verify reports the
    first rewritten line, and stripping the MACs does not help either."""
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, key=AUDIT_KEY) as log:
        for index in range(ENTRIES):
            log.append(_event(index))
    lines = path.read_bytes().splitlines(keepends=True)
    assert all(b'"mac":' in line for line in lines)
    assert verify_audit_log(path, key=AUDIT_KEY).ok

    path.write_bytes(b"".join(_rewrite(lines, drop=4, rename=(6, "mallory"))))
    assert verify_audit_log(path).ok  # what the attacker counted on
    report = verify_audit_log(path, key=AUDIT_KEY)
    assert not report.ok
    assert report.first_bad_line == 4  # the first line whose content moved
    assert "MAC does not match" in str(report.reason)

    stripped = [json.loads(line) for line in _rewrite(lines, drop=4, rename=(6, "mallory"))]
    for document in stripped:
        del document["mac"]
    path.write_bytes(b"".join(_canonical(document) + b"\n" for document in stripped))
    report = verify_audit_log(path, key=AUDIT_KEY)
    assert (report.ok, report.first_bad_line) == (False, 1)
    assert "no MAC" in str(report.reason)
    wrong_key = verify_audit_log(tmp_path / "audit.jsonl", key=b"another-key-0123456789")
    assert not wrong_key.ok


def test_a_non_ascii_mac_is_a_bad_line_not_a_crash(tmp_path: Path) -> None:
    """A MAC edited to non-ASCII text made hmac.compare_digest raise TypeError out of verify."""
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, key=AUDIT_KEY) as log:
        log.append(_event(0))
    document = json.loads(path.read_bytes())
    document["mac"] = "\u00e9" * 64
    path.write_bytes(_canonical(document) + b"\n")
    report = verify_audit_log(path, key=AUDIT_KEY)
    assert (report.ok, report.first_bad_line) == (False, 1)
    assert "MAC does not match" in str(report.reason)


def test_a_published_head_catches_a_log_cut_short(tmp_path: Path) -> None:
    """Dropping the last lines leaves a valid keyed chain; the head published earlier (a
    decision event's audit_seq/audit_head, or a checkpoint) shows the cut, and a head that
    names another line at that seq shows a rewrite. The checkpoint's MAC verifies under the
    key."""
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, key=AUDIT_KEY) as log:
        for index in range(ENTRIES):
            log.append(_event(index))
        checkpoint = log.checkpoint()
    assert checkpoint.seq == ENTRIES
    assert checkpoint.mac == checkpoint_mac(AUDIT_KEY, checkpoint.seq, checkpoint.digest)
    head = AuditHead(seq=checkpoint.seq, digest=checkpoint.digest)
    assert verify_audit_log(path, key=AUDIT_KEY, expected_head=head).ok

    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-2]))
    assert verify_audit_log(path, key=AUDIT_KEY).ok  # a cut end is a valid chain
    report = verify_audit_log(path, key=AUDIT_KEY, expected_head=head)
    assert not report.ok
    assert "cut off the end" in str(report.reason)
    other = AuditHead(seq=3, digest="0" * 64)
    report = verify_audit_log(path, key=AUDIT_KEY, expected_head=other)
    assert (report.ok, report.first_bad_line) == (False, 3)


def test_audit_verify_command_takes_the_key_from_a_file(tmp_path: Path) -> None:
    """`facestream audit verify --key-file` exits 2 on the rewritten log and 0 on the genuine
    one; without a key it says the MACs were not checked."""
    from typer.testing import CliRunner  # noqa: PLC0415

    from pipeline.cli.main import app  # noqa: PLC0415

    path = tmp_path / "audit.jsonl"
    with AuditLog(path, key=AUDIT_KEY) as log:
        for index in range(4):
            log.append(_event(index))
    key_file = tmp_path / "audit.key"
    key_file.write_bytes(AUDIT_KEY + b"\n")
    runner = CliRunner()
    genuine = runner.invoke(app, ["audit", "verify", str(path), "--key-file", str(key_file)])
    assert genuine.exit_code == 0, genuine.output
    assert "every MAC checked" in genuine.output
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(_rewrite(lines, drop=2, rename=(2, "mallory"))))
    unkeyed = runner.invoke(app, ["audit", "verify", str(path)])
    assert unkeyed.exit_code == 0
    assert "no key given" in unkeyed.output
    keyed = runner.invoke(app, ["audit", "verify", str(path), "--key-file", str(key_file)])
    assert keyed.exit_code == 2
    assert "MAC does not match" in keyed.output
