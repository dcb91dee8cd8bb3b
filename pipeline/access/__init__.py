"""Door access: the decisions and what carries them out. ``policy`` turns tracks into one
decision per door (K-of-N, liveness, cooldown), ``recorder`` writes each to the audit log
(``audit``, the HMAC chain) before publishing it, ``doors`` and ``credentials`` wire doors to
OSDP (facestream as a reader to a panel; card readers it polls for card + face doors), and
``http`` holds the credential routes. Only the credential and OSDP names are re-exported here.

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
