"""Signatures: webhook requests, stream entries, and keys derived from one secret.

Webhook requests carry ``X-Facestream-Timestamp`` (unix seconds), ``X-Facestream-Event-Id``,
``X-Facestream-Destination`` (the url as configured), ``X-Facestream-Door`` (the event's door
id, empty for events of no door) and ``X-Facestream-Signature``: ``v2=`` and the hex
HMAC-SHA256, under that webhook's secret, of ``"<timestamp>\\n<destination>\\n<door>\\n<body>"``
(``SignedMessage.signed_bytes``). A receiver checks it with ``verify_signature`` against its
own url and door, so a request meant for another receiver or door is refused even where two
receivers were given the same secret.

A stream entry may carry ``stream_entry_mac`` of its body, so that the MQTT bridge signs only
entries the service wrote. Each use of a secret gets its own key (``derived_key``).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

from pydantic import SecretStr

from pipeline.errors import WebhookSignatureError

__all__ = [
    "DESTINATION_HEADER",
    "DOOR_HEADER",
    "EVENT_ID_HEADER",
    "SIGNATURE_HEADER",
    "SIGNATURE_VERSION",
    "TIMESTAMP_HEADER",
    "SignedMessage",
    "derived_key",
    "sign",
    "stream_entry_mac",
    "verify_signature",
]

TIMESTAMP_HEADER: Final = "X-Facestream-Timestamp"
SIGNATURE_HEADER: Final = "X-Facestream-Signature"
EVENT_ID_HEADER: Final = "X-Facestream-Event-Id"
DESTINATION_HEADER: Final = "X-Facestream-Destination"
DOOR_HEADER: Final = "X-Facestream-Door"
SIGNATURE_VERSION: Final = "v2="


def derived_key(secret: SecretStr, label: bytes) -> bytes:
    """A key for one use of ``secret`` (HMAC-SHA256 of ``label`` under it): knowing a key made
    for one label tells nothing of the secret nor of the keys made for other labels."""
    return hmac.new(secret.get_secret_value().encode(), label, hashlib.sha256).digest()


def stream_entry_mac(key: bytes, body: bytes) -> bytes:
    """The hex HMAC-SHA256 a stream entry carries in its ``mac`` field, so that a reader holding
    ``key`` (the MQTT bridge, before it signs) can tell the service's entries from entries
    someone else wrote to Redis."""
    return hmac.new(key, body, hashlib.sha256).hexdigest().encode()


@dataclass(frozen=True, slots=True)
class SignedMessage:
    """What a webhook signature covers: the ``X-Facestream-Timestamp`` value, the destination
    url as configured, the event's door id ("" for events of no door) and the raw body."""

    timestamp: str
    destination: str
    door: str
    body: bytes

    def signed_bytes(self) -> bytes:
        """``"<timestamp>\\n<destination>\\n<door>\\n"`` then the body: none of the first three
        can hold a newline, and the body comes last, so no two messages sign alike."""
        for part in (self.timestamp, self.destination, self.door):
            if "\n" in part or "\r" in part:
                raise WebhookSignatureError("a signed header holds a line break")
        return f"{self.timestamp}\n{self.destination}\n{self.door}\n".encode() + self.body


def sign(secret: SecretStr | str | bytes, message: SignedMessage) -> str:
    """``v2=`` and the hex HMAC-SHA256 of ``message.signed_bytes()`` under ``secret``."""
    digest = hmac.new(_secret_bytes(secret), message.signed_bytes(), hashlib.sha256)
    return SIGNATURE_VERSION + digest.hexdigest()


def _secret_bytes(secret: SecretStr | str | bytes) -> bytes:
    if isinstance(secret, SecretStr):
        return secret.get_secret_value().encode()
    return secret.encode() if isinstance(secret, str) else secret


def verify_signature(
    secret: SecretStr | str | bytes,
    message: SignedMessage,
    signature: str,
    *,
    now: float,
    window_seconds: float,
) -> None:
    """Check a received webhook: raise WebhookSignatureError unless it is genuine and fresh.

    message: the ``X-Facestream-Timestamp`` header, the receiver's OWN url (as facestream is
    configured to call it) and door id (not the request's headers: a request signed for
    another receiver or door must fail), and the raw body; signature: the
    ``X-Facestream-Signature`` header; now: unix seconds; window_seconds: how far the timestamp
    may lie from ``now``, either way (older ones are replays). Compared in constant time.
    """
    timestamp = message.timestamp
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise WebhookSignatureError(f"timestamp: expected unix seconds, got {timestamp[:32]!r}")
    age_seconds = now - int(timestamp)
    if abs(age_seconds) > window_seconds:
        raise WebhookSignatureError(
            f"timestamp is {age_seconds:.0f} s from now, outside the {window_seconds:.0f} s "
            "replay window"
        )
    expected = sign(secret, message)
    if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode()):
        raise WebhookSignatureError(
            "signature does not match the body, timestamp, destination and door"
        )
