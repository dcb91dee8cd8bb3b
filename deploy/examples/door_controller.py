"""A door controller's side of facestream's webhooks: verify, deduplicate, act.

Standalone (standard library only), so it runs on the controller without facestream:

    FACESTREAM_WEBHOOK_SECRET=... python door_controller.py --port 9000

and in facestream's config: ``[events] webhook_urls = ["http://controller:9000/facestream"]``
with the same ``webhook_secret``. For each request it checks, in order:

1. ``X-Facestream-Timestamp`` is within 5 minutes of now (a captured request cannot be
   replayed later);
2. ``X-Facestream-Signature`` is the hex HMAC-SHA256 of ``"<timestamp>.<raw body>"`` under the
   shared secret, compared in constant time;
3. ``X-Facestream-Event-Id`` was not seen before (delivery is at least once: a retry after a
   lost reply must not open the door twice).

Then it answers 204 and, for a granted decision, opens the door (here: prints a line; replace
``open_door`` with your relay or access-control call). Any other answer makes facestream retry.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

REPLAY_WINDOW_SECONDS = 300
SEEN_EVENTS_KEPT = 10_000
MAX_BODY_BYTES = 1_000_000


def open_door(door_id: str, person: str) -> None:
    """Replace with the real actuator call."""
    print(f"OPEN {door_id} for {person}", flush=True)


class Receiver(BaseHTTPRequestHandler):
    secret: ClassVar[bytes] = b""
    seen: ClassVar[OrderedDict[str, None]] = OrderedDict()  # shared by the request threads
    seen_lock: ClassVar[threading.Lock] = threading.Lock()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        if not 0 < length <= MAX_BODY_BYTES:
            self._answer(413 if length else 400, "bad body length")
            return
        body = self.rfile.read(length)
        timestamp = self.headers.get("X-Facestream-Timestamp", "")
        signature = self.headers.get("X-Facestream-Signature", "")
        event_id = self.headers.get("X-Facestream-Event-Id", "")
        try:
            age = abs(time.time() - float(timestamp))
        except ValueError:
            self._answer(401, "no timestamp")
            return
        if age > REPLAY_WINDOW_SECONDS:
            self._answer(401, "timestamp outside the replay window")
            return
        expected = hmac.new(self.secret, timestamp.encode() + b"." + body, hashlib.sha256)
        if not hmac.compare_digest(expected.hexdigest(), signature):
            self._answer(401, "bad signature")
            return
        with self.seen_lock:  # check and mark at once: two retries race on a slow network
            duplicate = event_id in self.seen
            self.seen[event_id] = None
            while len(self.seen) > SEEN_EVENTS_KEPT:
                self.seen.popitem(last=False)
        if duplicate:
            self._answer(204, "duplicate")  # already acted on: acknowledge, do nothing
            return
        event = json.loads(body)
        payload = event.get("payload", {})
        if event.get("kind") == "decision" and payload.get("outcome") == "granted":
            open_door(str(payload.get("door_id")), str(payload.get("name")))
        self._answer(204, "ok")

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
    args = parser.parse_args()
    secret = os.environ.get("FACESTREAM_WEBHOOK_SECRET")
    if not secret:
        sys.exit("set FACESTREAM_WEBHOOK_SECRET to facestream's events.webhook_secret")
    Receiver.secret = secret.encode()
    server = ThreadingHTTPServer((args.host, args.port), Receiver)
    print(f"listening on {args.host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
