"""Byte channels libosdp reads and writes: a socket (TCP to an RS-485-over-IP adapter, or one
end of a socket pair) and a serial device (an RS-485 adapter, or a pty in tests).

libosdp calls ``read``/``write`` from its refresh thread and a Python exception there ends that
thread for good, so these never raise: a failed read is "no bytes yet", a failed write is "0
bytes sent", and libosdp's own timeouts then report the link down. ``last_received`` (monotonic
seconds) tells the reader how long the panel has been silent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import termios
import threading
import time
import tty

import osdp

from pipeline.access.credentials.config import OsdpChannelConfig
from pipeline.access.credentials.errors import OsdpChannelError

__all__ = ["ByteChannel", "SerialChannel", "SocketChannel", "TcpChannel", "open_channel"]

_log = logging.getLogger(__name__)
_BAUD = {
    9600: termios.B9600,
    19200: termios.B19200,
    38400: termios.B38400,
    57600: termios.B57600,
    115200: termios.B115200,
    230400: termios.B230400,
}
_RECONNECT_SECONDS = 1.0


class ByteChannel(osdp.Channel):  # type: ignore[misc]  # libosdp ships no types
    """A channel that never raises and remembers when bytes last arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.last_received = -1e9

    def read(self, max_bytes: int) -> bytes:
        try:
            data = self._read(max_bytes)
        except OSError:
            return b""
        if data:
            self.last_received = time.monotonic()
        return data

    def write(self, buf: bytes) -> int:
        try:
            return self._write(buf)
        except OSError:
            return 0

    def flush(self) -> None:
        """Nothing to flush: writes go straight to the socket or device."""

    def close(self) -> None:
        """Release the socket or device."""

    def _read(self, max_bytes: int) -> bytes:
        raise NotImplementedError

    def _write(self, buf: bytes) -> int:
        raise NotImplementedError


class SocketChannel(ByteChannel):
    """A connected socket (one end of a socket pair, an accepted connection)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        sock.setblocking(False)
        self._sock = sock

    def _read(self, max_bytes: int) -> bytes:
        try:
            return self._sock.recv(max_bytes)
        except BlockingIOError:
            return b""

    def _write(self, buf: bytes) -> int:
        try:
            return self._sock.send(buf)
        except BlockingIOError:
            return 0

    def close(self) -> None:
        self._sock.close()


class TcpChannel(ByteChannel):
    """A TCP client to an RS-485-over-IP adapter; reconnects (at most once a second) when the
    connection fails or the adapter closes it."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self._address = (host, port)
        self._sock: socket.socket | None = None
        self._next_try = 0.0
        self._lock = threading.Lock()
        self._closed = False

    def _connected(self) -> socket.socket | None:
        with self._lock:
            if self._sock is not None or self._closed:
                return self._sock
            now = time.monotonic()
            if now < self._next_try:
                return None
            self._next_try = now + _RECONNECT_SECONDS
            try:
                sock = socket.create_connection(self._address, timeout=0.5)
            except OSError:
                return None
            sock.setblocking(False)
            self._sock = sock
            return sock

    def _drop(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
            self._sock = None

    def _read(self, max_bytes: int) -> bytes:
        sock = self._connected()
        if sock is None:
            return b""
        try:
            data = sock.recv(max_bytes)
        except BlockingIOError:
            return b""
        except OSError:
            self._drop()
            return b""
        if not data:  # closed by the adapter
            self._drop()
        return data

    def _write(self, buf: bytes) -> int:
        sock = self._connected()
        if sock is None:
            return 0
        try:
            return sock.send(buf)
        except BlockingIOError:
            return 0
        except OSError:
            self._drop()
            return 0

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._drop()


class SerialChannel(ByteChannel):
    """A serial device in raw mode at ``baud``, 8N1, non-blocking."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    @classmethod
    def open(cls, device: str, baud: int) -> SerialChannel:
        """Open ``device``; OSError when it cannot be opened or configured."""
        fd = os.open(device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            tty.setraw(fd)
            attributes = termios.tcgetattr(fd)
            attributes[4] = attributes[5] = _BAUD[baud]  # input and output speed
            termios.tcsetattr(fd, termios.TCSANOW, attributes)
        except (OSError, termios.error) as exc:
            os.close(fd)
            raise OSError(f"cannot configure {device}: {exc}") from exc
        return cls(fd)

    def _read(self, max_bytes: int) -> bytes:
        try:
            return os.read(self._fd, max_bytes)
        except BlockingIOError:
            return b""

    def _write(self, buf: bytes) -> int:
        try:
            return os.write(self._fd, buf)
        except BlockingIOError:
            return 0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def open_channel(config: OsdpChannelConfig, *, key: str) -> ByteChannel:
    """The channel ``config`` names; OsdpChannelError naming ``key`` when the serial device
    cannot be opened (a TCP adapter that does not answer yet is retried, not an error)."""
    if config.tcp is not None:
        host, _, port = config.tcp.rpartition(":")
        return TcpChannel(host.strip("[]"), int(port))
    assert config.serial_device is not None  # the config allows no third case
    try:
        return SerialChannel.open(str(config.serial_device), config.baud)
    except OSError as exc:
        raise OsdpChannelError(
            f"{key}.serial_device: cannot open {config.serial_device}: {exc}"
        ) from exc
