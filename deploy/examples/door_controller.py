"""A door controller's side of facestream's webhooks: verify, deduplicate, act.

Standalone (standard library only), so it runs on the controller without facestream:

    FACESTREAM_WEBHOOK_SECRET=... python door_controller.py --door front \
        --url http://controller:9000/facestream --host 0.0.0.0 --port 9000

(or ``FACESTREAM_WEBHOOK_SECRET_FILE=/run/secrets/front``) and in facestream's config, one
receiver with this controller's own secret and door::

    [[events.webhooks]]
    url = "http://controller:9000/facestream"     # exactly the --url given here
    secret_file = "/run/secrets/front"            # or secret / secret_env
    doors = ["front"]

For each request it checks, in order:

1. ``X-Facestream-Timestamp`` is within 5 minutes of now (a captured request cannot be
   replayed later);
2. ``X-Facestream-Signature`` is ``v2=`` and the hex HMAC-SHA256, under this controller's
   secret, of ``"<timestamp>\\n<its own --url>\\n<its own --door>\\n<raw body>"``, compared in
   constant time: a request signed for another receiver or another door fails, whatever its
   headers say;
3. the signed body is about this door (``payload.door_id`` is ``--door``): a grant for
   another door opens nothing here, even one signed with this secret;
4. the ``event_id`` inside the signed body was not seen before (delivery is at least once: a
   retry after a lost reply must not open the door twice). The ``X-Facestream-Event-Id`` header
   is not signed, so it is only compared with the body's id (a request whose header disagrees
   is refused), never used to deduplicate: otherwise a captured grant sent again with a new
   header value would open the door again;
5. for a granted decision, its ``created`` time (the decision's, unix seconds, signed) is at
   most ``--max-grant-age-seconds`` from now: a grant delivered late (after retries, or from
   the outbox once Redis is back) is acknowledged but opens nothing, because the person has
   long left the door. facestream does not deliver such grants in the first place
   (``[events] grant_expiry_seconds``); this check also holds against a captured request
   replayed within the 5-minute window. Both clocks must be kept in sync (NTP).

Then it answers 204 and, for a fresh granted decision, opens the door (here: prints a line;
replace ``open_door`` with your relay or access-control call). A 204 whose reason is
``duplicate`` or ``grant expired`` acted on nothing. Any other answer makes facestream retry.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import math
import os
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

REPLAY_WINDOW_SECONDS = 300
MAX_GRANT_AGE_SECONDS = 10.0  # default of --max-grant-age-seconds
SEEN_EVENTS_KEPT = 10_000
MAX_BODY_BYTES = 1_000_000


def open_door(door_id: str, person: str) -> None:
    """Replace with the real actuator call."""
    print(f"OPEN {door_id} for {person}", flush=True)


@dataclass(frozen=True)
class SignedEvent:
    """What a request's signed body says (the only part of a request that is trusted)."""

    event_id: str
    kind: str
    decided_at: float  # unix seconds
    payload: dict[str, object]


def signed_event(body: bytes, header_event_id: str | None) -> SignedEvent | str:
    """The event of a verified body, or why it is refused (malformed, or a header that names
    another event than the body)."""
    try:
        event = json.loads(body)
        fields = (event["event_id"], event["kind"], float(event["created"]), event["payload"])
    except (ValueError, KeyError, TypeError):
        return "malformed event"
    event_id, kind, decided_at, payload = fields
    if (
        not isinstance(event_id, str)
        or not isinstance(payload, dict)
        or not math.isfinite(decided_at)  # json.loads takes NaN, which no age exceeds
    ):
        return "malformed event"
    if header_event_id is not None and header_event_id != event_id:
        return "event id header disagrees with the signed body"
    return SignedEvent(event_id, str(kind), decided_at, payload)


def signed_bytes(timestamp: str, destination: str, door: str, body: bytes) -> bytes:
    """What facestream signs: timestamp, destination url and door id, one per line, then the
    body (pipeline.events.signing.SignedMessage)."""
    return f"{timestamp}\n{destination}\n{door}\n".encode() + body


class Receiver(BaseHTTPRequestHandler):
    secret: ClassVar[bytes] = b""
    door_id: ClassVar[str] = ""
    own_url: ClassVar[str] = ""
    max_grant_age_seconds: ClassVar[float] = MAX_GRANT_AGE_SECONDS
    seen: ClassVar[OrderedDict[str, None]] = OrderedDict()  # shared by the request threads
    seen_lock: ClassVar[threading.Lock] = threading.Lock()

    def do_POST(self) -> None:
        status, reason = self._handle()
        self._answer(status, reason)

    def _handle(self) -> tuple[int, str]:
        length = int(self.headers.get("Content-Length", "0"))
        if not 0 < length <= MAX_BODY_BYTES:
            return (413 if length else 400), "bad body length"
        body = self.rfile.read(length)
        refusal = self._signature_refusal(body)
        if refusal is not None:
            return 401, refusal
        event = signed_event(body, self.headers.get("X-Facestream-Event-Id"))
        if isinstance(event, str):
            return 400, event
        if event.payload.get("door_id") != self.door_id:
            return 403, "not this door"
        return self._act(event)

    def _act(self, event: SignedEvent) -> tuple[int, str]:
        """Open the door for a fresh grant seen for the first time; acknowledge the rest."""
        with self.seen_lock:  # check and mark at once: two retries race on a slow network
            duplicate = event.event_id in self.seen
            self.seen[event.event_id] = None
            while len(self.seen) > SEEN_EVENTS_KEPT:
                self.seen.popitem(last=False)
        if duplicate:
            return 204, "duplicate"  # already acted on: acknowledge, do nothing
        if event.kind == "decision" and event.payload.get("outcome") == "granted":
            # acknowledged either way: a late grant never becomes fresh, retrying cannot help
            if abs(time.time() - event.decided_at) > self.max_grant_age_seconds:
                return 204, "grant expired"
            open_door(str(event.payload.get("door_id")), str(event.payload.get("name")))
        return 204, "ok"

    def _signature_refusal(self, body: bytes) -> str | None:
        """None for a fresh request signed for this controller's url and door, else why it is
        refused."""
        timestamp = self.headers.get("X-Facestream-Timestamp", "")
        signature = self.headers.get("X-Facestream-Signature", "")
        try:
            age = abs(time.time() - float(timestamp))
        except ValueError:
            return "no timestamp"
        if not age <= REPLAY_WINDOW_SECONDS:  # NaN is outside too
            return "timestamp outside the replay window"
        if "\n" in timestamp:
            return "no timestamp"
        # this controller's own url and door, never the request's headers: a request signed
        # for another receiver or door must not verify here
        signed = signed_bytes(timestamp, self.own_url, self.door_id, body)
        expected = "v2=" + hmac.new(self.secret, signed, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return "bad signature"
        return None

    def _answer(self, status: int, reason: str) -> None:
        self.send_response(status, reason)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        print(f"{self.address_string()} {format % args}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="facestream webhook receiver for a door")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--door", required=True, help="the id of the door this controller opens")
    parser.add_argument(
        "--url",
        help="this controller's url exactly as facestream's config names it "
        "(default: http://<host>:<port>/facestream)",
    )
    parser.add_argument(
        "--max-grant-age-seconds",
        type=float,
        default=MAX_GRANT_AGE_SECONDS,
        help="open only for grants decided at most this many seconds ago",
    )
    args = parser.parse_args()
    if args.max_grant_age_seconds <= 0:
        sys.exit("--max-grant-age-seconds must be positive")
    secret = os.environ.get("FACESTREAM_WEBHOOK_SECRET")
    secret_file = os.environ.get("FACESTREAM_WEBHOOK_SECRET_FILE")
    if not secret and secret_file:
        with open(secret_file, encoding="utf-8") as stream:
            secret = stream.read().rstrip("\r\n")
    if not secret:
        sys.exit(
            "set FACESTREAM_WEBHOOK_SECRET (or FACESTREAM_WEBHOOK_SECRET_FILE) to this "
            "receiver's secret in facestream's [[events.webhooks]]"
        )
    Receiver.secret = secret.encode()
    Receiver.door_id = args.door
    Receiver.own_url = args.url or f"http://{args.host}:{args.port}/facestream"
    Receiver.max_grant_age_seconds = args.max_grant_age_seconds
    server = ThreadingHTTPServer((args.host, args.port), Receiver)
    print(f"listening on {args.host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
