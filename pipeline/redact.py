"""The one place that hides secrets in URLs before they are printed, logged or served.

``redact_credentials`` keeps a URL's shape and masks only its secrets (camera errors on
/v1/streams and in events, ``facestream check-config``); ``url_for_logs`` keeps only where a
URL points (webhook receivers, whose whole query may be a token under any name).
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote_plus

import httpx

__all__ = ["MASK", "SECRET_QUERY_WORDS", "redact_credentials", "url_for_logs"]

MASK: Final = "***"
"""What stands in for a hidden password, token or query value."""
SECRET_QUERY_WORDS: Final = ("token", "key", "secret", "passw", "pwd", "signature", "sig", "auth")
"""Query keys whose values are credentials (substrings of the lower-cased, unquoted key):
``?token=``, ``?api_key=``, ``?password=``, ..."""

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")  # a URL, alone or inside a message
# userinfo: greedy up to the last @ before the path, since passwords often hold an unescaped @
_USERINFO = re.compile(r"^(?P<scheme>[^:]+://)(?P<userinfo>[^/?#]*)@")
_QUERY_PAIR = re.compile(r"(?P<key>[?&][^=&#]*=)(?P<value>[^&#]*)")


def _hidden_userinfo(match: re.Match[str]) -> str:
    user, colon, _password = match["userinfo"].partition(":")
    return f"{match['scheme']}{user}:{MASK}@" if colon else f"{match['scheme']}{MASK}@"


def _hidden_query_value(match: re.Match[str]) -> str:
    # unquoted first, so that ?pass%77ord= is caught as surely as ?password=
    key = unquote_plus(match["key"][1:-1]).lower()
    if match["value"] and any(word in key for word in SECRET_QUERY_WORDS):
        return f"{match['key']}{MASK}"
    return match[0]


def _hidden_secrets(match: re.Match[str]) -> str:
    url = _USERINFO.sub(_hidden_userinfo, match[0], count=1)
    return _QUERY_PAIR.sub(_hidden_query_value, url)


def redact_credentials(text: str | int) -> str:
    """``text`` with the credentials of every URL in it replaced by ``MASK``:
    ``rtsp://user:pass@host`` becomes ``rtsp://user:***@host``, ``rtsp://token@host`` (no
    colon) ``rtsp://***@host``, and ``?token=abc`` (or pwd=, api_key=, secret=, ...)
    ``?token=***``; text that holds no URL comes back as it is.

    Use it on every error, log line and printed setting built from a URL: camera errors reach
    /v1/streams (last_error), camera_down events and logs, which must never hold a password.
    """
    return _URL.sub(_hidden_secrets, str(text))


def url_for_logs(url: str) -> str:
    """``url`` without user info, query or fragment: scheme, host, port and path only, for a
    webhook receiver's url in logs and errors (its query may hold a token under any name)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "<invalid url>"
    port = f":{parsed.port}" if parsed.port is not None else ""
    return f"{parsed.scheme}://{parsed.host}{port}{parsed.path}"
