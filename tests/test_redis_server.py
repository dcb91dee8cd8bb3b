"""The embedded Redis launcher against the real redis-server binary, on unix sockets only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from engines.errors import FaceStreamError
from pipeline.config.service import EmbeddedRedisConfig
from pipeline.errors import RedisServerError
from pipeline.redis.server import BINARY_ENVIRONMENT_VARIABLE, EmbeddedRedis, locate_redis_server

READY_SECONDS = 10.0
POLL_SECONDS = 0.02


def _gone(process_id: int) -> bool:
    """True when the process no longer exists or is a zombie nobody reaped yet."""
    try:
        stat = Path(f"/proc/{process_id}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


def _wait_until_gone(process_id: int, timeout_seconds: float) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if _gone(process_id):
            return True
        time.sleep(POLL_SECONDS)
    return _gone(process_id)


def test_server_answers_on_its_unix_socket_and_stops(server: EmbeddedRedis) -> None:
    """The server answers PING at its unix:// URL with AOF on, and stop() ends the process."""
    assert server.url.startswith("unix://")
    client = redis.Redis.from_url(server.url)
    try:
        assert client.ping()
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        assert client.config_get("port") == {"port": "0"}  # no TCP listener at all
    finally:
        client.close()
    process_id = server.process_id
    server.stop()
    assert not server.running
    assert _wait_until_gone(process_id, timeout_seconds=5.0)
    server.stop()  # idempotent


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    """A write Redis acknowledged is in the AOF: it survives SIGKILL and a restart."""
    data_dir = tmp_path / "redis"
    with EmbeddedRedis(data_dir) as first:
        first.wait_ready(timeout_seconds=READY_SECONDS)
        client = redis.Redis.from_url(first.url)
        client.set("facestream:test", b"kept")
        client.close()
        os.kill(first.process_id, signal.SIGKILL)
        assert _wait_until_gone(first.process_id, timeout_seconds=5.0)
    with EmbeddedRedis(data_dir) as second:
        second.wait_ready(timeout_seconds=READY_SECONDS)
        assert second.url == first.url  # same data dir, same socket: clients reconnect
        client = redis.Redis.from_url(second.url)
        try:
            assert client.get("facestream:test") == b"kept"
        finally:
            client.close()


def test_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    """No binary on PATH, or a bad env var, raises RedisServerError saying what to do."""
    with pytest.raises(RedisServerError, match="apt-get install redis-server"):
        locate_redis_server({"PATH": str(tmp_path)})
    with pytest.raises(RedisServerError, match=BINARY_ENVIRONMENT_VARIABLE):
        locate_redis_server({BINARY_ENVIRONMENT_VARIABLE: str(tmp_path / "missing")})
    assert issubclass(RedisServerError, FaceStreamError)
    assert issubclass(RedisServerError, RuntimeError)


def test_server_that_exits_at_once_is_reported(tmp_path: Path) -> None:
    """A binary that exits instead of serving makes wait_ready raise, naming the exit code."""
    with (
        EmbeddedRedis(tmp_path / "redis", binary=Path("/bin/false")) as server,
        pytest.raises(RedisServerError, match="exited with code 1"),
    ):
        server.wait_ready(timeout_seconds=READY_SECONDS)


def test_server_that_never_answers_times_out_and_is_killed(tmp_path: Path) -> None:
    """A process that never answers PING fails wait_ready at its deadline; stop() ends it."""
    silent = tmp_path / "silent-server"
    silent.write_text("#!/bin/sh\nexec sleep 60\n")
    silent.chmod(0o755)
    config = EmbeddedRedisConfig(stop_timeout_seconds=2.0)
    server = EmbeddedRedis(tmp_path / "redis", config, binary=silent)
    server.start()
    try:
        with pytest.raises(RedisServerError, match="did not answer PING"):
            server.wait_ready(timeout_seconds=0.3)
        process_id = server.process_id
    finally:
        server.stop()
    assert _wait_until_gone(process_id, timeout_seconds=5.0)


def test_server_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """SIGKILL of the owning Python process leaves no orphan: the kernel stops the server."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from pipeline.redis.server import EmbeddedRedis\n"
        "server = EmbeddedRedis(Path(sys.argv[1]))\n"
        "server.start()\n"
        "server.wait_ready(timeout_seconds=10)\n"
        "print(server.process_id, flush=True)\n"
        "time.sleep(60)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "redis")],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert owner.stdout is not None
        server_id = int(owner.stdout.readline())
        assert not _gone(server_id)
    finally:
        owner.kill()
        owner.wait(timeout=10)
        if owner.stdout is not None:
            owner.stdout.close()
    assert _wait_until_gone(server_id, timeout_seconds=5.0)
