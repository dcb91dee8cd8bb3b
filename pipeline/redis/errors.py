"""redis-py's errors in the project's terms: the one translation every Redis user goes through.

``with translated_redis_errors(f"gallery {namespace!r}: cannot load the gallery", where,
unavailable=GalleryUnavailableError, refused=GalleryStoreError): ...``
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.exceptions import (
    ClusterDownError,
    CrossSlotTransactionError,
    RedisClusterException,
    TryAgainError,
)

from engines.errors import FaceStreamError

__all__ = ["translated_redis_errors"]


@contextmanager
def translated_redis_errors(
    failed: str,
    where: str,
    *,
    unavailable: type[FaceStreamError],
    refused: type[FaceStreamError],
) -> Iterator[None]:
    """Raise ``unavailable`` when Redis cannot be reached, times out or is still loading (or a
    Cluster is down: a master gone, a slot uncovered or moving), and
    ``refused`` for any other redis-py error, each chained to it and led by ``failed`` (what
    was being done, e.g. ``"events: cannot read dead letters"``); ``where`` is Redis's address.
    """
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        # BusyLoadingError (a restarted Redis reading its data) is a ConnectionError: retry later
        raise unavailable(
            f"{failed}: Redis at {where} is unreachable or still loading ({exc})"
        ) from exc
    except (ClusterDownError, TryAgainError) as exc:
        # a Cluster with a master down (CLUSTERDOWN) or a slot moving (TRYAGAIN): a state that
        # passes, like an unreachable Redis, not a refusal of what was asked
        raise unavailable(f"{failed}: Redis Cluster at {where} is down ({exc})") from exc
    except CrossSlotTransactionError as exc:  # keys of one transaction in two slots: a bug
        raise refused(f"{failed}: Redis Cluster at {where} refused: {exc}") from exc
    except RedisClusterException as exc:
        # not a RedisError: no node reachable, a slot no live master covers
        raise unavailable(f"{failed}: Redis Cluster at {where} is unreachable ({exc})") from exc
    except redis.RedisError as exc:
        raise refused(f"{failed}: Redis at {where} refused: {exc}") from exc
