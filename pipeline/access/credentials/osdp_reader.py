"""facestream as an OSDP reader (PD) on a door's panel bus.

A grant is reported to the panel as a card read carrying the identity's card number, and the
panel decides as it does for any card. Rules that keep a door safe:

* The link is up only while the panel polls (a byte within ``link_timeout_seconds``), libosdp
  counts the PD online, and the secure channel is on when required. A grant while the link is
  down is refused and counted, never queued: a door opening late is worse than not at all.
* A card read the panel has not taken within ``link_timeout_seconds`` is withdrawn (libosdp's
  event queue flushed) and counted as expired, so a link that comes back delivers nothing old.
* Polled but no secure channel within ``secure_channel_timeout_seconds`` (usually a wrong key)
  is reported once per attempt as ``osdp_secure_channel_failed``.

Panel commands: LED and buzzer are counted and kept as the reader's indicator (the preview may
show it); output commands are logged and counted; local status is answered (no tamper, power
fine); key set and communication changes are refused (NAK), since the config owns the key, the
address and the speed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import osdp

from pipeline.access.credentials.channels import ByteChannel
from pipeline.access.credentials.config import OsdpReaderConfig
from pipeline.access.credentials.formats import CardBits, encode_card
from pipeline.access.credentials.metrics import OsdpMetrics

__all__ = ["CardSendResult", "OsdpNotice", "OsdpReader", "ReaderIndicator"]

_log = logging.getLogger(__name__)
_WATCH_SECONDS = 0.02
_COMMAND_NAMES = {
    osdp.Command.LED: "led",
    osdp.Command.Buzzer: "buzzer",
    osdp.Command.Output: "output",
    osdp.Command.Text: "text",
    osdp.Command.Status: "status",
    osdp.Command.Keyset: "keyset",
    osdp.Command.Comset: "comset",
    osdp.Command.Manufacturer: "manufacturer",
    osdp.Command.FileTransfer: "file_transfer",
}
_REFUSED_COMMANDS = frozenset({"keyset", "comset", "manufacturer", "file_transfer"})
_LED_COLORS = {
    osdp.CommandLEDColor.Black: "off",
    osdp.CommandLEDColor.Red: "red",
    osdp.CommandLEDColor.Green: "green",
    osdp.CommandLEDColor.Amber: "amber",
    osdp.CommandLEDColor.Blue: "blue",
    osdp.CommandLEDColor.Magenta: "magenta",
    osdp.CommandLEDColor.Cyan: "cyan",
    osdp.CommandLEDColor.White: "white",
}

NoticeKind = Literal["osdp_link_up", "osdp_link_down", "osdp_secure_channel_failed"]
CardSendResult = Literal["queued", "refused_link_down"]


@dataclass(frozen=True, slots=True)
class OsdpNotice:
    """Something to announce about a door's OSDP link (becomes an event)."""

    kind: NoticeKind
    door_id: str
    role: Literal["reader", "card_reader"]
    detail: dict[str, str | int | float | bool | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReaderIndicator:
    """What the panel last asked the reader to show: LED colour and whether it beeps."""

    led: str = "off"
    buzzing: bool = False
    at: float = 0.0


class OsdpReader:
    """One door's OSDP peripheral device; ``start``, then ``send_card`` on each grant.

    on_notice: called (from the watcher thread) for link up/down and secure-channel failures;
    on_delivered: called with the card number when the panel took a card read (tests and
    benchmarks time it).
    """

    def __init__(
        self,
        door_id: str,
        config: OsdpReaderConfig,
        channel: ByteChannel,
        *,
        scbk: bytes | None,
        metrics: OsdpMetrics,
        on_notice: Callable[[OsdpNotice], None],
    ) -> None:
        if config.require_secure_channel and scbk is None:
            raise ValueError(f"door {door_id}: a secure channel is required but no key given")
        self.door_id = door_id
        self._config = config
        self._channel = channel
        self._metrics = metrics
        self._on_notice = on_notice
        self.indicator = ReaderIndicator()
        self._lock = threading.Lock()
        self._link_up = False
        self._was_up = False
        self._attempt_since: float | None = None  # polled without a secure channel since
        self._attempt_reported = False
        self._pending: dict[int, float] = {}  # card number -> monotonic deadline
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        flags = [osdp.LibFlag.EnforceSecure] if config.require_secure_channel else []
        info = osdp.PDInfo(config.address, channel, scbk=scbk, name=f"door-{door_id}", flags=flags)
        capabilities = osdp.PDCapabilities(
            [
                (osdp.Capability.CommunicationSecurity, 1, 1),
                (osdp.Capability.CardDataFormat, 1, 1),
                (osdp.Capability.LEDControl, 1, 1),
                (osdp.Capability.AudibleControl, 1, 1),
                (osdp.Capability.OutputControl, 1, 1),
                (osdp.Capability.Readers, 0, 1),
            ]
        )
        self._device = osdp.PeripheralDevice(
            info,
            capabilities,
            log_level=osdp.LogLevel.Error,
            command_handler=self._command,
            event_completion_handler=self._completed,
        )
        link = self._metrics.link_up.labels(door=door_id, role="reader")
        link.set(0)

    @property
    def link_up(self) -> bool:
        """True while the panel polls this reader over a working (secure) channel."""
        with self._lock:
            return self._link_up

    def start(self) -> None:
        """Start libosdp's refresh thread and the link watcher."""
        self._device.start()
        self._watcher = threading.Thread(
            target=self._watch, name=f"osdp-reader-{self.door_id}", daemon=True
        )
        self._watcher.start()

    def stop(self) -> None:
        """Stop both threads and close the channel."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(5.0)
        if self._device.thread is not None:
            self._device.stop()
        self._channel.close()

    def send_card(self, card_number: int) -> CardSendResult:
        """Report a card read of ``card_number`` in the door's format (CredentialFormatError if
        it does not fit); refused, and counted, while the link is down."""
        bits = encode_card(card_number, self._config.format)
        with self._lock:
            if not self._link_up:
                self._metrics.card_reads.labels(door=self.door_id, result="refused_link_down").inc()
                return "refused_link_down"
            self._pending[card_number] = time.monotonic() + self._config.link_timeout_seconds
            self._device.submit_event(_card_event(bits))
        self._metrics.card_reads.labels(door=self.door_id, result="queued").inc()
        return "queued"

    def _completed(self, event: dict[str, Any], status: int) -> None:
        if event.get("event") != osdp.Event.CardRead:
            return
        if status != osdp.CompletionStatus.Ok:
            return  # flushed: counted as expired where it was withdrawn
        bits = CardBits(int(event.get("length", 0)), bytes(event.get("data", b"")))
        with self._lock:
            taken = [number for number in self._pending if _same(number, bits, self._config)]
            for number in taken:
                del self._pending[number]
        self._metrics.card_reads.labels(door=self.door_id, result="delivered").inc()

    def _command(self, command: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        name = _COMMAND_NAMES.get(command.get("command", -1), "other")
        self._metrics.commands.labels(door=self.door_id, command=name).inc()
        if name == "led":
            color = command.get("on_color", osdp.CommandLEDColor.Black)
            self.indicator = ReaderIndicator(
                _LED_COLORS.get(color, "other"), self.indicator.buzzing, time.time()
            )
        elif name == "buzzer":
            buzzing = int(command.get("control_code", 0)) == 2  # 2: the default tone, on
            self.indicator = ReaderIndicator(self.indicator.led, buzzing, time.time())
        elif name == "output":
            _log.info(
                "door %s: panel output command (output %s, control code %s, timer %s)",
                self.door_id,
                command.get("output_no"),
                command.get("control_code"),
                command.get("timer_count"),
            )
        elif name == "status":
            # local status: tamper normal, power normal
            return 0, {
                "command": osdp.Command.Status,
                "type": command.get("type"),
                "report": bytes([0, 0]),
            }
        elif name in _REFUSED_COMMANDS or name == "other":
            _log.warning("door %s: panel command %s refused", self.door_id, name)
            return -1, None
        return 0, None

    def _watch(self) -> None:
        while not self._stop.wait(_WATCH_SECONDS):
            try:
                self._check_link(time.monotonic())
            except Exception:  # the watcher must outlive one bad round
                _log.exception("door %s: OSDP link check failed", self.door_id)

    def _check_link(self, now: float) -> None:
        polled = now - self._channel.last_received <= self._config.link_timeout_seconds
        secure = self._device.is_sc_active() or not self._config.require_secure_channel
        up = polled and secure and bool(self._device.is_online())
        notices: list[OsdpNotice] = []
        with self._lock:
            self._track_secure_channel(now, polled=polled, secure=secure, notices=notices)
            expired = [number for number, deadline in self._pending.items() if deadline < now]
            if expired or (self._pending and not up):
                # withdraw what the panel did not take in time: it must never arrive late
                self._device.ctx.flush_events()
                dropped = len(self._pending)
                self._pending.clear()
                self._metrics.card_reads.labels(door=self.door_id, result="expired").inc(dropped)
            if up != self._link_up:
                self._link_up = up
                self._metrics.link_up.labels(door=self.door_id, role="reader").set(int(up))
                state = "up" if up else "down"
                self._metrics.link_changes.labels(
                    door=self.door_id, role="reader", state=state
                ).inc()
                if up or self._was_up:
                    notices.append(
                        OsdpNotice(
                            "osdp_link_up" if up else "osdp_link_down",
                            self.door_id,
                            "reader",
                            {"address": self._config.address, "secure": secure},
                        )
                    )
                self._was_up = self._was_up or up
        for notice in notices:
            self._on_notice(notice)

    def _track_secure_channel(
        self, now: float, *, polled: bool, secure: bool, notices: list[OsdpNotice]
    ) -> None:
        """One report per attempt: polled without a secure channel for too long."""
        if secure:
            self._attempt_since, self._attempt_reported = None, False
            return
        if polled and self._attempt_since is None:
            self._attempt_since = now
        if self._attempt_since is None or self._attempt_reported:
            if not polled and self._attempt_reported:
                self._attempt_since, self._attempt_reported = None, False  # re-arm after silence
            return
        if now - self._attempt_since >= self._config.secure_channel_timeout_seconds:
            self._attempt_reported = True
            self._metrics.secure_channel_failures.labels(door=self.door_id, role="reader").inc()
            notices.append(
                OsdpNotice(
                    "osdp_secure_channel_failed",
                    self.door_id,
                    "reader",
                    {
                        "address": self._config.address,
                        "reason": "the panel polled but no secure channel came up (wrong "
                        "SCBK on one side?)",
                    },
                )
            )


def _card_event(bits: CardBits) -> dict[str, Any]:
    return {
        "event": osdp.Event.CardRead,
        "reader_no": 0,
        "direction": 0,
        "format": osdp.CardFormat.Wiegand,
        "length": bits.length,
        "data": bits.data,
    }


def _same(card_number: int, bits: CardBits, config: OsdpReaderConfig) -> bool:
    return encode_card(card_number, config.format) == bits
