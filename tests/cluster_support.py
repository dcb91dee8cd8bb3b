"""A real Redis Cluster on 127.0.0.1 for the cluster tests: three masters (Debian's
redis-server with ``--cluster-enabled yes``) joined by ``redis-cli --cluster create``, each with
an append-only file so a killed master can come back with its data. Every process is killed
when the group's ``with`` block ends."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import pytest
import redis
from ports import free_port
from sentinel_support import RedisProcess
from waiting import wait_until

CREATE_TIMEOUT_SECONDS = 20.0
STATE_TIMEOUT_SECONDS = 20.0
# a master silent this long is marked failing by the others (the default is 15 s)
NODE_TIMEOUT_MILLISECONDS = 1000


def _redis_cli() -> str:
    binary = shutil.which("redis-cli")
    if binary is None:
        pytest.skip("redis-cli is not installed (apt-get install redis-tools)")
    return binary


@dataclass
class RedisClusterGroup:
    """``master_count`` cluster-enabled redis-servers in ``directory``, made one Cluster with
    no replicas (``add_replica`` adds one later)."""

    directory: Path
    master_count: int = 3
    masters: list[RedisProcess] = field(init=False)
    replicas: list[RedisProcess] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.masters = [self._node(f"master{index}") for index in range(self.master_count)]

    def _node(self, name: str) -> RedisProcess:
        port = free_port()
        folder = self.directory / name
        folder.mkdir()
        lines = [
            "bind 127.0.0.1",
            f"port {port}",
            f"dir {folder}",
            "cluster-enabled yes",
            # the bus port defaults to port + 10000, past 65535 for a high ephemeral port
            f"cluster-port {free_port()}",
            # in dir: the node's identity and slots across a restart
            "cluster-config-file nodes.conf",
            f"cluster-node-timeout {NODE_TIMEOUT_MILLISECONDS}",
            "cluster-announce-ip 127.0.0.1",
            'save ""',
            # every write on disk before the reply: a killed master restarts with what it said
            # it had, so a test can tell what was written from what was not
            "appendonly yes",
            "appendfsync always",
            "repl-diskless-sync-delay 0",
        ]
        conf = folder / "redis.conf"
        conf.write_text("\n".join(lines) + "\n")
        return RedisProcess(port, conf)

    @property
    def url(self) -> str:
        """The redis+cluster:// URL naming every master as a seed node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.masters)

    def state_ok(self, nodes: list[RedisProcess] | None = None) -> bool:
        """Whether every node (default: every master and replica) reports cluster_state:ok."""
        for node in nodes if nodes is not None else [*self.masters, *self.replicas]:
            try:
                with node.client() as client:
                    if client.cluster("INFO").get("cluster_state") != "ok":
                        return False
            except redis.RedisError:
                return False
        return True

    def master_of_slot(self, slot: int) -> RedisProcess:
        """The master process that owns ``slot`` (asked of the first master that answers)."""
        for node in self.masters:
            try:
                with node.client() as client:
                    ranges = client.execute_command("CLUSTER", "SLOTS")
            except redis.RedisError:
                continue
            for start, end, owner, *_ in ranges:
                if int(start) <= slot <= int(end):
                    port = int(owner[1])
                    return next(master for master in self.masters if master.port == port)
        raise AssertionError(f"no master answers for slot {slot}")

    def add_replica(self, master: RedisProcess) -> RedisProcess:
        """Start one more node and make it a replica of ``master``; returns it once in sync."""
        replica = self._node(f"replica{len(self.replicas)}")
        replica.start()
        with master.client() as client:
            master_id = client.execute_command("CLUSTER", "MYID").decode()
        subprocess.run(
            [
                _redis_cli(),
                "--cluster",
                "add-node",
                f"127.0.0.1:{replica.port}",
                f"127.0.0.1:{master.port}",
                "--cluster-slave",
                "--cluster-master-id",
                master_id,
            ],
            check=True,
            capture_output=True,
            timeout=CREATE_TIMEOUT_SECONDS,
        )
        self.replicas.append(replica)

        def in_sync() -> bool:
            # the master's view: a replica counts for WAIT once the master has it "online"
            # (after its first ACK), a moment after the replica sees its link up
            with master.client() as client:
                replication = client.info("replication")
            return any(
                isinstance(value, dict) and value.get("state") == "online"
                for name, value in replication.items()
                if name.startswith("slave")
            )

        wait_until(in_sync, STATE_TIMEOUT_SECONDS, "the new replica in sync with its master")
        wait_until(self.state_ok, STATE_TIMEOUT_SECONDS, "cluster_state:ok with the replica")
        return replica

    def start(self) -> None:
        """Start the masters, create the Cluster, and wait for cluster_state:ok on each."""
        for node in self.masters:
            node.start()
        subprocess.run(
            [
                _redis_cli(),
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.masters),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=CREATE_TIMEOUT_SECONDS,
        )
        wait_until(self.state_ok, STATE_TIMEOUT_SECONDS, "cluster_state:ok on every master")

    def stop(self) -> None:
        """Kill every process that still runs."""
        for node in [*self.replicas, *self.masters]:
            node.kill()

    def __enter__(self) -> RedisClusterGroup:
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
