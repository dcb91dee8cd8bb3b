"""The MQTT wire format: topics, the signed envelope, and Home Assistant discovery.

Topics (``topic_prefix`` default ``facestream``):

* ``<prefix>/status``: ``online`` / ``offline`` (retained; ``offline`` is the last will)
* ``<prefix>/events/<kind>``: every event as JSON (decision, unknown_face, spoof_suspected,
  camera_up, camera_down)
* ``<prefix>/door/<door_id>/decision``: door decisions as JSON
* ``<prefix>/door/<door_id>/person``: the person just granted, for a HA sensor. NOT retained:
  a broker keeping the last name per door would keep it after the identity is deleted (and
  tell every later subscriber who came in last). The bridge clears what older versions
  retained there when it connects and when an identity is deleted.
* ``<prefix>/camera/<camera_id>/state``: ``online`` / ``offline`` (retained)

Signed payloads (``signing_secret``): every message but ``<prefix>/status`` and the Home
Assistant discovery configs (which Home Assistant reads as they are) is sent as
``{"payload": <text>, "topic": <topic>, "timestamp": <unix s>, "signature": "v1=<hex>"}``, the
HMAC-SHA256 under the secret of ``"<timestamp>\\n<topic>\\n<payload>"`` (``verify_message``),
so a subscriber can tell the service's messages from anyone's who can publish on the broker,
and one replayed to another topic fails. The bridge signs only stream entries that carry the
service's MAC (``EventBus(entry_key=...)``, a key derived from the same secret): an event
someone wrote into the Redis stream is skipped, not signed.

With ``home_assistant_discovery`` on, a sensor per door (last person granted) and a binary
sensor per camera are announced under ``homeassistant/`` (retained), so they appear in Home
Assistant without YAML.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import SecretStr

from pipeline.errors import WebhookSignatureError
from pipeline.events.config import MqttConfig
from pipeline.types import Event

__all__ = [
    "MqttMessage",
    "discovery_messages",
    "event_messages",
    "sign_message",
    "verify_message",
]

_SIGNATURE_VERSION = "v1="


@dataclass(frozen=True, slots=True)
class MqttMessage:
    """One message to publish: topic, text payload, and whether the broker retains it."""

    topic: str
    payload: str
    retain: bool


def _signed_bytes(timestamp: int, topic: str, payload: str) -> bytes:
    return f"{timestamp}\n{topic}\n{payload}".encode()


def sign_message(secret: SecretStr, message: MqttMessage, timestamp: int) -> MqttMessage:
    """``message`` with its payload wrapped in the signed envelope (module docstring)."""
    digest = hmac.new(
        secret.get_secret_value().encode(),
        _signed_bytes(timestamp, message.topic, message.payload),
        hashlib.sha256,
    ).hexdigest()
    envelope = {
        "payload": message.payload,
        "topic": message.topic,
        "timestamp": timestamp,
        "signature": _SIGNATURE_VERSION + digest,
    }
    return MqttMessage(message.topic, json.dumps(envelope, sort_keys=True), message.retain)


def verify_message(
    secret: SecretStr, topic: str, raw: bytes, *, now: float, window_seconds: float
) -> str:
    """The payload of a signed message received on ``topic``; WebhookSignatureError unless the
    envelope is well formed, fresh (``window_seconds`` of ``now``), for this topic, and its
    signature matches (compared in constant time)."""
    try:
        envelope = json.loads(raw)
        payload, timestamp = str(envelope["payload"]), int(envelope["timestamp"])
        signature = str(envelope["signature"])
    except (ValueError, KeyError, TypeError) as exc:
        raise WebhookSignatureError(f"MQTT message on {topic}: not a signed envelope") from exc
    if abs(now - timestamp) > window_seconds:
        raise WebhookSignatureError(f"MQTT message on {topic}: outside the replay window")
    expected = sign_message(secret, MqttMessage(topic, payload, False), timestamp)
    expected_signature = json.loads(expected.payload)["signature"]
    if not hmac.compare_digest(str(expected_signature).encode(), signature.encode()):
        raise WebhookSignatureError(f"MQTT message on {topic}: signature does not match")
    return payload


def _slug(text: str) -> str:
    return "".join(char if char.isalnum() else "_" for char in text).strip("_") or "x"


def event_messages(event: Event, prefix: str) -> list[MqttMessage]:
    """The messages announcing ``event`` (unsigned)."""
    body = event.to_json().decode()
    messages = [MqttMessage(f"{prefix}/events/{event.kind}", body, False)]
    payload = event.payload
    if event.kind in ("decision", "unknown_face", "spoof_suspected"):
        door = str(payload.get("door_id", "unknown"))
        messages.append(MqttMessage(f"{prefix}/door/{door}/decision", body, False))
        if payload.get("outcome") == "granted":
            # not retained: the broker must not keep a name (see the module docstring)
            person = str(payload.get("name"))
            messages.append(MqttMessage(f"{prefix}/door/{door}/person", person, False))
    elif event.kind in ("camera_up", "camera_down"):
        state = "online" if event.kind == "camera_up" else "offline"
        messages.append(MqttMessage(f"{prefix}/camera/{event.camera_id}/state", state, True))
    return messages


def discovery_messages(
    config: MqttConfig, doors: Sequence[str], cameras: Sequence[str]
) -> list[MqttMessage]:
    """The retained Home Assistant discovery configs of ``doors`` and ``cameras`` (unsigned:
    Home Assistant reads them as they are)."""
    prefix, root = config.topic_prefix, config.discovery_prefix
    device = {"identifiers": [config.client_id], "name": "facestream", "manufacturer": "facestream"}
    availability = {"topic": f"{prefix}/status"}
    # signed messages wrap the value in an envelope (Home Assistant does not check the MAC)
    template = (
        {"value_template": "{{ value_json.payload }}"}
        if config.resolved_signing_secret is not None
        else {}
    )
    messages = []
    for door in doors:
        entity = {
            "name": f"{door} last person",
            "unique_id": f"{_slug(config.client_id)}_door_{_slug(door)}",
            "state_topic": f"{prefix}/door/{door}/person",
            "icon": "mdi:door",
            "availability": availability,
            "device": device,
            **template,
        }
        topic = f"{root}/sensor/{_slug(config.client_id)}/door_{_slug(door)}/config"
        messages.append(MqttMessage(topic, json.dumps(entity), True))
    for camera in cameras:
        entity = {
            "name": f"{camera} camera",
            "unique_id": f"{_slug(config.client_id)}_camera_{_slug(camera)}",
            "state_topic": f"{prefix}/camera/{camera}/state",
            "payload_on": "online",
            "payload_off": "offline",
            "device_class": "connectivity",
            "availability": availability,
            "device": device,
            **template,
        }
        topic = f"{root}/binary_sensor/{_slug(config.client_id)}/camera_{_slug(camera)}/config"
        messages.append(MqttMessage(topic, json.dumps(entity), True))
    return messages
