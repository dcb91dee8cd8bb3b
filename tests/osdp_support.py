"""A reader and a panel joined by real sockets, for the OSDP tests and the latency benchmark:
libosdp on both sides, and between them a cable that can be cut (bytes sent while it is cut
are lost, as on a pulled RS-485 pair)."""

from __future__ import annotations

import queue
import selectors
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from pipeline.access.credentials import (
    ByteChannel,
    CredentialFormat,
    OsdpChannelConfig,
    OsdpMetrics,
    OsdpNotice,
    OsdpPanel,
    OsdpReader,
    OsdpReaderConfig,
    PanelCardRead,
    PanelPeer,
    SocketChannel,
)

KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
ADDRESS = 101


class Cable:
    """Forwards bytes between two socket pairs until cut; while cut, bytes are dropped."""

    def __init__(self) -> None:
        self.reader_end, self._reader_side = socket.socketpair()
        self.panel_end, self._panel_side = socket.socketpair()
        self.cut = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cable", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        peers = {self._reader_side: self._panel_side, self._panel_side: self._reader_side}
        peers_by_fd = {sock.fileno(): sock for sock in peers}
        with selectors.DefaultSelector() as selector:
            for sock in peers:
                selector.register(sock, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.05):
                    sock = peers_by_fd[key.fd]
                    try:
                        data = sock.recv(4096)
                    except OSError:
                        return
                    if data and not self.cut.is_set():
                        peers[sock].sendall(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        for sock in (self._reader_side, self._panel_side):
            sock.close()


@dataclass
class Bench:
    """A facestream reader and a panel on one cable; what the panel and the reader reported."""

    reader: OsdpReader
    panel: OsdpPanel
    cable: Cable
    metrics: OsdpMetrics
    registry: CollectorRegistry
    card_reads: queue.Queue[PanelCardRead] = field(default_factory=queue.Queue)
    notices: queue.Queue[OsdpNotice] = field(default_factory=queue.Queue)


def reader_config(**changes: object) -> OsdpReaderConfig:
    settings: dict[str, object] = {
        "channel": OsdpChannelConfig(tcp="127.0.0.1:1"),  # replaced by the cable in tests
        "address": ADDRESS,
        "scbk_env": "FACESTREAM_TEST_SCBK",
        "format": CredentialFormat(kind="wiegand26", facility_code=18),
        "link_timeout_seconds": 1.0,
        "secure_channel_timeout_seconds": 1.0,
    }
    settings.update(changes)
    return OsdpReaderConfig.model_validate(settings)


@contextmanager
def reader_and_panel(
    config: OsdpReaderConfig, *, reader_key: bytes = KEY, panel_key: bytes = KEY
) -> Iterator[Bench]:
    """A started reader (facestream's) and panel joined by a ``Cable``; stopped on exit."""
    registry = CollectorRegistry()
    metrics = OsdpMetrics.create(registry)
    cable = Cable()
    card_reads: queue.Queue[PanelCardRead] = queue.Queue()
    notices: queue.Queue[OsdpNotice] = queue.Queue()
    reader = OsdpReader(
        "front",
        config,
        SocketChannel(cable.reader_end),
        scbk=reader_key,
        metrics=metrics,
        on_notice=notices.put,
    )
    panel = OsdpPanel(
        [PanelPeer(config.address, SocketChannel(cable.panel_end), panel_key)],
        on_card=card_reads.put,
        reconnect_seconds=0.5,
    )
    reader.start()
    panel.start()
    try:
        yield Bench(reader, panel, cable, metrics, registry, card_reads, notices)
    finally:
        panel.stop()
        reader.stop()
        cable.close()


class ListeningChannel(ByteChannel):
    """The panel's end of an RS-485-over-IP link: listens on 127.0.0.1 and serves the one
    reader that connects (a new connection replaces the old)."""

    def __init__(self) -> None:
        super().__init__()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self._listener.setblocking(False)
        self.port = int(self._listener.getsockname()[1])
        self._peer: socket.socket | None = None

    def _accepted(self) -> socket.socket | None:
        try:
            peer, _ = self._listener.accept()
        except BlockingIOError:
            return self._peer
        peer.setblocking(False)
        if self._peer is not None:
            self._peer.close()
        self._peer = peer
        return peer

    def _read(self, max_bytes: int) -> bytes:
        peer = self._accepted()
        if peer is None:
            return b""
        try:
            return peer.recv(max_bytes)
        except BlockingIOError:
            return b""

    def _write(self, buf: bytes) -> int:
        peer = self._accepted()
        if peer is None:
            return len(buf)  # nobody on the line yet: sent into the void, as on RS-485
        try:
            return peer.send(buf)
        except BlockingIOError:
            return 0

    def close(self) -> None:
        if self._peer is not None:
            self._peer.close()
        self._listener.close()
