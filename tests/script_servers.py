"""The test servers run as subprocesses on 127.0.0.1 (tests/rtsp_server.py over RTSP,
tests/mjpeg_server.py over HTTP), with the controls the capture and chaos tests need: start,
kill, freeze (SIGSTOP) and thaw."""

from __future__ import annotations

import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SERVER_READY_SECONDS = 20.0
TESTS = Path(__file__).resolve().parent


class ScriptServer:
    """A test server script run as a subprocess: start, kill, freeze and thaw it.

    The script takes ``--port P --video FILE`` (port 0: pick one) and prints ``READY <port>``.
    """

    script: Path
    url_template: str
    extra_arguments: tuple[str, ...] = ()

    def __init__(self, video: Path, log_path: Path) -> None:
        self.video = video
        self.log_path = log_path
        self.process: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The stream's URL."""
        return self.url_template.format(port=self.port)

    def start(self) -> None:
        """Start the server (on the previous port after a kill) and wait for READY."""
        command = [sys.executable, str(self.script), "--port", str(self.port)]
        command += ["--video", str(self.video), *self.extra_arguments]
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], SERVER_READY_SECONDS)
        line = self.process.stdout.readline() if ready else ""
        if not line.startswith("READY"):
            self.kill()
            pytest.fail(f"{self.script.name} not ready: {line!r}; log: {self.log_path.read_text()}")
        self.port = int(line.split()[1])

    def kill(self) -> None:
        """SIGKILL the server and reap it (a camera sees the connection drop)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped process must run to die
            self.process.kill()
            self.process.wait(timeout=10)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def freeze(self) -> None:
        """SIGSTOP the server: connections stay open but nothing is sent (a hung camera)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT the server."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


class RtspServer(ScriptServer):
    """tests/rtsp_server.py: the clip over RTSP (H.264)."""

    script = TESTS / "rtsp_server.py"
    url_template = "rtsp://127.0.0.1:{port}/stream"
