"""OSDP with real libosdp on both sides (facestream's reader, a panel), joined by sockets
through a cable that can be cut: grants arrive as card reads with the secure channel on, a
wrong key never brings the channel up, a link drop is reported and a grant while down is
refused and counted. Also the credential formats and the config errors that name the key."""

from __future__ import annotations

import os
import pty
import queue
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from osdp_support import ADDRESS, KEY, Bench, reader_and_panel, reader_config
from pydantic import ValidationError
from waiting import wait_until

from pipeline.access.credentials import (
    CardBits,
    CredentialFormat,
    CredentialFormatError,
    OsdpChannelConfig,
    OsdpNotice,
    OsdpReaderConfig,
    SerialChannel,
    decode_card,
    encode_card,
    read_scbk,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _test_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESTREAM_TEST_SCBK", KEY.hex())


def _notices(bench: Bench, kind: str, timeout_seconds: float) -> OsdpNotice:
    deadline = time.monotonic() + timeout_seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            notice = bench.notices.get(timeout=left)
        except queue.Empty:
            break
        if notice.kind == kind:
            return notice
    raise AssertionError(f"no {kind} notice within {timeout_seconds} s")


def _count(bench: Bench, name: str, **labels: str) -> float:
    value = bench.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@pytest.fixture
def bench() -> Iterator[Bench]:
    with reader_and_panel(reader_config()) as started:
        _notices(started, "osdp_link_up", 10.0)
        wait_until(lambda: started.panel.secure(ADDRESS), 5.0, "the panel's secure channel on")
        yield started


def test_a_grant_arrives_at_the_panel_as_the_card_number_over_the_secure_channel(
    bench: Bench,
) -> None:
    wait_until(lambda: bench.panel.secure(ADDRESS), 5.0, "the panel's secure channel on")
    assert bench.reader.send_card(4242) == "queued"
    read = bench.card_reads.get(timeout=5.0)
    card_format = CredentialFormat(kind="wiegand26", facility_code=18)
    assert read.address == ADDRESS
    assert read.bits == encode_card(4242, card_format)
    assert decode_card(read.bits, card_format).card_number == 4242
    wait_until(
        lambda: (
            _count(bench, "facestream_osdp_card_reads_total", door="front", result="delivered") == 1
        ),
        timeout_seconds=5.0,
        what="the panel acknowledged the card read",
    )


def test_panel_led_buzzer_and_output_commands_are_counted_and_shown(bench: Bench) -> None:
    assert bench.panel.send_led(ADDRESS, green=True)
    assert bench.panel.send_buzzer(ADDRESS)
    assert bench.panel.send_output(ADDRESS, output=0, on_seconds=1.0)

    def counted() -> bool:
        return all(
            _count(bench, "facestream_osdp_commands_total", door="front", command=command) == 1
            for command in ("led", "buzzer", "output")
        )

    wait_until(counted, timeout_seconds=5.0, what="led, buzzer and output commands counted")
    assert bench.reader.indicator.led == "green"


def test_a_wrong_key_never_brings_the_channel_up_and_is_reported() -> None:
    with reader_and_panel(reader_config(), panel_key=bytes(16)) as bench:
        notice = _notices(bench, "osdp_secure_channel_failed", 10.0)
        assert notice.door_id == "front"
        assert KEY.hex() not in str(notice.detail), "the key must never be reported"
        assert not bench.reader.link_up
        assert not bench.panel.secure(ADDRESS)
        assert bench.reader.send_card(4242) == "refused_link_down"
        assert bench.card_reads.empty()
        assert (
            _count(
                bench, "facestream_osdp_secure_channel_failures_total", door="front", role="reader"
            )
            == 1
        )


def test_link_drop_and_return_are_reported_and_a_grant_while_down_is_refused_not_queued(
    bench: Bench,
) -> None:
    bench.cable.cut.set()
    _notices(bench, "osdp_link_down", 10.0)
    assert bench.reader.send_card(1111) == "refused_link_down"
    assert (
        _count(bench, "facestream_osdp_card_reads_total", door="front", result="refused_link_down")
        == 1
    )
    assert _count(bench, "facestream_osdp_link_up", door="front", role="reader") == 0
    bench.cable.cut.clear()
    _notices(bench, "osdp_link_up", 15.0)
    time.sleep(1.0)  # a queued grant would have been delivered by now
    assert bench.card_reads.empty(), "a grant refused while down must never arrive later"
    assert bench.reader.send_card(2222) == "queued"
    assert decode_card(bench.card_reads.get(timeout=5.0).bits, bench_format()).card_number == 2222


def test_a_card_read_not_taken_before_the_link_drops_is_withdrawn(bench: Bench) -> None:
    bench.cable.cut.set()  # cut before the next poll can carry it
    result = bench.reader.send_card(3333)
    _notices(bench, "osdp_link_down", 10.0)
    bench.cable.cut.clear()
    _notices(bench, "osdp_link_up", 15.0)
    time.sleep(1.0)
    if result == "queued":
        assert bench.card_reads.empty(), "a read queued before the drop must not arrive late"
        assert (
            _count(bench, "facestream_osdp_card_reads_total", door="front", result="expired") == 1
        )


def bench_format() -> CredentialFormat:
    return CredentialFormat(kind="wiegand26", facility_code=18)


# ---- formats ----


@pytest.mark.parametrize(
    ("card_format", "number"),
    [
        (CredentialFormat(kind="wiegand26", facility_code=255), 65535),
        (CredentialFormat(kind="wiegand26", facility_code=0), 0),
        (CredentialFormat(kind="wiegand34", facility_code=65535), 1),
        (CredentialFormat(kind="raw", bits=40), (1 << 40) - 1),
    ],
)
def test_card_formats_round_trip(card_format: CredentialFormat, number: int) -> None:
    bits = encode_card(number, card_format)
    assert bits.length == card_format.length
    assert decode_card(bits, card_format).card_number == number


def test_26_bit_wiegand_matches_the_published_layout() -> None:
    # H10301, facility 18, card 1234: 0 00010010 0000010011010010 0 (both halves' parity 0)
    bits = encode_card(1234, CredentialFormat(kind="wiegand26", facility_code=18))
    assert bits == CardBits(26, bytes([0b00001001, 0b00000010, 0b01101001, 0b00000000]))


def test_a_card_number_too_large_for_26_bit_is_refused_naming_the_key() -> None:
    with pytest.raises(CredentialFormatError, match=r"card_number: 70000 does not fit wiegand26"):
        encode_card(70000, CredentialFormat(kind="wiegand26"))


def test_a_corrupted_parity_bit_or_another_site_is_refused() -> None:
    card_format = CredentialFormat(kind="wiegand26", facility_code=18)
    bits = encode_card(1234, card_format)
    flipped = CardBits(26, bytes([bits.data[0] ^ 0x80]) + bits.data[1:])
    with pytest.raises(CredentialFormatError, match="parity"):
        decode_card(flipped, card_format)
    with pytest.raises(CredentialFormatError, match="facility code 18"):
        decode_card(bits, CredentialFormat(kind="wiegand26", facility_code=19))


def test_a_facility_code_too_large_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ValidationError, match="facility_code 300 does not fit wiegand26"):
        CredentialFormat(kind="wiegand26", facility_code=300)


# ---- channels and keys ----


def test_an_unknown_serial_device_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ValidationError) as caught:
        OsdpChannelConfig(serial_device=Path("/dev/ttyNO-SUCH-ADAPTER"))
    assert "serial_device" in str(caught.value)
    assert "no such serial device" in str(caught.value)


def test_a_pty_serves_as_a_serial_device() -> None:
    controller, device = pty.openpty()
    try:
        config = OsdpChannelConfig(serial_device=Path(os.ttyname(device)), baud=115200)
        channel = SerialChannel.open(str(config.serial_device), config.baud)
        try:
            assert channel.write(b"\x53\x65") == 2
            assert os.read(controller, 16) == b"\x53\x65"
            os.write(controller, b"\xff")
            wait_until(lambda: channel.read(16) == b"\xff", timeout_seconds=2.0, what="a byte back")
        finally:
            channel.close()
    finally:
        os.close(controller)
        os.close(device)


def test_the_key_comes_from_a_file_or_the_environment_and_is_never_in_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "scbk"
    key_file.write_text(KEY.hex() + "\n")
    assert read_scbk(reader_config(scbk_env=None, scbk_file=key_file), key="doors.0.osdp") == KEY
    key_file.write_text("00" * 15)
    with pytest.raises(CredentialFormatError, match=r"doors.0.osdp.scbk_file: the key must be"):
        read_scbk(reader_config(scbk_env=None, scbk_file=key_file), key="doors.0.osdp")
    monkeypatch.delenv("FACESTREAM_TEST_SCBK")
    with pytest.raises(CredentialFormatError, match=r"scbk_env: \$FACESTREAM_TEST_SCBK is not set"):
        read_scbk(reader_config(), key="doors.0.osdp")


def test_a_secure_channel_without_a_key_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="require_secure_channel needs a key"):
        OsdpReaderConfig.model_validate({"channel": {"tcp": "127.0.0.1:4000"}, "address": 1})
