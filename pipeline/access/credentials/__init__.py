"""Door credentials: card formats, the card number each identity holds, and OSDP (a reader
facestream presents to a panel, and a panel that polls card readers)."""

from pipeline.access.credentials.channels import (
    ByteChannel,
    SerialChannel,
    SocketChannel,
    TcpChannel,
    open_channel,
)
from pipeline.access.credentials.config import (
    OsdpCardReaderConfig,
    OsdpChannelConfig,
    OsdpReaderConfig,
    read_scbk,
)
from pipeline.access.credentials.errors import (
    CredentialFormatError,
    CredentialInUseError,
    OsdpChannelError,
)
from pipeline.access.credentials.formats import (
    CardBits,
    CardRead,
    CredentialFormat,
    decode_card,
    encode_card,
)
from pipeline.access.credentials.metrics import OsdpMetrics
from pipeline.access.credentials.osdp_panel import OsdpPanel, PanelCardRead, PanelPeer
from pipeline.access.credentials.osdp_reader import (
    CardSendResult,
    OsdpNotice,
    OsdpReader,
    ReaderIndicator,
)
from pipeline.access.credentials.store import CredentialStore

__all__ = [
    "ByteChannel",
    "CardBits",
    "CardRead",
    "CardSendResult",
    "CredentialFormat",
    "CredentialFormatError",
    "CredentialInUseError",
    "CredentialStore",
    "OsdpCardReaderConfig",
    "OsdpChannelConfig",
    "OsdpChannelError",
    "OsdpMetrics",
    "OsdpNotice",
    "OsdpPanel",
    "OsdpReader",
    "OsdpReaderConfig",
    "PanelCardRead",
    "PanelPeer",
    "ReaderIndicator",
    "SerialChannel",
    "SocketChannel",
    "TcpChannel",
    "decode_card",
    "encode_card",
    "open_channel",
    "read_scbk",
]
