"""Webhook delivery: a thread that POSTs the outbox's due deliveries, signed, at least once.

``WebhookDeliverer`` is a background thread that claims due deliveries one at a time and
POSTs each event's JSON with its signature (``pipeline.events.signing``). A claim is a Lua
script that moves the delivery's due time a lease into the future and records a claim token,
so two processes never work on the same attempt; a delivery whose process died is claimed
again when its lease runs out. Failed attempts are rescheduled with capped exponential
backoff and jitter; after the last attempt a delivery moves to the dead-letter list. Each POST
has one deadline as a whole (``request_timeout_seconds``; httpx's own timeouts bound each
network step only, so a receiver dripping its reply would hold the thread). Webhook delivery
is at least once: a receiver dedupes by the ``event_id`` in the signed body
(``X-Facestream-Event-Id`` repeats it, unsigned).

Redis is not trusted with what a delivery says. Whoever can write to Redis could otherwise add
a delivery of their own (a grant for any door) and have it signed with the real secret, or
point a delivery at their own host and collect signed bodies (a signing oracle). So:

* an outbox record names its webhook by the key of the current config (``Webhook.key``, the
  first 16 hex of the SHA-256 of its url), never by url: the deliverer posts only to urls it
  was configured with;
* each record carries an HMAC-SHA256 (``mac``) over its delivery id, webhook key, event and
  expiry, under a key derived from that webhook's secret (``outbox_key``), which is not in
  Redis;
* a record whose webhook is unknown, whose MAC does not match or that cannot be read is not
  POSTed: it moves to the dead-letter list and counts in
  ``facestream_events_rejected_total{reason}`` (alert ``FacestreamForgedDelivery``).

What this does not stop: someone with Redis write access can still delete or delay deliveries
(a denial of service), read event bodies, and re-queue a genuine record within its expiry (the
receiver dedupes by event id). See docs/security.md.

A granted decision is only useful while the person is at the door: its deliveries expire
``grant_expiry_seconds`` after the decision (``created``). An expired delivery is not POSTed;
it moves to the dead-letter list (``last_error`` says expired), whether it waited in retries,
in the outbox while the deliverer was down, or in ``DecisionRecorder``'s queue while Redis was.
Receivers should check the decision's age too (``deploy/examples/door_controller.py``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Literal

import httpx

from pipeline.errors import EventFormatError, EventStoreError, EventsUnavailableError
from pipeline.events.config import EventsConfig, Webhook
from pipeline.events.signing import (
    DESTINATION_HEADER,
    DOOR_HEADER,
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignedMessage,
    sign,
)
from pipeline.events.store import EventKeys, record_mac, redis_address, talking_to_redis
from pipeline.metrics import PipelineMetrics
from pipeline.redact import url_for_logs
from pipeline.redis.cluster import RedisClient
from pipeline.types import Event, event_door

__all__ = ["WebhookDeliverer"]

LOGGER = logging.getLogger(__name__)

# Claim the earliest due delivery: push its due time a lease ahead, record the claim token and
# count the attempt, all atomically, so no other process can claim it until the lease ends.
# KEYS: outbox, claims, attempts, deliveries; ARGV: now, lease end, token.
# Returns {delivery id, attempt, record} or nil when nothing is due.
_CLAIM_SCRIPT: Final = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1)
if #due == 0 then return nil end
local id = due[1]
redis.call('ZADD', KEYS[1], ARGV[2], id)
redis.call('HSET', KEYS[2], id, ARGV[3])
local attempt = redis.call('HINCRBY', KEYS[3], id, 1)
local record = redis.call('HGET', KEYS[4], id)
return {id, attempt, record or ''}
"""
# Settle a claimed delivery, only while the claim is still ours (its lease may have ended and
# another process may hold it now). KEYS: outbox, claims, attempts, deliveries, dead;
# ARGV: delivery id, token, action ('done' | 'retry' | 'dead'), due time or dead record,
# dead-letter list length. Returns 1 when settled, 0 when the claim was lost.
_SETTLE_SCRIPT: Final = """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
if ARGV[3] == 'retry' then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
  return 1
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
if ARGV[3] == 'dead' then
  redis.call('LPUSH', KEYS[5], ARGV[4])
  redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[5]) - 1)
end
return 1
"""


@dataclass(frozen=True, slots=True)
class _Claim:
    delivery_id: str
    token: str
    attempt: int
    webhook: Webhook
    event_id: str
    door: str
    body: bytes
    expires_at: float | None  # unix seconds; None: never


@dataclass(frozen=True, slots=True)
class _Refused:
    """A claimed record that is not ours to POST: why, and what it held (for the dead letter)."""

    delivery_id: str
    token: str
    attempt: int
    reason: Literal["forged", "unknown_destination", "malformed"]
    detail: str
    url: str
    event: str


@dataclass(frozen=True, slots=True)
class _Failure:
    reason: Literal["connect", "timeout", "http_status", "http_error"]
    detail: str


def _readable_event(record: bytes) -> str:
    """The ``event`` text of an outbox record that fails its checks, or "" when it has none."""
    try:
        fields = json.loads(record)
    except ValueError:
        return ""
    event = fields.get("event") if isinstance(fields, dict) else None
    return event if isinstance(event, str) else ""


class WebhookDeliverer:
    """A thread that POSTs due outbox deliveries, retries them, and dead-letters the hopeless.

    Several deliverers (threads or processes) may share one outbox: each attempt is claimed
    atomically by one of them. Use as a context manager, or ``start()`` and ``stop()``.
    """

    def __init__(
        self,
        client: RedisClient,
        config: EventsConfig,
        metrics: PipelineMetrics,
        *,
        jitter: random.Random | None = None,
    ) -> None:
        """Deliver ``config``'s outbox through ``client``.

        jitter: the random source of backoff jitter (seeded in tests).
        """
        self._client = client
        self._config = config
        self._metrics = metrics
        self._keys = EventKeys.of(config.namespace)
        self._where = redis_address(client)
        self._webhooks = {webhook.key: webhook for webhook in config.receivers}
        # one TLS context for every attempt: making one loads the CA bundle
        self._tls = httpx.create_ssl_context()
        self._jitter = jitter if jitter is not None else random.Random()
        self._claim_script = client.register_script(_CLAIM_SCRIPT)
        self._settle_script = client.register_script(_SETTLE_SCRIPT)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """True while the delivery thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the delivery thread (returns at once)."""
        if self.running:
            raise EventStoreError("the webhook deliverer is already running")
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"webhooks-{self._config.namespace}", daemon=True
        )
        self._thread.start()
        LOGGER.info(
            "webhook deliverer started for %d url(s): %s",
            len(self._webhooks),
            ", ".join(url_for_logs(webhook.url) for webhook in self._webhooks.values()),
        )

    def stop(self, timeout_seconds: float | None = None) -> None:
        """Stop the thread and wait for it (seconds; default: one request timeout + 5 s).

        An attempt in flight finishes first (at most one request timeout); a backoff does
        not delay stopping. Idempotent.
        """
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(
                self._config.request_timeout_seconds + 5.0
                if timeout_seconds is None
                else timeout_seconds
            )
            if thread.is_alive():
                LOGGER.warning("webhook deliverer did not stop within its timeout")
            else:
                LOGGER.info("webhook deliverer stopped")

    def __enter__(self) -> WebhookDeliverer:
        """Start the delivery thread."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the delivery thread."""
        self.stop()

    def deliver_due(self) -> int:
        """Attempt every delivery due now, one by one; returns how many were attempted.

        Stops early when ``stop()`` is called. Raises EventsUnavailableError or
        EventStoreError when Redis fails (what was claimed is retried after its lease).
        """
        attempted = 0
        while not self._stopping.is_set():
            claim = self._claim()
            if claim is None:
                break
            attempted += 1
            if isinstance(claim, _Refused):
                self._refuse(claim)
            else:
                self._attempt(claim)
        with talking_to_redis("count pending deliveries", self._where):
            self._metrics.events_pending.set(self._client.zcard(self._keys.outbox))
        return attempted

    def _run(self) -> None:
        store_failures = 0
        while not self._stopping.is_set():
            try:
                attempted = self.deliver_due()
            except (EventsUnavailableError, EventStoreError) as exc:
                self._metrics.events_store_errors.labels(operation="deliver").inc()
                store_failures += 1
                if store_failures == 1:
                    LOGGER.warning("webhook outbox unavailable, retrying: %s", exc)
                self._stopping.wait(self._store_backoff(store_failures))
                continue
            except Exception:  # a bug must not end delivery for good: log it and go on
                LOGGER.exception("webhook deliverer failed unexpectedly; retrying")
                self._stopping.wait(self._config.store_retry_max_seconds)
                continue
            if store_failures:
                LOGGER.info("webhook outbox reachable again after %d failed tries", store_failures)
                store_failures = 0
            if attempted == 0:
                self._stopping.wait(self._config.poll_interval_seconds)

    def _store_backoff(self, failures: int) -> float:
        base = min(
            self._config.store_retry_max_seconds,
            self._config.poll_interval_seconds * 2.0 ** min(failures - 1, 30),
        )
        return base / 2 + self._jitter.uniform(0, base / 2)

    def _retry_delay(self, attempt: int) -> float:
        """Seconds before the next attempt: capped doubling, half of it jittered."""
        base = min(
            self._config.retry_max_seconds,
            self._config.retry_initial_seconds * 2.0 ** min(attempt - 1, 60),
        )
        return base / 2 + self._jitter.uniform(0, base / 2)

    def _claim(self) -> _Claim | _Refused | None:
        now = time.time()
        token = uuid.uuid4().hex
        with talking_to_redis("claim a delivery", self._where):
            reply = self._claim_script(
                keys=[
                    self._keys.outbox,
                    self._keys.claims,
                    self._keys.attempts,
                    self._keys.deliveries,
                ],
                args=[now, now + self._config.claim_lease_seconds, token],
            )
        if reply is None:
            return None
        raw_id, attempt, record = reply
        delivery_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
        return self._checked(delivery_id, token, int(attempt), record)

    def _checked(
        self, delivery_id: str, token: str, attempt: int, record: bytes
    ) -> _Claim | _Refused:
        """The claim of a record this service wrote for a webhook of its config, or why not.

        Nothing in the record is believed before its MAC is checked under the key of the
        webhook it names; the url comes from the config, never from Redis."""

        def refused(reason: Literal["forged", "unknown_destination", "malformed"], detail: str,
                    url: str = "", event: str = "") -> _Refused:  # fmt: skip
            return _Refused(delivery_id, token, attempt, reason, detail, url, event)

        try:
            fields = json.loads(record)
            webhook_key, event_text = str(fields["webhook"]), str(fields["event"])
            mac = str(fields["mac"])
            expiry = fields["expires_at"]
            expires_at = None if expiry is None else float(expiry)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # records of older versions ({"url", "event"}) end here too: they name a url
            kept = _readable_event(record)  # evidence for the dead letter, never POSTed
            return refused("malformed", f"refused: the outbox record is malformed ({exc!r})",
                           event=kept)  # fmt: skip
        webhook = self._webhooks.get(webhook_key)
        event_id, _, named_key = delivery_id.partition(":")
        if webhook is None or named_key != webhook_key:
            return refused(
                "unknown_destination",
                f"refused: the record names webhook {webhook_key[:16]!r}, which the config "
                "does not list",
                event=event_text,
            )
        body = event_text.encode()
        expected = record_mac(webhook.outbox_key, delivery_id, body, expires_at)
        if not hmac.compare_digest(expected.encode(), mac.encode()):
            return refused(
                "forged",
                "refused: the record's MAC does not match (not written by this service: someone "
                "with write access to Redis)",
                webhook.url,
                event_text,
            )
        try:
            event = Event.from_json(body)
        except EventFormatError as exc:  # ours, yet unreadable: a bug, never a POST
            return refused("malformed", f"refused: {exc}", webhook.url, event_text)
        return _Claim(
            delivery_id=delivery_id,
            token=token,
            attempt=attempt,
            webhook=webhook,
            event_id=event_id,
            door=event_door(event),
            body=body,
            expires_at=expires_at,
        )

    def _refuse(self, refused: _Refused) -> None:
        self._metrics.events_rejected.labels(reason=refused.reason).inc()
        LOGGER.error(
            "delivery %s refused and dead-lettered: %s",
            refused.delivery_id[:64],
            refused.detail,
        )
        record = json.dumps(
            {
                "delivery_id": refused.delivery_id,
                "url": refused.url,
                "attempts": refused.attempt,
                "last_error": refused.detail,
                "dead_at": time.time(),
                "event": refused.event,
            }
        )
        if self._settle(refused.delivery_id, refused.token, "dead", record):
            self._metrics.events_dead_lettered.inc()

    def _attempt(self, claim: _Claim) -> None:
        if claim.attempt > self._config.max_attempts:  # attempts cut short by crashes
            self._dead_letter(claim, "attempts exhausted (the deliverer stopped mid-attempt)")
            return
        if claim.expires_at is not None and time.time() > claim.expires_at:
            self._dead_letter(
                claim,
                "expired: a granted decision not delivered within events.grant_expiry_seconds "
                "is not delivered (a door must not open late)",
            )
            return
        failure = self._post(claim)
        if failure is None:
            if self._settle(claim.delivery_id, claim.token, "done", ""):
                self._metrics.events_delivered.inc()
                LOGGER.debug("delivered %s (attempt %d)", claim.delivery_id, claim.attempt)
            return
        self._metrics.events_failed.labels(reason=failure.reason).inc()
        if claim.attempt >= self._config.max_attempts:
            self._dead_letter(claim, failure.detail)
            return
        delay = self._retry_delay(claim.attempt)
        LOGGER.info(
            "delivery %s to %s failed (attempt %d of %d: %s); next try in %.1f s",
            claim.delivery_id,
            url_for_logs(claim.webhook.url),
            claim.attempt,
            self._config.max_attempts,
            failure.detail,
            delay,
        )
        self._settle(claim.delivery_id, claim.token, "retry", str(time.time() + delay))

    def _post(self, claim: _Claim) -> _Failure | None:
        webhook = claim.webhook
        timestamp = str(int(time.time()))
        message = SignedMessage(timestamp, webhook.url, claim.door, claim.body)
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            DESTINATION_HEADER: webhook.url,
            DOOR_HEADER: claim.door,
            SIGNATURE_HEADER: sign(webhook.secret, message),
            EVENT_ID_HEADER: claim.event_id,
        }
        try:
            status = asyncio.run(self._post_by_deadline(webhook.url, claim.body, headers))
        except (TimeoutError, httpx.TimeoutException) as exc:  # the deadline, or one step's
            return _Failure(
                "timeout",
                f"timed out: {type(exc).__name__} (events.request_timeout_seconds is "
                f"{self._config.request_timeout_seconds:g} s for the whole request)",
            )
        except httpx.TransportError as exc:
            return _Failure("connect", f"connection failed: {type(exc).__name__}: {exc}")
        except httpx.HTTPError as exc:
            return _Failure("http_error", f"{type(exc).__name__}: {exc}")
        if 200 <= status < 300:
            return None
        return _Failure("http_status", f"HTTP {status}")

    async def _post_by_deadline(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """POST ``body`` and return the reply's status; TimeoutError past the deadline.

        httpx's timeouts bound each network step, not the request: a receiver sending its
        reply a byte at a time would hold the deliverer for ever. Only cancelling bounds the
        whole request, hence an event loop (and a client, whose connections belong to that
        loop) per attempt.
        """
        deadline_seconds = self._config.request_timeout_seconds
        async with httpx.AsyncClient(
            timeout=deadline_seconds, follow_redirects=False, verify=self._tls
        ) as http:
            async with asyncio.timeout(deadline_seconds):
                # streamed and closed unread: a receiver's reply body is not ours to buffer
                async with http.stream("POST", url, content=body, headers=headers) as reply:
                    return reply.status_code

    def _dead_letter(self, claim: _Claim, last_error: str) -> None:
        record = json.dumps(
            {
                "delivery_id": claim.delivery_id,
                "url": claim.webhook.url,
                "attempts": claim.attempt,
                "last_error": last_error,
                "dead_at": time.time(),
                "event": claim.body.decode(),
            }
        )
        if self._settle(claim.delivery_id, claim.token, "dead", record):
            self._metrics.events_dead_lettered.inc()
            LOGGER.warning(
                "delivery %s to %s dead-lettered after %d attempts: %s",
                claim.delivery_id,
                url_for_logs(claim.webhook.url),
                claim.attempt,
                last_error,
            )

    def _settle(
        self, delivery_id: str, token: str, action: Literal["done", "retry", "dead"], value: str
    ) -> bool:
        with talking_to_redis(f"settle delivery {delivery_id}", self._where):
            settled = self._settle_script(
                keys=[
                    self._keys.outbox,
                    self._keys.claims,
                    self._keys.attempts,
                    self._keys.deliveries,
                    self._keys.dead,
                ],
                args=[delivery_id, token, action, value, self._config.dead_letter_maxlen],
            )
        if not settled:
            LOGGER.warning(
                "delivery %s: claim expired before the attempt was settled (another deliverer "
                "may repeat it; receivers dedupe by event id)",
                delivery_id,
            )
        return bool(settled)
