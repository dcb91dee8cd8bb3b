"""Real Redis processes on 127.0.0.1 for the high-availability tests: a master, replicas and
sentinels, all Debian's redis-server binary (``redis-server FILE.conf --sentinel`` is a
sentinel). Every process is killed when the group's ``with`` block ends."""

from __future__ import annotations

import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import pytest
import redis
from ports import free_port
from waiting import wait_until

MASTER_NAME = "facestream"
START_TIMEOUT_SECONDS = 10.0
# sentinels find each other and the replica through hello messages sent every 2 s
DISCOVERY_TIMEOUT_SECONDS = 20.0


def _binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    return binary


@dataclass
class RedisProcess:
    """One redis-server (data node or sentinel) on 127.0.0.1:port, config in ``conf``."""

    port: int
    conf: Path
    sentinel: bool = False
    process: subprocess.Popen[bytes] | None = None

    def start(self, *arguments: str) -> None:
        """Start it (``arguments`` override its config file) and wait until it answers PING."""
        command = [_binary(), str(self.conf), *arguments]
        command += ["--sentinel"] if self.sentinel else []
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(self.answers, START_TIMEOUT_SECONDS, f"redis-server on port {self.port}")

    def client(self) -> redis.Redis:
        """A plain client of this process (bytes responses), short timeouts."""
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=2.0, socket_connect_timeout=2.0
        )

    def answers(self) -> bool:
        """Whether it answers PING now."""
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """kill -9, and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


@dataclass
class SentinelGroup:
    """A master, ``replica_count`` replicas and three sentinels with a short failover."""

    directory: Path
    replica_count: int = 1
    master: RedisProcess = field(init=False)
    replicas: list[RedisProcess] = field(init=False)
    sentinels: list[RedisProcess] = field(init=False)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.master = self._data_node("master", None)
        self.replicas = [
            self._data_node(f"replica{index}", self.master.port)
            for index in range(self.replica_count)
        ]
        self.sentinels = [self._sentinel(index) for index in range(3)]

    def _data_node(self, name: str, master_port: int | None) -> RedisProcess:
        port = free_port()
        folder = self.directory / name
        folder.mkdir()
        lines = [
            "bind 127.0.0.1",
            f"port {port}",
            f"dir {folder}",
            'save ""',
            "appendonly no",
            # a full sync starts at once, not after the default 5 s wait for more replicas
            "repl-diskless-sync-delay 0",
            # a replica must announce the address the sentinels and clients reach it at
            "replica-announce-ip 127.0.0.1",
        ]
        if master_port is not None:
            lines.append(f"replicaof 127.0.0.1 {master_port}")
        conf = folder / "redis.conf"
        conf.write_text("\n".join(lines) + "\n")
        return RedisProcess(port, conf)

    def _sentinel(self, index: int) -> RedisProcess:
        port = free_port()
        folder = self.directory / f"sentinel{index}"
        folder.mkdir()
        conf = folder / "sentinel.conf"  # sentinels rewrite their file: it must be writable
        conf.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {port}",
                    f"dir {folder}",
                    "sentinel announce-ip 127.0.0.1",
                    f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2",
                    f"sentinel down-after-milliseconds {MASTER_NAME} 500",
                    f"sentinel failover-timeout {MASTER_NAME} 3000",
                    f"sentinel parallel-syncs {MASTER_NAME} 1",
                ]
            )
            + "\n"
        )
        return RedisProcess(port, conf, sentinel=True)

    @property
    def url(self) -> str:
        """The redis+sentinel:// URL of the group's master."""
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}"

    def master_port_by_sentinels(self) -> int | None:
        """The master's port as the first answering sentinel reports it."""
        for sentinel in self.sentinels:
            try:
                with sentinel.client() as client:
                    address = client.sentinel_get_master_addr_by_name(MASTER_NAME)
            except redis.RedisError:
                continue
            if address:
                return int(address[1])
        return None

    def _discovered(self) -> bool:
        try:
            for replica in self.replicas:
                with replica.client() as client:
                    if client.info("replication").get("master_link_status") != "up":
                        return False
            for sentinel in self.sentinels:
                with sentinel.client() as client:
                    known_replicas = client.sentinel_slaves(MASTER_NAME)
                    peers = client.sentinel_sentinels(MASTER_NAME)
                if len(known_replicas) < self.replica_count or len(peers) < 2:
                    return False
        except redis.RedisError:
            return False
        return True

    def start(self) -> None:
        """Start every process; wait until each sentinel knows the replicas and its peers
        (a failover needs both)."""
        for node in [self.master, *self.replicas, *self.sentinels]:
            node.start()
        wait_until(
            self._discovered,
            DISCOVERY_TIMEOUT_SECONDS,
            "replicas in sync, sentinels know them and each other",
        )

    def stop(self) -> None:
        """Kill every process that still runs."""
        for node in [*self.sentinels, *self.replicas, self.master]:
            node.kill()

    def __enter__(self) -> SentinelGroup:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
