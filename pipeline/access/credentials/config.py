"""OSDP settings of a door: the channel to the panel (or to a card reader), the PD address,
the secure-channel key, the credential format.

The secure-channel base key (SCBK, 16 bytes as 32 hex digits) is never written in the config:
``scbk_file`` names a file holding it, or ``scbk_env`` an environment variable; it is read when
the door starts and never logged or printed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.access.credentials.errors import CredentialFormatError
from pipeline.access.credentials.formats import CredentialFormat
from pipeline.config.base import StrictModel

__all__ = ["OsdpCardReaderConfig", "OsdpChannelConfig", "OsdpReaderConfig", "read_scbk"]


class OsdpChannelConfig(StrictModel):
    """Where OSDP bytes go: an RS-485 adapter's serial device, or a TCP endpoint of an
    RS-485-over-IP adapter (facestream connects to it)."""

    serial_device: Path | None = Field(
        default=None, description="serial device of the RS-485 adapter, e.g. /dev/ttyUSB0"
    )
    baud: Literal[9600, 19200, 38400, 57600, 115200, 230400] = Field(
        default=9600, description="serial speed; OSDP's default is 9600"
    )
    tcp: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.:\[\]-]{1,253}:[0-9]{1,5}$",
        description="host:port of an RS-485-over-IP adapter, instead of serial_device",
    )

    @field_validator("serial_device")
    @classmethod
    def _serial_device_exists(cls, device: Path | None) -> Path | None:
        if device is None:
            return None
        try:
            mode = device.stat().st_mode
        except OSError as exc:
            raise ValueError(f"no such serial device {str(device)!r}: {exc.strerror}") from exc
        if not stat.S_ISCHR(mode):
            raise ValueError(f"{str(device)!r} is not a serial (character) device")
        return device

    @model_validator(mode="after")
    def _one_channel(self) -> OsdpChannelConfig:
        if (self.serial_device is None) == (self.tcp is None):
            raise ValueError("set exactly one of serial_device and tcp")
        return self

    @property
    def bus(self) -> str:
        """The bus this channel is: PD addresses must be unique on it."""
        return (
            f"serial:{self.serial_device}" if self.serial_device is not None else f"tcp:{self.tcp}"
        )


class _OsdpLink(StrictModel):
    channel: OsdpChannelConfig
    address: int = Field(default=0, ge=0, le=126, description="PD address on the bus (0-126)")
    scbk_file: Path | None = Field(
        default=None, description="file holding the 16-byte secure-channel key as 32 hex digits"
    )
    scbk_env: str | None = Field(
        default=None,
        pattern=r"^[A-Z_][A-Z0-9_]{0,127}$",
        description="environment variable holding the key, instead of scbk_file",
    )
    require_secure_channel: bool = Field(
        default=True,
        description="refuse to talk without the secure channel (needs a key); false only for "
        "bench tests",
    )
    format: CredentialFormat = CredentialFormat()

    @model_validator(mode="after")
    def _key_when_secure(self) -> _OsdpLink:
        if self.scbk_file is not None and self.scbk_env is not None:
            raise ValueError("set at most one of scbk_file and scbk_env")
        if self.require_secure_channel and self.scbk_file is None and self.scbk_env is None:
            raise ValueError(
                "require_secure_channel needs a key: set scbk_file or scbk_env (or set "
                "require_secure_channel = false, for bench tests only)"
            )
        return self


class OsdpReaderConfig(_OsdpLink):
    """facestream as an OSDP reader (PD) on the panel's bus: a grant is sent to the panel as a
    card read carrying the identity's card number."""

    link_timeout_seconds: float = Field(
        default=2.0,
        gt=0.1,
        le=8.0,
        description="no poll from the panel for this long: the link is down and grants are "
        "refused (a panel polls several times a second; OSDP's own limit is 8 s)",
    )
    secure_channel_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="polled but no secure channel after this long: osdp_secure_channel_failed "
        "(usually a wrong key)",
    )


class OsdpCardReaderConfig(_OsdpLink):
    """A card reader facestream polls as an OSDP panel (CP), for card + face doors."""

    reconnect_seconds: float = Field(
        default=2.0, gt=0, le=300, description="after the reader goes offline, retry this soon"
    )


def read_scbk(link: OsdpReaderConfig | OsdpCardReaderConfig, *, key: str) -> bytes | None:
    """The link's secure-channel key (None when it has none); CredentialFormatError naming
    ``key`` when the file or variable is missing or is not 32 hex digits. The key itself
    never appears in a message."""
    if link.scbk_file is not None:
        where = f"{key}.scbk_file"
        try:
            text = link.scbk_file.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise CredentialFormatError(f"{where}: cannot read {link.scbk_file}: {exc}") from exc
    elif link.scbk_env is not None:
        where = f"{key}.scbk_env"
        text = os.environ.get(link.scbk_env, "").strip()
        if not text:
            raise CredentialFormatError(f"{where}: ${link.scbk_env} is not set")
    else:
        return None
    try:
        scbk = bytes.fromhex(text)
    except ValueError:
        scbk = b""
    if len(scbk) != 16:
        raise CredentialFormatError(f"{where}: the key must be 32 hex digits (16 bytes)")
    return scbk
