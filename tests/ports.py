"""A free TCP port on 127.0.0.1, for servers the tests start that cannot be told to bind
port 0 and report the one they got (mosquitto, a service given a fixed config, an RTSP sink
expected on a known port). Another process may take it before the server binds it: rare on a
test machine, and such a test fails rather than passes wrongly."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on at the moment of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
