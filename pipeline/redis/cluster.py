"""Redis Cluster: the gallery's and the events' keys spread over several masters.

Cluster URL (``gallery.redis_url``)::

    redis+cluster://[user[:password]@]host:port[,host:port...]

The hosts are seed nodes (give several: any one that answers is enough); the client asks it
for the slot map and then talks to the master owning each key's slot, following MOVED/ASK
redirections after a resharding or a failover. The user and password are the nodes' (one ACL
on every node).

What a Cluster asks of the code, and how facestream meets it:

- A MULTI/EXEC transaction, a WATCH and a Lua script may only touch keys of one slot. Every
  key of one room shares a hash tag (``fs:{gallery}:...``, ``fs:{events}:...``): keys used
  together hash to one slot; different rooms (and namespaces) land on different masters.
- PUBLISH names no key, so a Cluster transaction (one slot, one node) cannot carry it: the
  gallery announces its changes with SPUBLISH on ``fs:{gallery}:changes`` (same slot, inside
  the same EXEC) and follows them with SSUBSCRIBE on the master owning that slot
  (``publish_command``).
- WAIT answers for *this connection's* last write: it runs on the connection that ran the
  EXEC, which is a connection to the master owning the slot
  (``acknowledged_cluster_transaction``), so ``gallery.min_replicas_acked`` counts that
  master's replicas.
- A master that is down fails every command of its slots; PING sent to "the cluster" answers
  from any live node. Readiness therefore asks every master and the cluster state
  (``cluster_problem``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

import redis
from redis.client import Pipeline
from redis.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.exceptions import RedisClusterException, WatchError

from engines.errors import ConfigError
from pipeline.errors import GalleryUnavailableError
from pipeline.redis.urls import parse_credentials, parse_nodes

__all__ = [
    "CLUSTER_SCHEME",
    "ClusterUrl",
    "RedisClient",
    "RedisPipeline",
    "acknowledged_cluster_transaction",
    "cluster_client",
    "cluster_problem",
    "is_cluster_url",
    "parse_cluster_url",
    "publish_command",
    "redis_problem",
]

CLUSTER_SCHEME: Final = "redis+cluster"
_FORM: Final = "redis+cluster://[user[:password]@]host:port[,host:port...]"

RedisClient: TypeAlias = redis.Redis | RedisCluster
"""A client of one Redis (plain, or a Sentinel master) or of a Redis Cluster; bytes responses."""
RedisPipeline: TypeAlias = Pipeline | ClusterPipeline
"""The pipeline a transaction's write function gets from a ``RedisClient``."""


@dataclass(frozen=True, slots=True)
class ClusterUrl:
    """A parsed redis+cluster:// URL: the seed nodes' (host, port); username and password are
    the nodes' (None: none in the URL)."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log or traceback

    @property
    def hosts(self) -> tuple[str, ...]:
        """The seed nodes' host names or addresses."""
        return tuple(host for host, _ in self.nodes)

    def describe(self) -> str:
        """Where this is, for messages (no password)."""
        return "cluster via " + ",".join(f"{host}:{port}" for host, port in self.nodes)


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` is a redis+cluster:// URL."""
    return url.lower().startswith(CLUSTER_SCHEME + "://")


def parse_cluster_url(url: str) -> ClusterUrl:
    """Parse a redis+cluster:// URL (see the module docstring); ConfigError when malformed."""
    if not is_cluster_url(url):
        raise ConfigError(f"not a {CLUSTER_SCHEME}:// URL (expected {_FORM})")
    rest = url[len(CLUSTER_SCHEME) + 3 :]
    authority, slash, path = rest.partition("/")
    credentials, at, hosts = authority.rpartition("@")
    shown = f"{CLUSTER_SCHEME}://{'***@' if at else ''}{hosts}{slash}{path}"
    if path.strip("/"):
        # a database number or a master name means the URL was meant for something else
        raise ConfigError(
            f"gallery.redis_url {shown!r}: a Cluster URL has nothing after the nodes (a Cluster "
            f"has one database and no master name; expected {_FORM})"
        )
    if not hosts:
        raise ConfigError(f"gallery.redis_url {shown!r}: no node given (expected {_FORM})")
    nodes = parse_nodes(hosts, role="node", shown=shown, form=_FORM)
    username, password = parse_credentials(credentials) if at else (None, None)
    return ClusterUrl(nodes, username, password)


def cluster_client(
    url: ClusterUrl, *, password: str | None, timeout_seconds: float
) -> RedisCluster:
    """A Redis Cluster client seeded with ``url``'s nodes; responses are bytes. ``password``
    overrides the URL's.

    GalleryUnavailableError when no seed node answers; ConfigError when the nodes answer but
    are not a Cluster (a plain Redis wants a redis:// URL).
    """
    try:
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in url.nodes],
            username=url.username,
            password=password if password is not None else url.password,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            decode_responses=False,
        )
    except RedisClusterException as exc:
        if "cluster mode is not enabled" in str(exc).lower():
            raise ConfigError(
                f"gallery.redis_url: the Redis at {url.describe()} is not a Cluster (cluster "
                "mode is not enabled there); use a redis:// URL for a single Redis"
            ) from exc
        raise GalleryUnavailableError(
            f"no Redis Cluster node answered at {url.describe()}: {exc}"
        ) from exc
    except redis.RedisError as exc:  # an AUTH refusal, a timeout on every seed
        raise GalleryUnavailableError(
            f"cannot open the Redis Cluster at {url.describe()}: {exc}"
        ) from exc


def publish_command(client: RedisClient) -> str:
    """The command that announces a change inside a transaction: PUBLISH on one Redis; on a
    Cluster, SPUBLISH (sharded pub/sub: its channel hashes to a slot, so it may share the
    transaction's slot, where PUBLISH may not run at all)."""
    return "SPUBLISH" if isinstance(client, RedisCluster) else "PUBLISH"


def cluster_problem(client: RedisCluster) -> str | None:
    """What stops the Cluster from serving every slot, for /readyz (None: nothing): a master
    that does not answer PING, or a cluster state other than ok. Asks each master, since a
    plain PING answers from any live node while a dead master's slots fail."""
    for node in client.get_primaries():
        where = f"{node.host}:{node.port}"
        try:
            client.ping(target_nodes=node)
            info = client.cluster_info(target_nodes=node)
        except (redis.RedisError, RedisClusterException) as exc:
            return f"redis cluster: master {where} does not answer ({exc})"
        state = info.get("cluster_state")  # redis-py decodes CLUSTER INFO to str values
        if state != "ok":
            failing = info.get("cluster_slots_fail", "?")
            return f"redis cluster: {where} reports cluster_state {state} ({failing} slots failing)"
    return None


def redis_problem(client: RedisClient) -> str | None:
    """Why ``client``'s Redis cannot serve now, for /readyz (None: it can): PING on one Redis;
    every master and the cluster state on a Cluster (``cluster_problem``)."""
    if isinstance(client, RedisCluster):
        return cluster_problem(client)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        return f"redis: {exc}"
    return None


def acknowledged_cluster_transaction(
    client: RedisCluster,
    write: Callable[[RedisPipeline], None],
    watch: str,
    *,
    replicas: int,
    timeout_ms: int,
) -> int:
    """``client.transaction(write, watch)`` on a Cluster, then WAIT for ``replicas`` replicas
    (at most ``timeout_ms``) on the connection that ran the EXEC: a connection to the master
    owning ``watch``'s slot. Returns how many replicas confirmed the write.

    Reads redis-py's TransactionStrategy (8.1): ``execute`` on the pipeline would release the
    EXEC's connection in its ``finally``, so the strategy's ``execute`` runs instead and the
    WAIT goes out before ``reset`` hands that connection back.
    """
    pipe = client.pipeline(transaction=True)
    strategy: Any = pipe._execution_strategy
    try:
        while True:
            try:
                pipe.watch(watch)
                write(pipe)
                strategy.execute(True)
            except WatchError:
                pipe.reset()
                continue
            connection = strategy._transaction_connection  # the EXEC's, still held
            connection.send_command("WAIT", replicas, timeout_ms)
            return int(connection.read_response())
    finally:
        pipe.reset()
