"""Redis high availability: a gallery Redis watched by Sentinel, and writes that a replica
confirmed before they are acknowledged.

Sentinel URL (``gallery.redis_url``)::

    redis+sentinel://[user[:password]@]host:port[,host:port...]/master_name

The hosts are the sentinels (give all of them: any one that answers is enough); the user and
password, when given, are those of the Redis master and replicas (the sentinels themselves are
asked without one). The client asks the sentinels for the current master on every new
connection, so after a failover it reconnects to the promoted replica by itself. A URL naming a
master no answering sentinel monitors is a ConfigError at connect time.

Replica acknowledgement (``gallery.min_replicas_acked``): Redis replicates asynchronously, so a
write the master answered can be lost when the master dies before a replica copied it. WAIT
blocks until N replicas confirmed *this connection's* last write; it therefore runs on the
connection that ran the transaction's EXEC, right after it (``acknowledged_transaction``), not
on whatever connection the pool hands out next (a fresh one has written nothing, and WAIT
would answer at once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote

import redis
from redis.client import Pipeline
from redis.cluster import RedisCluster
from redis.connection import Connection
from redis.exceptions import WatchError
from redis.sentinel import Sentinel, SentinelConnectionPool

from engines.errors import ConfigError
from pipeline.errors import GalleryUnavailableError
from pipeline.redis.cluster import RedisClient, RedisPipeline, acknowledged_cluster_transaction
from pipeline.redis.urls import parse_credentials, parse_nodes

__all__ = [
    "SENTINEL_SCHEME",
    "SentinelUrl",
    "acknowledged_transaction",
    "is_sentinel_url",
    "parse_sentinel_url",
    "redis_location",
    "sentinel_client",
]

SENTINEL_SCHEME: Final = "redis+sentinel"
_FORM: Final = "redis+sentinel://[user[:password]@]host:port[,host:port...]/master_name"


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """A parsed redis+sentinel:// URL: the sentinels' (host, port) and the master's name;
    username and password are the master's (None: none in the URL)."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log or traceback

    @property
    def hosts(self) -> tuple[str, ...]:
        """The sentinels' host names or addresses."""
        return tuple(host for host, _ in self.sentinels)

    def describe(self) -> str:
        """Where this is, for messages (no password)."""
        where = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"master {self.master_name!r} via sentinels {where}"


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` is a redis+sentinel:// URL."""
    return url.lower().startswith(SENTINEL_SCHEME + "://")


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Parse a redis+sentinel:// URL (see the module docstring); ConfigError when malformed."""
    if not is_sentinel_url(url):
        raise ConfigError(f"not a {SENTINEL_SCHEME}:// URL (expected {_FORM})")
    rest = url[len(SENTINEL_SCHEME) + 3 :]
    authority, slash, path = rest.partition("/")
    credentials, at, hosts = authority.rpartition("@")
    shown = f"{SENTINEL_SCHEME}://{'***@' if at else ''}{hosts}/{path}"
    master_name = unquote(path.split("?", 1)[0].strip("/"))
    if not slash or not master_name or "/" in master_name:
        raise ConfigError(
            f"gallery.redis_url {shown!r}: name the master Redis the sentinels watch after the "
            f"hosts (expected {_FORM})"
        )
    if not hosts:
        raise ConfigError(f"gallery.redis_url {shown!r}: no sentinel given (expected {_FORM})")
    sentinels = parse_nodes(hosts, role="sentinel", shown=shown, form=_FORM)
    username, password = parse_credentials(credentials) if at else (None, None)
    return SentinelUrl(sentinels, master_name, username, password)


def _check_master_known(sentinel: Sentinel, url: SentinelUrl) -> None:
    """ConfigError when the sentinels that answer monitor no master of that name;
    GalleryUnavailableError when none answers."""
    monitored: set[str] = set()
    for client in sentinel.sentinels:
        try:
            masters = client.sentinel_masters()
        except (redis.ConnectionError, redis.TimeoutError):
            continue
        if url.master_name in masters:
            return
        monitored.update(str(name) for name in masters)
        # one answering sentinel that does not know the name is not yet proof: the others
        # may have been configured differently, so every reachable one is asked
    where = ",".join(f"{host}:{port}" for host, port in url.sentinels)
    if monitored or any(_answers(client) for client in sentinel.sentinels):
        raise ConfigError(
            f"gallery.redis_url: no sentinel at {where} monitors a master named "
            f"{url.master_name!r} (they monitor: {sorted(monitored) or 'nothing'}); the name "
            "after the hosts must be the one in the sentinels' `sentinel monitor NAME ...` line"
        )
    raise GalleryUnavailableError(f"no sentinel answered at {where} (asked for {url.describe()})")


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError):
        return False


def sentinel_client(
    url: SentinelUrl, *, password: str | None, timeout_seconds: float
) -> redis.Redis:
    """A client of the master ``url`` names, found through its sentinels (and found again
    after a failover); responses are bytes. ``password`` overrides the URL's.

    ConfigError when no answering sentinel monitors that master; GalleryUnavailableError
    when no sentinel answers.
    """
    timeouts = {"socket_timeout": timeout_seconds, "socket_connect_timeout": timeout_seconds}
    # redis-py leaves Sentinel and master_for unannotated
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(url.sentinels), sentinel_kwargs=dict(timeouts), **timeouts
    )
    _check_master_known(sentinel, url)
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        url.master_name,
        redis_class=redis.Redis,
        username=url.username,
        password=password if password is not None else url.password,
        decode_responses=False,
        **timeouts,
    )
    return client


def redis_location(client: RedisClient) -> str:
    """Where ``client`` talks to, for messages: a socket path, host:port, the Sentinel
    master's name, or a Cluster's seed nodes."""
    if isinstance(client, RedisCluster):
        seeds = client.nodes_manager.startup_nodes.values()
        return "cluster via " + ",".join(f"{node.host}:{node.port}" for node in seeds)
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        return f"sentinel master {pool.service_name!r}"
    connection = client.get_connection_kwargs()
    return str(
        connection.get("path") or f"{connection.get('host', '?')}:{connection.get('port', '?')}"
    )


class _AcknowledgedPipeline(Pipeline):
    """A transaction pipeline that sends WAIT on the connection that ran EXEC, right after a
    successful EXEC and before the connection goes back to the pool (``replicas_acked``)."""

    def __init__(self, client: redis.Redis, replicas: int, timeout_ms: int) -> None:
        self._replicas = replicas
        self._timeout_ms = timeout_ms
        self._committed_on: Connection | None = None
        self.replicas_acked: int | None = None
        super().__init__(client.connection_pool, client.response_callbacks, True, None)

    def _execute_transaction(
        self, connection: Connection, commands: Any, raise_on_error: bool
    ) -> list[Any]:
        result: list[Any] = super()._execute_transaction(connection, commands, raise_on_error)
        self._committed_on = connection  # EXEC succeeded: the writes are on the master
        return result

    # redis-py's Pipeline.reset has this signature too (a Redis command shares the name)
    def reset(self) -> None:  # type: ignore[override]
        # execute() calls reset() in its finally, outside redis-py's retry loop: a WAIT that
        # fails here is reported, never answered by running the whole transaction again
        connection, self._committed_on = self._committed_on, None
        try:
            if connection is not None:
                connection.send_command(  # type: ignore[no-untyped-call]
                    "WAIT", self._replicas, self._timeout_ms
                )
                self.replicas_acked = int(connection.read_response())
        finally:
            super().reset()


def acknowledged_transaction(
    client: RedisClient,
    write: Callable[[RedisPipeline], None],
    watch: str,
    *,
    replicas: int,
    timeout_seconds: float,
) -> int | None:
    """``client.transaction(write, watch)``, then (when ``replicas`` > 0) WAIT for that many
    replicas on the same connection, at most ``timeout_seconds``. On a Cluster that connection
    is to the master owning ``watch``'s slot (``pipeline.redis.cluster``).

    Returns how many replicas confirmed the write (None when none were asked for). Fewer than
    ``replicas`` means the write is on the master only: the caller must not acknowledge it.
    redis-py errors pass through (the caller translates them).
    """
    if replicas == 0:
        client.transaction(write, watch)
        return None
    timeout_ms = max(1, round(timeout_seconds * 1000))
    if isinstance(client, RedisCluster):
        return acknowledged_cluster_transaction(
            client, write, watch, replicas=replicas, timeout_ms=timeout_ms
        )
    pipe = _AcknowledgedPipeline(client, replicas, timeout_ms)
    try:
        while True:
            try:
                pipe.watch(watch)  # type: ignore[no-untyped-call]  # unannotated in redis-py
                write(pipe)
                pipe.execute()  # its reset() sent the WAIT
                return pipe.replicas_acked
            except WatchError:
                continue
    finally:
        pipe.reset()
