"""Door access beyond the camera: credentials (card formats, card numbers of identities) and
OSDP (facestream as a reader to a panel; card readers it polls for card + face doors).

``DoorAccess`` and ``AccessWiring`` (``pipeline.access.doors``) are loaded on first use: that
module needs ``pipeline.access.policy``, which itself imports the OSDP settings from here.
"""

from __future__ import annotations

import importlib
from typing import Any

from pipeline.access import credentials
from pipeline.access.credentials import (
    CredentialFormat,
    CredentialFormatError,
    CredentialInUseError,
    CredentialStore,
    OsdpCardReaderConfig,
    OsdpChannelError,
    OsdpMetrics,
    OsdpReaderConfig,
)

__all__ = [
    "AccessWiring",
    "CredentialFormat",
    "CredentialFormatError",
    "CredentialInUseError",
    "CredentialStore",
    "DoorAccess",
    "OsdpCardReaderConfig",
    "OsdpChannelError",
    "OsdpMetrics",
    "OsdpReaderConfig",
    "credentials",
]


def __getattr__(name: str) -> Any:
    if name in {"AccessWiring", "DoorAccess"}:
        return getattr(importlib.import_module("pipeline.access.doors"), name)
    raise AttributeError(f"module 'pipeline.access' has no attribute {name!r}")
