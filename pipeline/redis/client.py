"""Who may use the gallery's Redis: the password, and the refusal of a Redis open to anyone.

Whoever can write to the gallery's Redis can enrol a face, and whoever can write to the
events' keys can queue what the door controllers act on: a Redis reachable over the network
without a password is an open door. ``connect`` therefore refuses a ``redis://`` or
``rediss://`` URL whose host is not this machine (loopback), a ``redis+sentinel://`` URL
with such a sentinel or a ``redis+cluster://`` URL with such a node, unless a password is
given, in the URL, by ``FACESTREAM_REDIS_PASSWORD`` / ``FACESTREAM_REDIS_PASSWORD_FILE`` or by
``gallery.redis_password_file``; ``gallery.allow_insecure_redis = true`` overrides the refusal
and is logged as a warning each time a client connects. unix:// sockets are guarded by their
file mode instead (the embedded server's folder is 0700).
"""

from __future__ import annotations

import ipaddress
import logging
from urllib.parse import urlsplit

from pydantic import SecretStr

from engines.errors import ConfigError
from pipeline.config.secrets import SecretSpec, resolve_secret
from pipeline.config.service import GalleryConfig
from pipeline.redis.cluster import is_cluster_url, parse_cluster_url
from pipeline.redis.ha import is_sentinel_url, parse_sentinel_url

__all__ = ["PASSWORD_ENVIRONMENT_VARIABLE", "redis_password"]

LOGGER = logging.getLogger(__name__)
PASSWORD_ENVIRONMENT_VARIABLE = "FACESTREAM_REDIS_PASSWORD"
_NETWORK_SCHEMES = frozenset({"redis", "rediss"})


def _is_local(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: only "localhost" is known to stay on this machine
        return False


def redis_password(url: str, gallery: GalleryConfig) -> SecretStr | None:
    """The password to send with ``url`` (None: the URL's own, or none), after refusing
    (ConfigError) a network Redis that would be used without one; see the module docstring."""
    from_config = resolve_secret(
        SecretSpec(
            "gallery.redis_password", PASSWORD_ENVIRONMENT_VARIABLE, gallery.redis_password_file,
            None,
        )
    )  # fmt: skip
    if is_sentinel_url(url):  # the master's hosts come from the sentinels: judge those
        sentinel = parse_sentinel_url(url)
        hosts, url_password, network = sentinel.hosts, sentinel.password, True
    elif is_cluster_url(url):  # every seed node, and the nodes they name, are network hosts
        cluster = parse_cluster_url(url)
        hosts, url_password, network = cluster.hosts, cluster.password, True
    else:
        parts = urlsplit(url)
        hosts, url_password = (parts.hostname or "",), parts.password
        network = parts.scheme.lower() in _NETWORK_SCHEMES
    remote = [host for host in hosts if not _is_local(host)]
    if not network or not remote:
        return None if url_password else from_config
    if url_password or from_config is not None:
        return None if url_password else from_config
    if not gallery.allow_insecure_redis:
        raise ConfigError(
            f"gallery.redis_url points at {remote[0]!r} over the network with no password: "
            "anyone who reaches that Redis could enrol faces and forge door events. Give the "
            f"Redis user's password ({PASSWORD_ENVIRONMENT_VARIABLE}, "
            f"{PASSWORD_ENVIRONMENT_VARIABLE}_FILE or gallery.redis_password_file; "
            "see docs/security.md), or set gallery.allow_insecure_redis = true to accept the risk"
        )
    LOGGER.warning(
        "gallery.allow_insecure_redis: using Redis at %s with no password; anyone who can "
        "reach it can enrol faces and forge door events",
        remote[0],
    )
    return None
