"""What a camera added through the API (``POST /v1/streams``) may point at.

A camera URL is handed to FFmpeg or GStreamer, which open whatever they are given: through
the API, that made the service fetch internal URLs (cloud metadata on 169.254.169.254), scan
ports (open and closed ports showed in ``last_error``) and serve the service user's own files
back through the preview. Cameras from the config file are trusted as written; one from the
API is admitted only when:

- it is an ``rtsp``, ``rtsps``, ``http`` or ``https`` URL or a V4L2 device (``/dev/videoN`` or
  an index); every other scheme (``tcp:``, ``ftp:``, ``file:``, ``concat:``, ...) is refused;
- a file path names a regular file under ``capture.media_dir`` (symbolic links resolved; the
  camera reads the resolved path, so a link swapped afterwards changes nothing);
- every address its host resolves to is public, or inside ``capture.api_allowed_networks``.

What this does not stop (docs/security.md): a host that resolves to a public address now and
to a private one at the next connect (DNS rebinding), and an HTTP redirect or an RTSP server
pointing the client elsewhere. FFmpeg's protocol whitelist (``opencv_source``) keeps those on
the stream's own protocols.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.capture.config import CameraConfig, CaptureConfig, source_kind
from pipeline.errors import CameraUrlRefusedError
from pipeline.redact import redact_credentials

__all__ = ["API_SCHEMES", "admit_api_camera"]

API_SCHEMES = frozenset({"rtsp", "rtsps", "http", "https"})
_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
# FFmpeg reads "name:" (concat:, subfile:, file:, pipe:) as a protocol even without "//"
_SCHEME_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# characters where URL parsers disagree (urlsplit vs FFmpeg vs GStreamer) about the host
_AMBIGUOUS = re.compile(r"[\s\\#\x00-\x1f\x7f]")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def admit_api_camera(camera: CameraConfig, capture: CaptureConfig) -> CameraConfig:
    """``camera`` as the API may start it (a file path resolved), or CameraUrlRefusedError
    naming the reason: ``scheme_not_allowed``, ``malformed_url``, ``file_not_allowed``,
    ``file_outside_media_dir``, ``unresolvable_host`` or ``private_address``."""
    url = camera.url
    if source_kind(url) == "device":
        return camera
    assert isinstance(url, str)  # an int is a device index
    shown = redact_credentials(url)
    if _AMBIGUOUS.search(url):
        raise CameraUrlRefusedError(
            "malformed_url", f"camera URL {shown!r} holds whitespace, '#', '\\\\' or a control "
            "character, which URL parsers read differently",
        )  # fmt: skip
    if _SCHEME_PREFIX.match(url):
        scheme = url.split(":", 1)[0].lower()
        if scheme not in API_SCHEMES or not url[len(scheme) + 1 :].startswith("//"):
            raise CameraUrlRefusedError(
                "scheme_not_allowed",
                f"camera URL {shown!r}: the API takes rtsp://, rtsps://, http://, https:// "
                "and /dev/videoN only",
            )
        _check_host(url, capture)
        return camera
    resolved = _media_file(url, capture)
    return camera.model_copy(update={"url": str(resolved)})


def _media_file(path_text: str, capture: CaptureConfig) -> Path:
    if capture.media_dir is None:
        raise CameraUrlRefusedError(
            "file_not_allowed",
            "the API takes no file paths: set capture.media_dir to the folder of the videos "
            "it may read, or list the camera in the config file",
        )
    media_dir = capture.media_dir.resolve()
    candidate = (media_dir / path_text).resolve()  # an absolute path_text replaces media_dir
    if not (candidate.is_relative_to(media_dir) and candidate.is_file()):
        raise CameraUrlRefusedError(
            "file_outside_media_dir",
            f"{path_text!r} is not a file under capture.media_dir ({media_dir})",
        )
    return candidate


def _check_host(url: str, capture: CaptureConfig) -> None:
    shown = redact_credentials(url)
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port or _DEFAULT_PORTS[parts.scheme.lower()]
    except ValueError as exc:
        raise CameraUrlRefusedError("malformed_url", f"camera URL {shown!r}: {exc}") from exc
    if not host:
        raise CameraUrlRefusedError("malformed_url", f"camera URL {shown!r} names no host")
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise CameraUrlRefusedError(
            "unresolvable_host", f"camera URL {shown!r}: cannot resolve {host!r}: {exc}"
        ) from exc
    for *_, sockaddr in found:
        address = _unmapped(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]))
        if any(address in network for network in capture.api_allowed_networks):
            continue
        if not address.is_global or address.is_multicast:
            raise CameraUrlRefusedError(
                "private_address",
                f"camera URL {shown!r}: {host!r} is {address}, a loopback, private, "
                "link-local or reserved address; list its range in "
                "capture.api_allowed_networks to allow cameras there",
            )


def _unmapped(address: IpAddress) -> IpAddress:
    """The IPv4 address inside an IPv4-mapped IPv6 one (``::ffff:127.0.0.1``), else itself."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
