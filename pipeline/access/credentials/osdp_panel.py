"""An OSDP control panel (CP) over libosdp: polls readers and reports their card reads.

facestream uses it to poll the card reader of a card + face door; tests and the example
panel (deploy/examples/osdp_panel.py) use it as the access panel a facestream reader reports
to. libosdp's CP waits 300 s before it tries a reader again after losing it; this wrapper
retries after ``reconnect_seconds`` instead (disable, then enable the PD), so a link that comes
back is used again within seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import osdp

from pipeline.access.credentials.channels import ByteChannel
from pipeline.access.credentials.formats import CardBits

__all__ = ["OsdpPanel", "PanelCardRead", "PanelPeer"]

_log = logging.getLogger(__name__)
_WATCH_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class PanelPeer:
    """One reader on the panel's bus: its address, the channel to it, its key (None: no
    secure channel), and whether the panel insists on the secure channel."""

    address: int
    channel: ByteChannel
    scbk: bytes | None
    require_secure_channel: bool = True


@dataclass(frozen=True, slots=True)
class PanelCardRead:
    """A card read a reader reported: its address, the bits, and when (monotonic seconds)."""

    address: int
    bits: CardBits
    at: float


class OsdpPanel:
    """Polls ``peers``; ``on_card`` gets each card read (from libosdp's thread: keep it short,
    and send no command from it: libosdp calls it under the lock ``send_*`` take).

    on_status: called with (address, online, secure) when a reader's link changes.
    """

    def __init__(
        self,
        peers: Sequence[PanelPeer],
        *,
        on_card: Callable[[PanelCardRead], None],
        on_status: Callable[[int, bool, bool], None] | None = None,
        reconnect_seconds: float = 2.0,
    ) -> None:
        addresses = [peer.address for peer in peers]
        if len(set(addresses)) != len(addresses):
            raise ValueError(f"PD addresses must be unique on one panel: {addresses}")
        self._peers = list(peers)
        self._on_card = on_card
        self._on_status = on_status
        self._reconnect_seconds = reconnect_seconds
        infos = [
            osdp.PDInfo(
                peer.address,
                peer.channel,
                scbk=peer.scbk,
                flags=[osdp.LibFlag.EnforceSecure] if peer.require_secure_channel else [],
            )
            for peer in peers
        ]
        self._panel = osdp.ControlPanel(
            infos, log_level=osdp.LogLevel.Error, event_handler=self._event
        )
        self._state: dict[int, tuple[bool, bool]] = dict.fromkeys(addresses, (False, False))
        self._offline_since: dict[int, float] = {}
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        """Start polling and the link watcher."""
        self._panel.start()
        self._watcher = threading.Thread(target=self._watch, name="osdp-panel", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        """Stop polling and close the channels."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(5.0)
        if self._panel.thread is not None:
            self._panel.stop()
        for peer in self._peers:
            peer.channel.close()

    def online(self, address: int) -> bool:
        """True while the reader at ``address`` answers."""
        return bool(self._panel.is_online(address))

    def secure(self, address: int) -> bool:
        """True while the secure channel to ``address`` is on."""
        return bool(self._panel.is_sc_active(address))

    def send_led(self, address: int, *, green: bool) -> bool:
        """Ask the reader to light its LED green (granted) or red (refused) for 2 s."""
        color = osdp.CommandLEDColor.Green if green else osdp.CommandLEDColor.Red
        command = {
            "command": osdp.Command.LED,
            "reader": 0,
            "led_number": 0,
            "control_code": 1,
            "on_count": 10,
            "off_count": 0,
            "on_color": color,
            "off_color": osdp.CommandLEDColor.Black,
            "timer_count": 20,
            "temporary": True,
        }
        return bool(self._panel.submit_command(address, command))

    def send_buzzer(self, address: int) -> bool:
        """One short beep."""
        command = {
            "command": osdp.Command.Buzzer,
            "reader": 0,
            "control_code": 2,
            "on_count": 2,
            "off_count": 0,
            "rep_count": 1,
        }
        return bool(self._panel.submit_command(address, command))

    def send_output(self, address: int, *, output: int, on_seconds: float) -> bool:
        """Turn an output (a relay) on for ``on_seconds``."""
        command = {
            "command": osdp.Command.Output,
            "output_no": output,
            "control_code": 5,  # on, then off after the timer
            "timer_count": max(1, round(on_seconds * 10)),
        }
        return bool(self._panel.submit_command(address, command))

    def _event(self, index: int, event: dict[str, Any]) -> int:
        if event.get("event") == osdp.Event.CardRead:
            now = time.monotonic()
            bits = CardBits(int(event.get("length", 0)), bytes(event.get("data", b"")))
            try:
                self._on_card(PanelCardRead(self._peers[index].address, bits, now))
            except Exception:  # a failing handler must not reach libosdp's thread
                _log.exception("card read handler failed")
        return 0

    def _watch(self) -> None:
        while not self._stop.wait(_WATCH_SECONDS):
            now = time.monotonic()
            for peer in self._peers:
                state = (self.online(peer.address), self.secure(peer.address))
                if state != self._state[peer.address]:
                    self._state[peer.address] = state
                    if self._on_status is not None:
                        self._on_status(peer.address, *state)
                if state[0]:
                    self._offline_since.pop(peer.address, None)
                    continue
                since = self._offline_since.setdefault(peer.address, now)
                if now - since >= self._reconnect_seconds:
                    # libosdp would wait 300 s; start the reader's session again now
                    self._panel.disable_pd(peer.address)
                    self._panel.enable_pd(peer.address)
                    self._offline_since[peer.address] = now
