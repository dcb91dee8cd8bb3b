"""OSDP and credentials at the service's doors: one reader (PD) per door that reports grants
to its panel, one polled card reader (CP) per card + face door, and the clock that refuses
cards whose holder's face did not come in time.

``decided`` is called for every audited decision: a grant at a door with an OSDP reader is
sent as the identity's card number; an identity without one, or a link that is down, gives an
``osdp_card_not_sent`` event instead (never a late card read).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline.access.credentials import (
    CredentialFormatError,
    CredentialStore,
    OsdpMetrics,
    OsdpNotice,
    OsdpPanel,
    OsdpReader,
    PanelCardRead,
    PanelPeer,
    decode_card,
    open_channel,
    read_scbk,
)
from pipeline.access.policy import DoorConfig, DoorPolicy, PresentedCredential
from pipeline.types import Decision, Event, JsonValue

__all__ = ["AccessWiring", "DoorAccess"]

_log = logging.getLogger(__name__)
_EXPIRE_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class AccessWiring:
    """What door access works with: the policy (card + face windows), the card numbers, the
    metrics, where events go and where its own decisions go (audit, then publish)."""

    policy: DoorPolicy
    credentials: CredentialStore
    metrics: OsdpMetrics
    publish: Callable[[Event], None]
    on_decision: Callable[[Decision], None]


class DoorAccess:
    """OSDP readers and card readers of ``doors``; ``start`` opens them, ``stop`` closes."""

    def __init__(self, doors: Sequence[DoorConfig], wiring: AccessWiring) -> None:
        self._doors = {door.id: door for door in doors}
        self._wiring = wiring
        self.readers: dict[str, OsdpReader] = {}
        self._panels: dict[str, OsdpPanel] = {}
        self._stop = threading.Event()
        self._clock: threading.Thread | None = None

    def start(self) -> None:
        """Open every door's OSDP channels (OsdpChannelError or CredentialFormatError naming
        the key when one cannot be) and start the card-window clock."""
        try:
            for index, door in enumerate(self._doors.values()):
                if door.osdp is not None:
                    self._start_reader(door, f"doors.{index}.osdp")
                if door.card_reader is not None:
                    self._start_card_reader(door, f"doors.{index}.card_reader")
        except BaseException:
            self.stop()
            raise
        if any(door.mode == "card_and_face" for door in self._doors.values()):
            self._clock = threading.Thread(target=self._expire, name="card-windows", daemon=True)
            self._clock.start()

    def stop(self) -> None:
        """Stop the clock, the readers and the card readers."""
        self._stop.set()
        if self._clock is not None:
            self._clock.join(5.0)
        for reader in self.readers.values():
            reader.stop()
        for panel in self._panels.values():
            panel.stop()

    def decided(self, decision: Decision) -> None:
        """An audited decision: send a grant to the door's panel when it has an OSDP reader."""
        reader = self.readers.get(decision.door_id)
        if reader is None or decision.outcome != "granted":
            return
        number = decision.card_number
        if number is None and decision.identity_id is not None:
            number = self._wiring.credentials.get(decision.identity_id)
        if number is None:
            self._wiring.metrics.card_reads.labels(
                door=decision.door_id, result="no_credential"
            ).inc()
            self._not_sent(decision, "no_credential")
            return
        try:
            result = reader.send_card(number)
        except CredentialFormatError as exc:  # a number set before the door's format changed
            _log.error("door %s: grant not sent: %s", decision.door_id, exc)
            self._not_sent(decision, "format")
            return
        if result != "queued":
            self._not_sent(decision, "link_down")

    def present_credential(self, door_id: str, card_number: int, *, source: str) -> Decision | None:
        """A card shown at a card + face door (ConfigError if the door is not one); an unknown
        card is refused at once (the refusal is returned, already audited and published)."""
        owner = self._wiring.credentials.owner(card_number)
        credential = PresentedCredential(card_number, owner, source, time.time())
        decision = self._wiring.policy.present_credential(door_id, credential)
        result = "unknown_card" if owner is None else "waiting_for_face"
        self._wiring.metrics.credentials.labels(door=door_id, source=source, result=result).inc()
        if decision is not None:
            self._wiring.on_decision(decision)
        return decision

    def _start_reader(self, door: DoorConfig, key: str) -> None:
        assert door.osdp is not None
        scbk = read_scbk(door.osdp, key=key)
        channel = open_channel(door.osdp.channel, key=f"{key}.channel")
        reader = OsdpReader(
            door.id,
            door.osdp,
            channel,
            scbk=scbk,
            metrics=self._wiring.metrics,
            on_notice=self._notice,
        )
        self.readers[door.id] = reader
        reader.start()

    def _start_card_reader(self, door: DoorConfig, key: str) -> None:
        config = door.card_reader
        assert config is not None
        peer = PanelPeer(
            config.address,
            open_channel(config.channel, key=f"{key}.channel"),
            read_scbk(config, key=key),
            config.require_secure_channel,
        )

        def card(read: PanelCardRead) -> None:
            try:
                number = decode_card(read.bits, config.format).card_number
            except CredentialFormatError as exc:
                _log.warning("door %s: card read not understood: %s", door.id, exc)
                self._wiring.metrics.credentials.labels(
                    door=door.id, source="osdp", result="unreadable"
                ).inc()
                return
            self.present_credential(door.id, number, source="osdp")

        def status(address: int, online: bool, secure: bool) -> None:
            up = online and (secure or not config.require_secure_channel)
            self._notice(
                OsdpNotice(
                    "osdp_link_up" if up else "osdp_link_down",
                    door.id,
                    "card_reader",
                    {"address": address, "secure": secure},
                )
            )

        panel = OsdpPanel(
            [peer], on_card=card, on_status=status, reconnect_seconds=config.reconnect_seconds
        )
        self._panels[door.id] = panel
        panel.start()

    def _notice(self, notice: OsdpNotice) -> None:
        door = self._doors[notice.door_id]
        payload: dict[str, JsonValue] = {"door_id": notice.door_id, "role": notice.role}
        payload.update(notice.detail)
        log = _log.warning if notice.kind != "osdp_link_up" else _log.info
        log("door %s: %s (%s)", notice.door_id, notice.kind, notice.role)
        self._wiring.publish(Event.create(notice.kind, door.cameras[0], payload))

    def _not_sent(self, decision: Decision, reason: str) -> None:
        _log.warning(
            "door %s: grant of %s not sent to the panel (%s)",
            decision.door_id,
            decision.identity_id,
            reason,
        )
        payload: dict[str, JsonValue] = {
            "door_id": decision.door_id,
            "identity_id": decision.identity_id,
            "reason": reason,
            "decided_at": decision.at,
        }
        self._wiring.publish(Event.create("osdp_card_not_sent", decision.camera_id, payload))

    def _expire(self) -> None:
        while not self._stop.wait(_EXPIRE_SECONDS):
            try:
                for decision in self._wiring.policy.expire(time.time()):
                    self._wiring.on_decision(decision)
            except Exception:  # the clock must outlive one failed round
                _log.exception("refusing expired cards failed")
