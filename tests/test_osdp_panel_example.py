"""deploy/examples/osdp_panel.py, run as an integrator would (its own process, libosdp only):
facestream's OSDP reader connects to it over TCP on 127.0.0.1 with the secure channel, and a
card number on the allow-list is printed as granted, another as refused."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from osdp_support import KEY
from ports import free_port
from prometheus_client import CollectorRegistry
from waiting import wait_until

from pipeline.access.credentials import (
    CredentialFormat,
    OsdpMetrics,
    OsdpReader,
    OsdpReaderConfig,
    TcpChannel,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "examples" / "osdp_panel.py"


@pytest.mark.timeout(60)
def test_the_example_panel_prints_granted_and_refused_card_reads(tmp_path: Path) -> None:
    key_file = tmp_path / "scbk"
    key_file.write_text(KEY.hex())
    port = free_port()
    panel = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLE),
            "--listen",
            f"127.0.0.1:{port}",
            "--address",
            "3",
            "--scbk-file",
            str(key_file),
            "--facility-code",
            "42",
            "--allow",
            "4242",
            "--seconds",
            "30",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert panel.stdout is not None
        assert "panel polling reader 3" in panel.stdout.readline()
        config = OsdpReaderConfig.model_validate(
            {
                "channel": {"tcp": f"127.0.0.1:{port}"},
                "address": 3,
                "scbk_file": str(key_file),
                "format": CredentialFormat(kind="wiegand26", facility_code=42).model_dump(),
            }
        )
        reader = OsdpReader(
            "front",
            config,
            TcpChannel("127.0.0.1", port),
            scbk=KEY,
            metrics=OsdpMetrics.create(CollectorRegistry()),
            on_notice=lambda notice: None,
        )
        reader.start()
        try:
            wait_until(lambda: reader.link_up, 15.0, "the example panel polling the reader")
            assert reader.send_card(4242) == "queued"
            time.sleep(0.5)
            assert reader.send_card(1001) == "queued"
            lines: list[str] = []
            while len([line for line in lines if line.startswith("card read")]) < 2:
                line = panel.stdout.readline()
                assert line, f"the panel ended early: {lines}"
                lines.append(line.strip())
            wait_until(
                lambda: reader.indicator.led in {"green", "red"}, 5.0, "the panel's LED command"
            )
        finally:
            reader.stop()
    finally:
        panel.terminate()
        panel.wait(10)
    reads = [line for line in lines if line.startswith("card read")]
    assert reads == [
        "card read: 26 bits, card number 4242: granted",
        "card read: 26 bits, card number 1001: refused",
    ]
