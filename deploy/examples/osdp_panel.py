"""An access panel (OSDP control panel) for facestream's OSDP doors, to see the whole chain on
one machine. Standalone: needs only libosdp (``pip install libosdp==3.2.9``).

facestream presents itself to a panel as a card reader (an OSDP PD): a face it grants at a
door is sent as that person's card number. This panel polls that reader, prints each card
read, and decides from a small allow-list, as a real panel does from its cardholder database:
a card on the list gets a green LED, a beep and output 0 (the door relay) on for 3 s; any
other card a red LED.

RS-485-over-IP (facestream connects to ``--listen``)::

    echo 000102030405060708090a0b0c0d0e0f > scbk      # 16 random bytes in real life
    python osdp_panel.py --listen 127.0.0.1:4001 --address 1 --scbk-file scbk \
        --facility-code 42 --allow 4242,1001

and in facestream's config::

    [[doors]]
    id = "front"
    cameras = ["front-cam"]
    [doors.osdp]
    channel = { tcp = "127.0.0.1:4001" }
    address = 1
    scbk_file = "scbk"
    format = { kind = "wiegand26", facility_code = 42 }

An RS-485 adapter instead: ``--serial /dev/ttyUSB0 --baud 9600`` here, and
``channel = { serial_device = "/dev/ttyUSB1", baud = 9600 }`` on facestream's side.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import socket
import sys
import termios
import time
import tty
from typing import Any

import osdp


class ListeningChannel(osdp.Channel):  # type: ignore[misc]  # libosdp ships no types
    """The panel's end of a TCP link: serves the reader that connects (the latest one)."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self._listener = socket.create_server((host, port))
        self._listener.setblocking(False)
        self._peer: socket.socket | None = None

    def _connected(self) -> socket.socket | None:
        try:
            peer, _ = self._listener.accept()
        except BlockingIOError:
            return self._peer
        peer.setblocking(False)
        if self._peer is not None:
            self._peer.close()
        self._peer = peer
        return peer

    def read(self, max_bytes: int) -> bytes:
        peer = self._connected()
        try:
            return b"" if peer is None else peer.recv(max_bytes)
        except OSError:  # an exception here would end libosdp's thread
            return b""

    def write(self, buf: bytes) -> int:
        peer = self._connected()
        if peer is None:
            return len(buf)  # nobody on the line yet: sent into the void, as on RS-485
        try:
            return peer.send(buf)
        except OSError:
            return 0

    def flush(self) -> None:
        """Writes go straight out."""


class SerialChannel(osdp.Channel):  # type: ignore[misc]
    """An RS-485 adapter's serial device, raw, non-blocking."""

    def __init__(self, device: str, baud: int) -> None:
        super().__init__()
        self._fd = os.open(device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self._fd)
        attributes = termios.tcgetattr(self._fd)
        attributes[4] = attributes[5] = getattr(termios, f"B{baud}")
        termios.tcsetattr(self._fd, termios.TCSANOW, attributes)

    def read(self, max_bytes: int) -> bytes:
        try:
            return os.read(self._fd, max_bytes)
        except OSError:
            return b""

    def write(self, buf: bytes) -> int:
        try:
            return os.write(self._fd, buf)
        except OSError:
            return 0

    def flush(self) -> None:
        """Writes go straight out."""


def wiegand26(bits: int, length: int, facility_code: int) -> int | None:
    """The card number of a 26-bit Wiegand read (None: wrong length, parity or site)."""
    if length != 26:
        return None
    first, second = bits >> 13, bits & 0x1FFF
    if first.bit_count() % 2 != 0 or second.bit_count() % 2 != 1:
        return None
    if (bits >> 17) & 0xFF != facility_code:
        return None
    return (bits >> 1) & 0xFFFF


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--listen", help="host:port facestream's reader connects to")
    where.add_argument("--serial", help="serial device of an RS-485 adapter")
    parser.add_argument("--baud", type=int, default=9600)
    parser.add_argument("--address", type=int, default=1, help="the reader's PD address")
    parser.add_argument("--scbk-file", help="file with the 32-hex-digit secure-channel key")
    parser.add_argument("--facility-code", type=int, default=0)
    parser.add_argument("--allow", default="", help="card numbers that open, comma-separated")
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (0: never)")
    return parser.parse_args()


def _answer(granted: bool) -> list[dict[str, Any]]:
    """The commands a panel sends back: LED green + beep + relay, or LED red."""
    color = osdp.CommandLEDColor.Green if granted else osdp.CommandLEDColor.Red
    led = {
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
    if not granted:
        return [led]
    beep = {
        "command": osdp.Command.Buzzer,
        "reader": 0,
        "control_code": 2,
        "on_count": 2,
        "off_count": 0,
        "rep_count": 1,
    }
    relay = {"command": osdp.Command.Output, "output_no": 0, "control_code": 5, "timer_count": 30}
    return [led, beep, relay]


def main() -> int:
    args = _arguments()
    allowed = {int(number) for number in args.allow.split(",") if number.strip()}
    if args.listen:
        host, _, port = args.listen.rpartition(":")
        channel: osdp.Channel = ListeningChannel(host, int(port))
    else:
        channel = SerialChannel(args.serial, args.baud)
    scbk = None
    if args.scbk_file:
        with open(args.scbk_file, encoding="ascii") as handle:
            scbk = bytes.fromhex(handle.read().strip())
    answers: queue.Queue[dict[str, Any]] = queue.Queue()

    def on_event(_index: int, event: dict[str, Any]) -> int:
        if event.get("event") != osdp.Event.CardRead:
            return 0
        length, data = int(event["length"]), bytes(event["data"])
        bits = int.from_bytes(data, "big") >> (len(data) * 8 - length)
        number = wiegand26(bits, length, args.facility_code)
        granted = number in allowed
        verdict = "granted" if granted else "refused"
        print(f"card read: {length} bits, card number {number}: {verdict}", flush=True)
        # answered from the main thread: this handler runs inside libosdp's refresh, under
        # the lock that submit_command takes too (submitting here would deadlock)
        for command in _answer(granted):
            answers.put(command)
        return 0

    flags = [osdp.LibFlag.EnforceSecure] if scbk else []
    info = osdp.PDInfo(args.address, channel, scbk=scbk, flags=flags)
    panel = osdp.ControlPanel([info], log_level=osdp.LogLevel.Error, event_handler=on_event)
    panel.start()
    print(f"panel polling reader {args.address}; allow-list: {sorted(allowed)}", flush=True)
    try:
        _watch(panel, args.address, args.seconds, answers)
    except KeyboardInterrupt:
        pass
    finally:
        panel.stop()
    return 0


def _watch(panel: Any, address: int, seconds: float, answers: queue.Queue[dict[str, Any]]) -> None:
    """Send the answers to card reads; print the reader going on and off line; while it is
    off, try it again every 2 s (libosdp itself would wait 300 s)."""
    started, online, offline_since = time.monotonic(), False, time.monotonic()
    while not seconds or time.monotonic() - started < seconds:
        with contextlib.suppress(queue.Empty):
            panel.submit_command(address, answers.get(timeout=0.05))
        now = time.monotonic()
        now_online = bool(panel.is_online(address))
        if now_online != online:
            online = now_online
            secure = bool(panel.is_sc_active(address))
            state = "online" if online else "offline"
            print(f"reader {address} {state} (secure: {secure})", flush=True)
            offline_since = now
        if not online and now - offline_since > 2.0:
            panel.disable_pd(address)
            panel.enable_pd(address)
            offline_since = now


if __name__ == "__main__":
    sys.exit(main())
