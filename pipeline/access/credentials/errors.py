"""Errors of door credentials and OSDP; all derive from the project's error root::

ConfigError(ValueError)                       (engines.errors)
└── CredentialFormatError                     a card number does not fit a door's format,
                                              or card bits do not decode (names the key)
IdentityExistsError(GalleryRequestError)      (pipeline.errors)
└── CredentialInUseError                      the card number belongs to another identity
FaceStreamError
└── OsdpChannelError(ConnectionError)         the serial device or TCP endpoint of an OSDP
                                              channel cannot be opened (names the key)
"""

from __future__ import annotations

from engines.errors import ConfigError, FaceStreamError
from pipeline.errors import IdentityExistsError

__all__ = ["CredentialFormatError", "CredentialInUseError", "OsdpChannelError"]


class CredentialFormatError(ConfigError):
    """A card number does not fit a credential format, or card bits fail to decode (wrong
    length, bad parity, another facility code); the message names the key."""


class CredentialInUseError(IdentityExistsError):
    """The card number is already held by another identity (one card, one person)."""


class OsdpChannelError(FaceStreamError, ConnectionError):
    """An OSDP channel (serial device or TCP endpoint) cannot be opened; names the key."""
