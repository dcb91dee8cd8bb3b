"""Card credential formats: what number a door's reader sends, as the bits a panel expects.

* ``wiegand26`` (HID H10301): even parity, 8-bit facility code, 16-bit card number, odd parity.
* ``wiegand34`` (HID H10306): even parity, 16-bit facility code, 16-bit card number, odd parity.
* ``raw``: the card number alone in ``bits`` bits, no parity (panels that take raw numbers).

Leading parity covers the first half of the payload, trailing parity the second half. OSDP
carries the bits most significant first, left-justified in whole bytes (osdp_RAW, format 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from pipeline.access.credentials.errors import CredentialFormatError
from pipeline.config.base import StrictModel

__all__ = ["CardBits", "CardRead", "CredentialFormat", "decode_card", "encode_card"]

FormatKind = Literal["wiegand26", "wiegand34", "raw"]
# kind -> (facility code bits, card number bits); raw takes its width from ``bits``
_WIEGAND_FIELDS: dict[str, tuple[int, int]] = {"wiegand26": (8, 16), "wiegand34": (16, 16)}


class CredentialFormat(StrictModel):
    """How a door's card number is written on the wire."""

    kind: FormatKind = Field(default="wiegand26", description="wiegand26 | wiegand34 | raw")
    facility_code: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="site (facility) code of the Wiegand formats: 0-255 (26-bit), 0-65535 "
        "(34-bit); unused by raw",
    )
    bits: int = Field(default=32, ge=1, le=128, description="raw only: bits in the number")

    @model_validator(mode="after")
    def _facility_code_fits(self) -> CredentialFormat:
        if self.kind in _WIEGAND_FIELDS:
            width = _WIEGAND_FIELDS[self.kind][0]
            if self.facility_code >= 1 << width:
                raise ValueError(
                    f"facility_code {self.facility_code} does not fit {self.kind} "
                    f"({width} bits: 0-{(1 << width) - 1})"
                )
        return self

    @property
    def length(self) -> int:
        """Bits on the wire."""
        if self.kind == "raw":
            return self.bits
        facility, card = _WIEGAND_FIELDS[self.kind]
        return facility + card + 2

    @property
    def max_card_number(self) -> int:
        """The largest card number the format can carry."""
        card = self.bits if self.kind == "raw" else _WIEGAND_FIELDS[self.kind][1]
        return (1 << card) - 1

    def check(self, card_number: int, *, key: str = "card_number") -> None:
        """CredentialFormatError naming ``key`` unless ``card_number`` fits this format."""
        if isinstance(card_number, bool) or not isinstance(card_number, int):
            raise CredentialFormatError(f"{key}: expected an integer, got {card_number!r}")
        if not 0 <= card_number <= self.max_card_number:
            raise CredentialFormatError(
                f"{key}: {card_number} does not fit {self.kind} (card number "
                f"0-{self.max_card_number})"
            )


@dataclass(frozen=True, slots=True)
class CardBits:
    """Card data as OSDP carries it: ``length`` bits, most significant first, left-justified
    in ``data`` (the last byte padded with zero bits)."""

    length: int
    data: bytes

    @classmethod
    def from_int(cls, value: int, length: int) -> CardBits:
        """``length`` bits of ``value``, packed for OSDP."""
        padding = -length % 8
        return cls(length, (value << padding).to_bytes((length + padding) // 8, "big"))

    def as_int(self) -> int:
        """The bits as one unsigned number (padding removed)."""
        if len(self.data) * 8 < self.length:
            raise CredentialFormatError(
                f"card data: {len(self.data)} bytes cannot hold {self.length} bits"
            )
        padding = len(self.data) * 8 - self.length
        return int.from_bytes(self.data, "big") >> padding


@dataclass(frozen=True, slots=True)
class CardRead:
    """A decoded card: its facility code (0 for raw) and card number."""

    facility_code: int
    card_number: int


def _parity_ok(value: int, *, odd: bool) -> bool:
    return (value.bit_count() % 2 == 1) == odd


def encode_card(card_number: int, card_format: CredentialFormat) -> CardBits:
    """The bits a reader sends for ``card_number`` (CredentialFormatError if it does not fit)."""
    card_format.check(card_number)
    if card_format.kind == "raw":
        return CardBits.from_int(card_number, card_format.bits)
    facility_bits, card_bits = _WIEGAND_FIELDS[card_format.kind]
    payload_bits = facility_bits + card_bits
    payload = (card_format.facility_code << card_bits) | card_number
    half = payload_bits // 2
    first, second = payload >> half, payload & ((1 << half) - 1)
    leading = 0 if _parity_ok(first, odd=False) else 1  # makes the first half even
    trailing = 0 if _parity_ok(second, odd=True) else 1  # makes the second half odd
    value = (leading << (payload_bits + 1)) | (payload << 1) | trailing
    return CardBits.from_int(value, payload_bits + 2)


def decode_card(bits: CardBits, card_format: CredentialFormat) -> CardRead:
    """The facility code and card number in ``bits``; CredentialFormatError when the length,
    a parity bit or the facility code is not what ``card_format`` says."""
    if bits.length != card_format.length:
        raise CredentialFormatError(
            f"card data: {bits.length} bits, but the format {card_format.kind} has "
            f"{card_format.length}"
        )
    value = bits.as_int()
    if card_format.kind == "raw":
        return CardRead(0, value)
    facility_bits, card_bits = _WIEGAND_FIELDS[card_format.kind]
    payload_bits = facility_bits + card_bits
    half = payload_bits // 2
    leading, payload, trailing = value >> (payload_bits + 1), (value >> 1), value & 1
    payload &= (1 << payload_bits) - 1
    first, second = payload >> half, payload & ((1 << half) - 1)
    if not _parity_ok(first | (leading << half), odd=False) or not _parity_ok(
        (second << 1) | trailing, odd=True
    ):
        raise CredentialFormatError(f"card data: {card_format.kind} parity check failed")
    facility_code = payload >> card_bits
    if facility_code != card_format.facility_code:
        raise CredentialFormatError(
            f"card data: facility code {facility_code}, but this door expects "
            f"{card_format.facility_code}"
        )
    return CardRead(facility_code, payload & ((1 << card_bits) - 1))
