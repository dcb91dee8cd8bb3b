"""The embedded Redis: a real ``redis-server`` child process on a unix socket under a data dir.

Used when no Redis URL is configured, and by the tests. The server listens on a unix socket
only (``--port 0`` turns TCP off), keeps its data in the data dir, and has AOF persistence on
by default with ``appendfsync always``: every write is in the append-only file and fsynced
before Redis replies, so nothing acknowledged is lost to a killed server or a power loss.
``everysec`` is not enough for that: while a background fsync is slow (a busy disk or CPU),
Redis 7.0 postpones writing the AOF buffer for up to 2 s but still replies, so a SIGKILL in
that window loses acknowledged writes (the Redis chaos test caught one under load).

The data dir holds face templates, so it is private: the folder is made (or tightened to)
0700, the server runs with umask 077 (its AOF files are 0600, its folders 0700), and files an
older version left readable are made private at start. The socket is ``data_dir/redis.sock``;
a path too long for a unix socket puts it in a fresh private folder from ``mkdtemp`` (0700,
an unguessable name) instead of a fixed /tmp name another local user could take first; the
folder's path is kept in ``data_dir/redis.sock.path``, so a restarted server, and another
command on the same data dir, find the same socket.

The binary is ``$FACESTREAM_REDIS_SERVER`` when set, else ``redis-server`` on PATH. The server
is stopped (SIGTERM, then SIGKILL after ``stop_timeout_seconds``) by ``stop()``, on leaving the
``with`` block, when the object is garbage collected, and at interpreter exit; on Linux it also
gets SIGTERM from the kernel if the process that started it dies, so it is never orphaned.
(That signal follows the *thread* that called ``start()``: start it from a long-lived thread,
normally the main one.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import redis

from pipeline.config.service import EmbeddedRedisConfig
from pipeline.errors import RedisServerError

__all__ = [
    "BINARY_ENVIRONMENT_VARIABLE",
    "EmbeddedRedis",
    "locate_redis_server",
    "make_private_dir",
    "running_embedded_url",
]

LOGGER = logging.getLogger(__name__)

BINARY_ENVIRONMENT_VARIABLE = "FACESTREAM_REDIS_SERVER"
_SOCKET_NAME = "redis.sock"
_SOCKET_POINTER_NAME = "redis.sock.path"  # where the socket is when data_dir is too long
_PRIVATE_DIR_MODE = 0o700
_PRIVATE_FILE_MODE = 0o600
_CHILD_UMASK = 0o077
_LOG_NAME = "redis-server.log"
# sockaddr_un.sun_path holds 108 bytes on Linux, including the terminating NUL
_MAX_SOCKET_PATH_BYTES = 100
_POLL_INTERVAL_SECONDS = 0.01
_PR_SET_PDEATHSIG = 1


def locate_redis_server(environment: Mapping[str, str] | None = None) -> Path:
    """The redis-server binary: ``$FACESTREAM_REDIS_SERVER``, else ``redis-server`` on PATH.

    ``environment`` defaults to ``os.environ``. Raises RedisServerError naming both places
    when neither gives an executable file.
    """
    environment = os.environ if environment is None else environment
    configured = environment.get(BINARY_ENVIRONMENT_VARIABLE)
    if configured:
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise RedisServerError(
                f"{BINARY_ENVIRONMENT_VARIABLE}={configured}: not an executable file"
            )
        return path
    found = shutil.which("redis-server", path=environment.get("PATH"))
    if found is None:
        raise RedisServerError(
            "no redis-server binary: install Debian's redis-server (apt-get install "
            f"redis-server) or set {BINARY_ENVIRONMENT_VARIABLE} to the server's path"
        )
    return Path(found)


def make_private_dir(path: Path) -> None:
    """Make ``path`` (and missing parents) a folder only its owner can enter: 0700, also when
    it existed with a wider mode. A folder of another user's is left as it is (chmod fails)."""
    path.mkdir(mode=_PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != _PRIVATE_DIR_MODE and path.stat().st_uid == os.getuid():
        path.chmod(_PRIVATE_DIR_MODE)


def _make_tree_private(root: Path) -> None:
    """Folders under ``root`` 0700, files 0600: what an older version (umask 022) left."""
    for directory, folders, files in os.walk(root):
        for name in folders:
            os.chmod(os.path.join(directory, name), _PRIVATE_DIR_MODE, follow_symlinks=False)
        for name in files:
            full = os.path.join(directory, name)
            if stat.S_ISREG(os.lstat(full).st_mode):  # not links, not a live server's socket
                os.chmod(full, _PRIVATE_FILE_MODE)


def _private_folder(path: Path) -> bool:
    """Whether ``path`` is a real folder (not a link) of this user's that nobody else may
    enter: only then is a socket in it ours."""
    try:
        status = path.lstat()
    except OSError:
        return False
    return (
        stat.S_ISDIR(status.st_mode)
        and status.st_uid == os.getuid()
        and status.st_mode & 0o077 == 0
    )


def _socket_path(data_dir: Path, *, create: bool) -> Path | None:
    """``data_dir/redis.sock``, or, when that is too long for a unix socket, ``redis.sock`` in
    the private folder ``data_dir/redis.sock.path`` names (made with ``mkdtemp`` and recorded
    there when ``create``; None when there is none yet and not ``create``)."""
    preferred = data_dir / _SOCKET_NAME
    if len(os.fsencode(preferred)) <= _MAX_SOCKET_PATH_BYTES:
        return preferred
    pointer = data_dir / _SOCKET_POINTER_NAME
    try:
        recorded = Path(pointer.read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError):
        recorded = None
    if recorded is not None and _private_folder(recorded):
        return recorded / _SOCKET_NAME
    if not create:
        return None
    folder = Path(tempfile.mkdtemp(prefix="facestream-redis-"))  # 0700, unguessable name
    descriptor = os.open(pointer, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _PRIVATE_FILE_MODE)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(f"{folder}\n")
    return folder / _SOCKET_NAME


def running_embedded_url(data_dir: Path, timeout_seconds: float = 1.0) -> str | None:
    """The URL of an embedded server another process runs on ``data_dir``, if one answers PING.

    Lets a second command (``facestream enroll`` beside ``facestream run``) share the running
    server instead of starting its own on the same files.
    """
    socket_path = _socket_path(Path(data_dir).resolve(), create=False)
    if socket_path is None or not socket_path.exists():
        return None
    url = f"unix://{socket_path}"
    client = redis.Redis.from_url(
        url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
    )
    try:
        client.ping()
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()
    return url


def _prepare_child() -> None:
    """In the child before exec: umask 077 (the AOF holds face templates) and SIGTERM from
    Linux when the parent thread exits."""
    os.umask(_CHILD_UMASK)
    library = ctypes.util.find_library("c")
    if library is None:
        return
    ctypes.CDLL(library, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _terminate(process: subprocess.Popen[bytes], timeout_seconds: float) -> None:
    """SIGTERM (Redis then flushes its AOF and exits), SIGKILL after ``timeout_seconds``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        LOGGER.warning(
            "redis-server pid %d ignored SIGTERM for %.1f s; killing it",
            process.pid,
            timeout_seconds,
        )
        process.kill()
        process.wait()


class EmbeddedRedis:
    """A redis-server child process listening on a unix socket under ``data_dir``.

    ``data_dir`` holds the AOF (``appendonlydir/``), the server log and, when its path is
    short enough, the socket. Use as a context manager, or call ``start()`` and ``stop()``::

        with EmbeddedRedis(data_dir) as server:
            server.wait_ready(timeout_seconds=10)
            client = redis.Redis.from_url(server.url)

    Starting again on the same data dir loads what the previous server persisted.
    """

    def __init__(
        self,
        data_dir: Path,
        config: EmbeddedRedisConfig | None = None,
        *,
        binary: Path | None = None,
    ) -> None:
        """Prepare (not start) a server; ``binary`` None means ``locate_redis_server()``."""
        self._data_dir = Path(data_dir).resolve()
        self._config = config if config is not None else EmbeddedRedisConfig()
        self._binary = binary
        self._socket_path = _socket_path(self._data_dir, create=False)
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: (
            weakref.finalize[[subprocess.Popen[bytes], float], EmbeddedRedis] | None
        ) = None

    @property
    def url(self) -> str:
        """``unix://`` URL of the server's socket, for ``redis.Redis.from_url``."""
        return f"unix://{self.socket_path}"

    @property
    def socket_path(self) -> Path:
        """The unix socket the server listens on (known once started, or when a server
        already ran on this data dir)."""
        if self._socket_path is None:
            raise RedisServerError(f"redis-server for {self._data_dir} was not started")
        return self._socket_path

    @property
    def data_dir(self) -> Path:
        """The directory holding the AOF and the server log."""
        return self._data_dir

    @property
    def process_id(self) -> int:
        """The server's process id; RedisServerError when it was not started."""
        return self._running_process().pid

    @property
    def running(self) -> bool:
        """True while the child process exists and has not exited."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server process (returns at once; then call ``wait_ready``)."""
        if self.running:
            raise RedisServerError(f"redis-server for {self._data_dir} is already running")
        binary = self._binary if self._binary is not None else locate_redis_server()
        make_private_dir(self._data_dir)
        _make_tree_private(self._data_dir)
        self._socket_path = _socket_path(self._data_dir, create=True)
        assert self._socket_path is not None  # create=True always gives one
        # a socket left by a killed server would make clients connect to nothing
        self._socket_path.unlink(missing_ok=True)
        arguments = [
            str(binary),
            "--port", "0",
            "--unixsocket", str(self._socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self._data_dir),
            "--logfile", _LOG_NAME,
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "yes" if self._config.appendonly else "no",
            "--appendfsync", self._config.appendfsync,
        ]  # fmt: skip
        try:
            process = subprocess.Popen(
                arguments,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,  # Ctrl-C reaches us, and we stop the server in order
                preexec_fn=_prepare_child,  # noqa: PLW1509 - only calls prctl before exec
            )
        except OSError as exc:
            raise RedisServerError(f"cannot start {binary}: {exc}") from exc
        self._process = process
        self._finalizer = weakref.finalize(
            self, _terminate, process, self._config.stop_timeout_seconds
        )
        LOGGER.info(
            "started redis-server pid %d on %s (data %s, appendonly %s, appendfsync %s)",
            process.pid,
            self._socket_path,
            self._data_dir,
            self._config.appendonly,
            self._config.appendfsync,
        )

    def wait_ready(self, timeout_seconds: float | None = None) -> None:
        """Poll PING until the server answers or ``timeout_seconds`` pass (config default).

        Raises RedisServerError, with the end of the server log, if the process exits or the
        deadline passes first.
        """
        timeout_seconds = (
            self._config.ready_timeout_seconds if timeout_seconds is None else timeout_seconds
        )
        process = self._running_process()
        deadline = time.monotonic() + timeout_seconds
        client = redis.Redis(
            unix_socket_path=str(self.socket_path),
            socket_timeout=_POLL_INTERVAL_SECONDS * 10,
            socket_connect_timeout=_POLL_INTERVAL_SECONDS * 10,
        )
        try:
            while True:
                if process.poll() is not None:
                    raise RedisServerError(
                        f"redis-server for {self._data_dir} exited with code "
                        f"{process.returncode}: {self._log_tail()}"
                    )
                try:
                    if client.ping():
                        LOGGER.info("redis-server pid %d is ready", process.pid)
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                    pass  # not listening yet, or still loading the AOF
                if time.monotonic() >= deadline:
                    raise RedisServerError(
                        f"redis-server pid {process.pid} did not answer PING on "
                        f"{self.socket_path} within {timeout_seconds} s: {self._log_tail()}"
                    )
                time.sleep(_POLL_INTERVAL_SECONDS)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after ``stop_timeout_seconds``. Idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        _terminate(process, self._config.stop_timeout_seconds)
        if process.stderr is not None:
            process.stderr.close()
        LOGGER.info("redis-server pid %d stopped (exit code %s)", process.pid, process.returncode)

    def __enter__(self) -> EmbeddedRedis:
        """Start the server; the caller still waits with ``wait_ready``."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    def _running_process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RedisServerError(f"redis-server for {self._data_dir} was not started")
        return self._process

    def _log_tail(self, lines: int = 5) -> str:
        """The last lines of the server log and stderr, for error messages."""
        parts: list[str] = []
        try:
            text = (self._data_dir / _LOG_NAME).read_text(encoding="utf-8", errors="replace")
            parts.extend(text.splitlines()[-lines:])
        except OSError:
            pass
        process = self._process
        if process is not None and process.poll() is not None and process.stderr is not None:
            stderr = process.stderr.read().decode("utf-8", errors="replace")
            parts.extend(stderr.splitlines()[-lines:])
        return " | ".join(parts) if parts else "(no server log)"
