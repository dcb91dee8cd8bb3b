"""The card number each identity holds, kept in the gallery's Redis beside the identity.

Two hashes under the gallery's hash tag (one Redis Cluster slot with the identities):
``fs:{ns}:credentials`` (identity id -> card number) and ``fs:{ns}:credential_owners`` (card
number -> identity id), written together in one transaction, so a card number names at most
one identity. An identity removed from the gallery keeps no card: ``owner`` checks the
identity still exists, and its stale entries are dropped when the card is looked up or set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import redis
from redis.exceptions import ClusterDownError, RedisClusterException

from pipeline.access.credentials.errors import CredentialInUseError
from pipeline.errors import GalleryUnavailableError, IdentityNotFoundError
from pipeline.redis.cluster import RedisClient, RedisPipeline

__all__ = ["CredentialStore"]

_MAX_CARD_NUMBER = (1 << 128) - 1
_T = TypeVar("_T")


class CredentialStore:
    """Card numbers of identities; ``identities_key`` is the gallery's identities hash."""

    def __init__(self, client: RedisClient, *, namespace: str = "gallery") -> None:
        prefix = f"fs:{{{namespace}}}:"
        self._client = client
        self._identities_key = prefix + "identities"
        self._numbers_key = prefix + "credentials"
        self._owners_key = prefix + "credential_owners"

    def get(self, identity_id: str) -> int | None:
        """The identity's card number, or None when it holds none."""
        value = self._call(lambda: self._client.hget(self._numbers_key, identity_id))
        return None if value is None else int(value)

    def owner(self, card_number: int) -> str | None:
        """The identity holding ``card_number`` (None: nobody, or its identity is gone)."""
        value = self._call(lambda: self._client.hget(self._owners_key, str(card_number)))
        if value is None:
            return None
        identity_id = _text(value)
        if not self._call(lambda: self._client.hexists(self._identities_key, identity_id)):
            self.clear(identity_id)
            return None
        return identity_id

    def set(self, identity_id: str, card_number: int) -> None:
        """Give the identity ``card_number`` (replacing its old one); IdentityNotFoundError,
        or CredentialInUseError when another existing identity holds that number."""
        if not 0 <= card_number <= _MAX_CARD_NUMBER:
            raise ValueError(f"card_number: {card_number} is out of range")
        number = str(card_number)

        def write(pipe: RedisPipeline) -> None:
            if not pipe.hexists(self._identities_key, identity_id):
                raise IdentityNotFoundError(f"identity {identity_id!r} is not in the gallery")
            stored = pipe.hget(self._owners_key, number)
            holder = None if stored is None else _text(stored)
            if (
                holder is not None
                and holder != identity_id
                and pipe.hexists(self._identities_key, holder)
            ):
                raise CredentialInUseError(
                    f"card_number: {card_number} is already held by identity {holder!r}"
                )
            old = pipe.hget(self._numbers_key, identity_id)
            pipe.multi()
            if old is not None:
                pipe.hdel(self._owners_key, old)
            pipe.hset(self._numbers_key, identity_id, number)
            pipe.hset(self._owners_key, number, identity_id)

        self._call(
            lambda: self._client.transaction(
                write, self._identities_key, self._numbers_key, self._owners_key
            )
        )

    def clear(self, identity_id: str) -> bool:
        """Take the identity's card away; False when it held none."""

        def write(pipe: RedisPipeline) -> None:
            old = pipe.hget(self._numbers_key, identity_id)
            pipe.multi()
            pipe.hdel(self._numbers_key, identity_id)
            if old is not None:
                pipe.hdel(self._owners_key, old)

        results = self._call(
            lambda: self._client.transaction(write, self._numbers_key, self._owners_key)
        )
        return bool(results and results[0])

    @staticmethod
    def _call(action: Callable[[], _T]) -> _T:
        try:
            return action()
        except (
            redis.ConnectionError,
            redis.TimeoutError,
            ClusterDownError,  # a Cluster master down: passes, like an unreachable Redis
            RedisClusterException,  # not a RedisError: no node, or no master for the slot
        ) as exc:
            raise GalleryUnavailableError(f"redis: {exc}") from exc


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
