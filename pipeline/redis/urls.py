"""The parts that Sentinel and Cluster URLs share: a comma-separated list of ``host:port``
nodes and ``user:password@`` credentials (percent-encoded), parsed with messages that name
the bad part and never show a password."""

from __future__ import annotations

from urllib.parse import unquote

from engines.errors import ConfigError

__all__ = ["parse_credentials", "parse_nodes"]


def parse_nodes(hosts: str, *, role: str, shown: str, form: str) -> tuple[tuple[str, int], ...]:
    """``host:port[,host:port...]`` as (host, port) pairs; ConfigError naming the first item
    that is not one (``role``: "node", "sentinel"; ``shown``: the URL without its password;
    ``form``: the expected form, for the message)."""
    addresses = []
    for item in hosts.split(","):
        host, colon, port = item.rpartition(":")
        host = host.strip("[]")  # an IPv6 address in brackets
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"gallery.redis_url {shown!r}: {role} {item!r} is not host:port (expected {form})"
            )
        addresses.append((host, int(port)))
    return tuple(addresses)


def parse_credentials(credentials: str) -> tuple[str | None, str | None]:
    """``user[:password]`` of a URL's authority (either may be empty) as (username, password)."""
    user, colon, secret = credentials.partition(":")
    return unquote(user) or None, unquote(secret) if colon else None
