"""Re-encoding: a gallery's templates for a new model, made from those of another model.

For an encoder that extends another one (an adapter head on its descriptors), the new model's
templates are the old ones through a transform, so nobody has to be enrolled again. Each new
template id is derived from its source template's, so running it again rewrites the same
templates instead of adding copies; the source templates stay (switching back needs nothing).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping

import numpy as np
import numpy.typing as npt

from pipeline.errors import GalleryRequestError
from pipeline.gallery.index import VECTOR_DTYPE, parse_vectors
from pipeline.gallery.model import Identity, ReencodeResult
from pipeline.gallery.store import Gallery, reply_bytes, reply_text
from pipeline.redis.cluster import RedisPipeline
from pipeline.types import DESCRIPTOR_SIZE

__all__ = ["Transform", "reencode_from"]

LOGGER = logging.getLogger(__name__)

# float32 (N, 128) templates of the source model -> float32 (N, 128) of the gallery's model
Transform = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]


def reencode_from(
    gallery: Gallery,
    source_model_id: str,
    transform: Transform,
    *,
    batch_identities: int = 500,
) -> ReencodeResult:
    """Make ``gallery``'s templates (of its model id) from those of ``source_model_id``.

    ``transform`` maps float32 (N, 128) source templates to the gallery model's. Identities are
    written ``batch_identities`` per gallery transaction; identities removed meanwhile are
    skipped.
    """
    model_id = gallery.model_id
    if source_model_id == model_id:
        raise GalleryRequestError(f"the gallery's model already is {source_model_id!r}")
    by_identity = gallery.templates_of_model(source_model_id)
    suffix = hashlib.sha256(model_id.encode()).hexdigest()[:8]
    written = 0
    identity_ids = sorted(by_identity)
    for start in range(0, len(identity_ids), batch_identities):
        chunk = identity_ids[start : start + batch_identities]
        templates = {
            identity_id: _transformed(
                identity_id, source_model_id, by_identity[identity_id], transform, suffix
            )
            for identity_id in chunk
        }
        _write_reencoded(gallery, templates)
        written += sum(len(values) for values in templates.values())
    LOGGER.info(
        "re-encoded %d templates of %d identities from model %s into %s",
        written,
        len(identity_ids),
        source_model_id,
        model_id,
    )
    return ReencodeResult(identities=len(identity_ids), templates=written)


def _transformed(
    identity_id: str,
    source_model_id: str,
    templates: Mapping[str, bytes],
    transform: Transform,
    suffix: str,
) -> dict[str, bytes]:
    """New template id -> transformed vector bytes of one identity's source templates."""
    source = parse_vectors(identity_id, source_model_id, list(templates.values()))
    vectors = np.asarray(transform(source), VECTOR_DTYPE)
    if vectors.shape != source.shape or not np.isfinite(vectors).all():
        raise GalleryRequestError(
            f"re-encoding gave {vectors.shape} values (finite: {np.isfinite(vectors).all()}) "
            f"for {source.shape} templates: expected finite ({DESCRIPTOR_SIZE},) vectors"
        )
    return {
        f"{template_id}-{suffix}": vector.tobytes()
        for template_id, vector in zip(templates, vectors, strict=True)
    }


def _write_reencoded(gallery: Gallery, templates: Mapping[str, Mapping[str, bytes]]) -> None:
    """Store re-encoded templates (identity -> template id -> bytes) in one transaction;
    identities removed meanwhile are skipped."""
    identity_ids = list(templates)
    model_id = gallery.model_id
    prefix = gallery.key_prefix
    identities_key = prefix + "identities"
    templates_prefix = prefix + "templates:"
    vectors_key = prefix + "vectors:" + model_id

    def write(pipe: RedisPipeline) -> None:
        records = pipe.hmget(identities_key, identity_ids)
        current = [
            (identity_id, record, pipe.hgetall(templates_prefix + identity_id))
            for identity_id, record in zip(identity_ids, records, strict=True)
            if record is not None
        ]
        pipe.multi()
        for identity_id, record, existing in current:
            models = {reply_text(key): reply_text(value) for key, value in existing.items()}
            models.update(dict.fromkeys(templates[identity_id], model_id))
            identity = Identity.from_record(identity_id, reply_bytes(record))
            counts = dict(identity.template_counts)
            counts[model_id] = sum(model == model_id for model in models.values())
            updated = identity.with_counts(counts)
            pipe.hset(identities_key, identity_id, updated.record())
            pipe.hset(
                templates_prefix + identity_id,
                mapping=dict.fromkeys(templates[identity_id], model_id),
            )
            pipe.hset(
                vectors_key,
                mapping={
                    f"{identity_id}/{template_id}": value
                    for template_id, value in templates[identity_id].items()
                },
            )

    gallery.write(write, identity_ids, "store re-encoded templates")
