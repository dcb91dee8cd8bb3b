"""Redis that is not open: a network Redis without a password is refused (the shipped compose
file and configmap used exactly that), the ACL the compose file and k8s give Redis lets
facestream work and nothing else in, and the embedded server's socket never sits at a
guessable /tmp path when the data dir is long."""

from __future__ import annotations

import logging
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from ports import free_port
from waiting import wait_until

from engines.errors import ConfigError
from pipeline.config.service import GalleryConfig
from pipeline.gallery.store import connect
from pipeline.redis.server import EmbeddedRedis, running_embedded_url

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PASSWORD = "0123456789abcdef0123456789abcdef"
START_SECONDS = 10.0


def test_a_network_redis_without_a_password_is_refused(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("FACESTREAM_REDIS_PASSWORD", raising=False)
    monkeypatch.delenv("FACESTREAM_REDIS_PASSWORD_FILE", raising=False)
    for url in ("redis://redis:6379/0", "redis://10.0.0.7:6379/0", "rediss://cache.example/0"):
        with pytest.raises(ConfigError, match="allow_insecure_redis"):
            connect(url, GalleryConfig())
    # a password in the URL, in a file, or a Redis on this machine: accepted (nothing connects
    # until the first command)
    connect(f"redis://facestream:{PASSWORD}@redis:6379/0").close()
    secret = tmp_path / "redis-password"
    secret.write_text(PASSWORD + "\n")
    client = connect("redis://facestream@redis:6379/0", GalleryConfig(redis_password_file=secret))
    assert client.get_connection_kwargs()["password"] == PASSWORD
    client.close()
    connect("redis://127.0.0.1:6379/0").close()
    connect("redis://localhost:6379/0").close()
    with caplog.at_level(logging.WARNING):
        connect("redis://redis:6379/0", GalleryConfig(allow_insecure_redis=True)).close()
    assert "allow_insecure_redis" in caplog.text


def _acl_line(compose_command: str) -> str:
    """The ACL printf of deploy/compose.yaml's Redis, with the password filled in."""
    template = re.search(r"printf '([^']*)'", compose_command)
    assert template is not None, compose_command
    return template.group(1).replace("\\n", "\n").replace("%s", PASSWORD)


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[int]:
    """A real redis-server on 127.0.0.1 with the ACL the compose file writes; its port."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    acl = tmp_path / "users.acl"
    acl.write_text(_acl_line(" ".join(compose["services"]["redis"]["command"])))
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--aclfile",
         str(acl), "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        probe = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)

        def answers() -> bool:
            try:
                probe.ping()
            except redis.AuthenticationError:
                return True  # up, and refusing the default user
            except redis.RedisError:
                return False
            return True

        wait_until(answers, START_SECONDS, "the ACL redis-server answering")
        probe.close()
        yield port
    finally:
        process.terminate()
        process.wait(10)


def test_the_shipped_acl_lets_facestream_in_and_nobody_else(
    acl_redis: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACESTREAM_REDIS_PASSWORD", PASSWORD)
    client = connect(f"redis://facestream@127.0.0.1:{acl_redis}/0")
    try:
        # what the gallery and the events do: hashes, transactions, scripts, streams, pub/sub
        client.hset("fs:{gallery}:identities", "x", b"{}")
        with client.pipeline(transaction=True) as pipe:  # MULTI/EXEC
            pipe.incr("fs:{gallery}:version")
            pipe.execute()
        assert client.eval("return redis.call('GET', KEYS[1])", 1, "fs:{gallery}:version") == b"1"
        client.xadd("fs:{events}:stream", {"event": b"{}"})
        client.publish("fs:{gallery}:changes", b"{}")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set("other-app:key", b"x")  # outside fs:*
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.flushall()  # @dangerous
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.config_get("requirepass")  # @admin
    finally:
        client.close()
    anonymous = redis.Redis(host="127.0.0.1", port=acl_redis, socket_timeout=2)
    with pytest.raises(redis.AuthenticationError):
        anonymous.hset("fs:{gallery}:identities", "mallory", b"{}")
    anonymous.close()


def test_a_long_data_dir_puts_the_socket_in_a_private_unguessable_folder(
    tmp_path: Path,
) -> None:
    """The old fallback was /tmp/facestream-redis-<sha256(data_dir)[:16]>.sock: another local
    user could compute it and bind it first."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    data_dir = (tmp_path / ("long-" * 25)).resolve()
    with EmbeddedRedis(data_dir) as first:
        first.wait_ready(timeout_seconds=START_SECONDS)
        socket_path = first.socket_path
        folder = socket_path.parent
        assert not socket_path.name.startswith("facestream-redis-")  # not the old fixed name
        assert folder != Path(tempfile.gettempdir())
        status = folder.lstat()
        assert stat.S_ISDIR(status.st_mode)
        assert stat.S_IMODE(status.st_mode) == 0o700
        assert running_embedded_url(data_dir) == first.url  # another command finds it
    with EmbeddedRedis(data_dir) as second:  # a restart listens where clients look
        second.wait_ready(timeout_seconds=START_SECONDS)
        assert second.socket_path == socket_path
    # a folder swapped for one anybody can enter is not trusted: a new private one is made
    folder.chmod(0o755)
    with EmbeddedRedis(data_dir) as third:
        third.wait_ready(timeout_seconds=START_SECONDS)
        assert third.socket_path.parent != folder
        assert stat.S_IMODE(third.socket_path.parent.stat().st_mode) == 0o700


def test_files_an_older_version_left_readable_are_made_private(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    redis_dir = tmp_path / "redis"
    (redis_dir / "appendonlydir").mkdir(parents=True, mode=0o755)
    redis_dir.chmod(0o755)
    old_log = redis_dir / "redis-server.log"
    old_log.write_text("old\n")
    old_log.chmod(0o644)
    with EmbeddedRedis(redis_dir) as server:
        server.wait_ready(timeout_seconds=START_SECONDS)
        assert stat.S_IMODE(redis_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((redis_dir / "appendonlydir").stat().st_mode) == 0o700
        assert stat.S_IMODE(old_log.stat().st_mode) == 0o600
        aof_files = list((redis_dir / "appendonlydir").iterdir())
        assert aof_files
        assert {stat.S_IMODE(path.stat().st_mode) for path in aof_files} == {0o600}
