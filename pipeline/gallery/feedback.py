"""Operators' corrections of door decisions: quarantined templates, negatives, per-identity tau.

A decision that named an identity leaves its probe (the encoding that matched, float32 (128,),
never a face image) in Redis under its event id for ``feedback.probe_ttl_seconds``
(``remember``). An operator then says whether it was right (``give``):

* wrong: the template the probe matched is quarantined (kept, no longer searched, listed by
  ``quarantined``, put back by ``restore``), and the probe is stored as a negative of that
  identity. The identity gets its own tau ceiling: ``feedback.negative_margin`` below the
  distance from its remaining templates to its nearest negative; the gallery's search applies
  min(tau, ceiling) to it (``pipeline.gallery.index``, the one place tau is applied), so the
  same probe no longer matches and every other identity keeps the global tau.
* right: nothing in the gallery changes; the feedback is recorded.

Either way the probe is deleted and the event id is marked as answered: a second feedback on
it is a FeedbackGivenError. Each answer is one gallery transaction (WATCH of the version, then
MULTI/EXEC), so a refused feedback writes nothing.

Keys, beside the gallery's (same ``{namespace}`` hash tag, one Cluster slot)::

    fs:{gallery}:probe:<event id>             hash identity, template, model, vector (TTL)
    fs:{gallery}:probes-of:<identity id>      set of event ids whose probe names it (TTL)
    fs:{gallery}:feedback:<event id>          JSON of the answer given (TTL)
    fs:{gallery}:templates:<identity id>      template id -> "quarantined:<model id>" or
                                              negative id -> "negative:<model id>"
    fs:{gallery}:vectors:quarantined:<model>  "<identity id>/<template id>" -> 128 float32 LE
    fs:{gallery}:vectors:negative:<model>     "<identity id>/<negative id>" -> 128 float32 LE

Quarantined templates and negatives are listed in the identity's templates hash under a
role-prefixed model, so ``Gallery.remove`` deletes them with everything else.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import redis
from redis.exceptions import RedisClusterException

from pipeline.config.service import FeedbackConfig
from pipeline.errors import (
    DecisionNotFoundError,
    FeedbackGivenError,
    GalleryRequestError,
    GalleryStoreError,
    GalleryUnavailableError,
    IdentityNotFoundError,
)
from pipeline.gallery.model import Identity
from pipeline.gallery.store import Gallery
from pipeline.redis.cluster import RedisClient, RedisPipeline
from pipeline.types import DESCRIPTOR_SIZE, Decision, JsonValue

__all__ = ["FeedbackResult", "FeedbackStore", "QuarantinedTemplate"]

LOGGER = logging.getLogger(__name__)
_EVENT_ID = re.compile(r"[0-9a-f]{32}")
_VECTOR_DTYPE: Final = np.dtype("<f4")
_QUARANTINED: Final = "quarantined:"
_NEGATIVE: Final = "negative:"


@dataclass(frozen=True, slots=True)
class QuarantinedTemplate:
    """A template an operator's correction took out of the search (``restore`` puts it back)."""

    identity_id: str
    template_id: str
    model_id: str


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    """What one feedback did: the identity after it, the template quarantined (None when the
    match was right, or the template was already gone) and the event id of the feedback."""

    event_id: str
    correct: bool
    identity: Identity
    quarantined_template: str | None
    correct_identity_id: str | None

    def audit_entry(self) -> dict[str, JsonValue]:
        """What the audit log and the ``decision_feedback`` event hold: ids only."""
        return {
            "decision_event_id": self.event_id,
            "correct": self.correct,
            "identity_id": self.identity.identity_id,
            "quarantined_template": self.quarantined_template,
            "correct_identity_id": self.correct_identity_id,
            "negatives": self.identity.negatives,
            "tau_ceiling": self.identity.tau_ceiling,
        }


@dataclass(frozen=True, slots=True)
class _Correction:
    """The writes of one wrong match, worked out under WATCH before MULTI."""

    identity: Identity
    model_id: str
    quarantined: str | None
    quarantined_vector: bytes | None
    negative_id: str
    probe: npt.NDArray[np.float32]
    dropped: tuple[str, ...]


def _vector(value: bytes | str) -> npt.NDArray[np.float32]:
    value = _bytes(value)
    if len(value) != DESCRIPTOR_SIZE * _VECTOR_DTYPE.itemsize:
        raise GalleryStoreError(f"a stored encoding is {len(value)} bytes, not 128 float32")
    return np.frombuffer(value, _VECTOR_DTYPE).astype(np.float32)


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class FeedbackStore:
    """Probes kept for feedback, and the corrections operators make, over one ``Gallery``.

    client: the gallery's Redis client (bytes responses); config: ``[feedback]``.
    """

    def __init__(self, gallery: Gallery, client: RedisClient, config: FeedbackConfig) -> None:
        """Keys under the gallery's prefix; nothing is read until a call."""
        self._gallery = gallery
        self._client = client
        self._config = config
        prefix = gallery.key_prefix
        self._identities_key = prefix + "identities"
        self._templates_prefix = prefix + "templates:"
        self._vectors_prefix = prefix + "vectors:"
        self._probe_prefix = prefix + "probe:"
        self._probes_of_prefix = prefix + "probes-of:"
        self._feedback_prefix = prefix + "feedback:"

    # -- probes ---------------------------------------------------------------------------

    def remember(self, decision: Decision) -> bool:
        """Keep the probe of a decision that named an identity, for feedback; False when the
        decision carries none (an unknown face, a card refusal, a track vote). Raises
        GalleryUnavailableError when Redis is away (the caller logs it: a door never waits)."""
        if decision.identity_id is None or decision.template_id is None or decision.probe is None:
            return False
        ttl = self._config.probe_ttl_seconds
        probes_of = self._probes_of_prefix + decision.identity_id
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.hset(
                self._probe_prefix + decision.event_id,
                mapping={
                    "identity": decision.identity_id,
                    "template": decision.template_id,
                    "model": self._gallery.model_id,
                    "camera": decision.camera_id,
                    "vector": np.asarray(decision.probe, _VECTOR_DTYPE).tobytes(),
                },
            )
            pipe.expire(self._probe_prefix + decision.event_id, ttl)
            pipe.sadd(probes_of, decision.event_id)
            pipe.expire(probes_of, ttl)
            pipe.execute()
        except (redis.RedisError, RedisClusterException) as exc:
            raise GalleryUnavailableError(
                f"cannot keep the probe of decision {decision.event_id} for feedback: {exc}"
            ) from exc
        return True

    def forget_identity(self, identity_id: str) -> int:
        """Delete every kept probe that names ``identity_id`` (its removal); returns how many."""
        probes_of = self._probes_of_prefix + identity_id
        try:
            event_ids = [_text(value) for value in self._client.smembers(probes_of)]
            pipe = self._client.pipeline(transaction=True)
            for event_id in event_ids:
                pipe.delete(self._probe_prefix + event_id)
            pipe.delete(probes_of)
            pipe.execute()
        except (redis.RedisError, RedisClusterException) as exc:
            raise GalleryUnavailableError(
                f"cannot delete the probes kept of identity {identity_id!r}: {exc}"
            ) from exc
        return len(event_ids)

    # -- feedback -------------------------------------------------------------------------

    def give(
        self, event_id: str, *, correct: bool, correct_identity_id: str | None = None
    ) -> FeedbackResult:
        """Record an operator's answer on the decision announced as ``event_id``.

        correct False: quarantine the matched template, keep the probe as a negative, tighten
        the identity's tau. correct_identity_id: who it really was (wrong) or who it was
        (right; must then be the decision's identity), recorded only. Raises
        DecisionNotFoundError, FeedbackGivenError, IdentityNotFoundError or
        GalleryRequestError; any of them leaves Redis as it was.
        """
        if not _EVENT_ID.fullmatch(event_id):
            raise GalleryRequestError(f"event id {event_id!r}: expected 32 lowercase hex")
        probe_key = self._probe_prefix + event_id
        feedback_key = self._feedback_prefix + event_id
        try:
            stored = self._client.hgetall(probe_key)
        except (redis.RedisError, RedisClusterException) as exc:
            raise GalleryUnavailableError(f"cannot read decision {event_id}: {exc}") from exc
        if not stored:
            self._refuse_unknown(event_id, feedback_key)
        fields = {_text(key): value for key, value in stored.items()}
        identity_id = _text(fields["identity"])
        template_id = _text(fields["template"])
        if correct and correct_identity_id not in (None, identity_id):
            raise GalleryRequestError(
                f"decision {event_id} named {identity_id!r}: a right match cannot name "
                f"{correct_identity_id!r} (send correct = false)"
            )
        probe = _vector(fields["vector"])
        model_id = _text(fields["model"])
        results: list[FeedbackResult] = []

        def write(pipe: RedisPipeline) -> None:
            # the gallery version is WATCHed and every feedback bumps it: two answers on one
            # decision are serialised, and the second finds the probe gone
            if not pipe.exists(probe_key):
                self._refuse_unknown(event_id, feedback_key, pipe)
            if correct_identity_id is not None and not pipe.hexists(
                self._identities_key, correct_identity_id
            ):
                raise IdentityNotFoundError(f"no identity {correct_identity_id!r} in the gallery")
            record = pipe.hget(self._identities_key, identity_id)
            if record is None:
                raise IdentityNotFoundError(
                    f"identity {identity_id!r} of decision {event_id} was removed since"
                )
            identity = Identity.from_record(identity_id, _bytes(record))
            correction = None
            if not correct:
                correction = self._correction(pipe, identity, template_id, probe, model_id)
                identity = correction.identity
            answer = {"correct": correct, "at": time.time(), "identity": identity_id}
            pipe.multi()
            if correction is not None:
                self._queue_correction(pipe, correction)
            pipe.hset(self._identities_key, identity_id, identity.record())
            pipe.set(feedback_key, json.dumps(answer), ex=self._config.probe_ttl_seconds)
            pipe.delete(probe_key)
            pipe.srem(self._probes_of_prefix + identity_id, event_id)
            quarantined = None if correction is None else correction.quarantined
            results[:] = [
                FeedbackResult(event_id, correct, identity, quarantined, correct_identity_id)
            ]

        self._gallery.write(write, [identity_id], "record feedback")
        LOGGER.info("feedback on decision %s: correct=%s", event_id, correct)
        return results[0]

    def _refuse_unknown(
        self, event_id: str, feedback_key: str, pipe: RedisPipeline | None = None
    ) -> None:
        """Raise FeedbackGivenError when ``event_id`` was answered, else DecisionNotFoundError."""
        answered = (pipe if pipe is not None else self._client).exists(feedback_key)
        if answered:
            raise FeedbackGivenError(f"decision {event_id} already had its feedback")
        raise DecisionNotFoundError(
            f"no decision {event_id} awaits feedback: unknown, not one that named an identity, "
            f"or older than feedback.probe_ttl_seconds ({self._config.probe_ttl_seconds} s)"
        )

    def _correction(
        self,
        pipe: RedisPipeline,
        identity: Identity,
        template_id: str,
        probe: npt.NDArray[np.float32],
        model_id: str,
    ) -> _Correction:
        """What a wrong match changes (reads only, under WATCH; ``_queue_correction`` writes):
        the template quarantined (None when it is gone already), the probe as a new negative
        (the oldest dropped beyond the cap) and the identity's new tau ceiling."""
        identity_id = identity.identity_id
        roles = self._roles(pipe, identity_id)
        vector = pipe.hget(self._vectors_prefix + model_id, f"{identity_id}/{template_id}")
        quarantined = template_id if roles.get(template_id) == model_id and vector else None
        # negative ids start with the time in ns, so sorting puts the oldest first
        negatives = sorted(key for key, role in roles.items() if role == _NEGATIVE + model_id)
        excess = max(0, len(negatives) + 1 - self._config.max_negatives_per_identity)
        dropped, kept = negatives[:excess], negatives[excess:]
        active = [key for key, role in roles.items() if role == model_id and key != quarantined]
        ceiling = self._ceiling(
            self._vectors(pipe, model_id, identity_id, active),
            [probe, *self._vectors(pipe, _NEGATIVE + model_id, identity_id, kept)],
        )
        counts = dict(identity.template_counts)
        if quarantined is not None:
            counts[model_id] = max(0, counts.get(model_id, 0) - 1)
        return _Correction(
            identity=dataclasses.replace(
                identity,
                updated=time.time(),
                template_counts=counts,
                negatives=len(kept) + 1,
                tau_ceiling=ceiling if ceiling is not None else identity.tau_ceiling,
            ),
            model_id=model_id,
            quarantined=quarantined,
            quarantined_vector=None if vector is None else _bytes(vector),
            negative_id=f"{time.time_ns():020d}{uuid.uuid4().hex[:8]}",
            probe=probe,
            dropped=tuple(dropped),
        )

    def _queue_correction(self, pipe: RedisPipeline, correction: _Correction) -> None:
        """Queue (after ``pipe.multi()``) the writes of a wrong match."""
        identity_id = correction.identity.identity_id
        templates_key = self._templates_prefix + identity_id
        model_id = correction.model_id
        if correction.quarantined is not None and correction.quarantined_vector is not None:
            field_name = f"{identity_id}/{correction.quarantined}"
            pipe.hdel(self._vectors_prefix + model_id, field_name)
            pipe.hset(
                self._vectors_prefix + _QUARANTINED + model_id,
                field_name,
                correction.quarantined_vector,
            )
            pipe.hset(templates_key, correction.quarantined, _QUARANTINED + model_id)
        for negative_id in correction.dropped:
            pipe.hdel(templates_key, negative_id)
            pipe.hdel(self._vectors_prefix + _NEGATIVE + model_id, f"{identity_id}/{negative_id}")
        pipe.hset(templates_key, correction.negative_id, _NEGATIVE + model_id)
        pipe.hset(
            self._vectors_prefix + _NEGATIVE + model_id,
            f"{identity_id}/{correction.negative_id}",
            np.asarray(correction.probe, _VECTOR_DTYPE).tobytes(),
        )

    # -- quarantine -----------------------------------------------------------------------

    def quarantined(self, identity_id: str) -> list[QuarantinedTemplate]:
        """The identity's quarantined templates; IdentityNotFoundError when it is absent."""
        self._gallery.get(identity_id)
        try:
            roles = self._client.hgetall(self._templates_prefix + identity_id)
        except (redis.RedisError, RedisClusterException) as exc:
            raise GalleryUnavailableError(f"cannot list quarantined templates: {exc}") from exc
        return sorted(
            (
                QuarantinedTemplate(identity_id, _text(key), _text(role)[len(_QUARANTINED) :])
                for key, role in roles.items()
                if _text(role).startswith(_QUARANTINED)
            ),
            key=lambda template: template.template_id,
        )

    def restore(self, identity_id: str, template_id: str) -> Identity:
        """Put a quarantined template back in the search, its identity's tau ceiling worked out
        again from its templates and negatives; IdentityNotFoundError when either is absent."""
        templates_key = self._templates_prefix + identity_id
        restored: list[Identity] = []

        def write(pipe: RedisPipeline) -> None:
            record = pipe.hget(self._identities_key, identity_id)
            if record is None:
                raise IdentityNotFoundError(f"no identity {identity_id!r} in the gallery")
            identity = Identity.from_record(identity_id, _bytes(record))
            roles = self._roles(pipe, identity_id)
            role = roles.get(template_id, "")
            if not role.startswith(_QUARANTINED):
                raise IdentityNotFoundError(
                    f"identity {identity_id!r} has no quarantined template {template_id!r}"
                )
            model_id = role[len(_QUARANTINED) :]
            field_name = f"{identity_id}/{template_id}"
            vector = pipe.hget(self._vectors_prefix + _QUARANTINED + model_id, field_name)
            if vector is None:
                raise GalleryStoreError(f"quarantined template {field_name} has no vector")
            active = [key for key, value in roles.items() if value == model_id]
            negatives = [key for key, value in roles.items() if value == _NEGATIVE + model_id]
            ceiling = self._ceiling(
                [_vector(vector), *self._vectors(pipe, model_id, identity_id, active)],
                self._vectors(pipe, _NEGATIVE + model_id, identity_id, negatives),
            )
            counts = dict(identity.template_counts)
            counts[model_id] = counts.get(model_id, 0) + 1
            identity = dataclasses.replace(
                identity, updated=time.time(), template_counts=counts, tau_ceiling=ceiling
            )
            pipe.multi()
            pipe.hdel(self._vectors_prefix + _QUARANTINED + model_id, field_name)
            pipe.hset(self._vectors_prefix + model_id, field_name, vector)
            pipe.hset(templates_key, template_id, model_id)
            pipe.hset(self._identities_key, identity_id, identity.record())
            restored[:] = [identity]

        self._gallery.write(write, [identity_id], "restore a quarantined template")
        LOGGER.info("restored template %s of identity %s", template_id, identity_id)
        return restored[0]

    def _roles(self, pipe: RedisPipeline, identity_id: str) -> dict[str, str]:
        return {
            _text(key): _text(value)
            for key, value in pipe.hgetall(self._templates_prefix + identity_id).items()
        }

    def _vectors(
        self, pipe: RedisPipeline, role_model: str, identity_id: str, keys: list[str]
    ) -> list[npt.NDArray[np.float32]]:
        if not keys:
            return []
        values = pipe.hmget(
            self._vectors_prefix + role_model, [f"{identity_id}/{key}" for key in keys]
        )
        return [_vector(value) for value in values if value]

    def _ceiling(
        self,
        templates: list[npt.NDArray[np.float32]],
        negatives: list[npt.NDArray[np.float32]],
    ) -> float | None:
        """The margin below the nearest negative's distance to the nearest template (None
        with no template left: the identity is not searched at all)."""
        if not templates or not negatives:
            return None
        differences = np.stack(negatives)[:, np.newaxis, :] - np.stack(templates)[np.newaxis]
        nearest = float(np.sqrt(np.einsum("ijk,ijk->ij", differences, differences).min()))
        return max(0.0, nearest - self._config.negative_margin)
