"""The service's object graph, built in one place from a validated config.

``open_services`` loads the encoder and the detector (``open_analyzer``), starts the embedded Redis
when no URL is configured, and connects the gallery; leaving the ``with`` block stops all of it.
Nothing here is global: every caller (CLI command, API, test) gets its own services.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from engines.base import Engine
from engines.models.encoder import load_encoder
from engines.store import ModelStore
from pipeline.config.calibrated import calibrated_match
from pipeline.config.service import FaceStreamConfig
from pipeline.errors import EnrollmentRejectedError
from pipeline.gallery.model import DEFAULT_GALLERY, Enrollment, Identity
from pipeline.gallery.store import Gallery, connect
from pipeline.liveness import load_liveness_engine
from pipeline.metrics import PipelineMetrics
from pipeline.recognition.align import FaceAligner
from pipeline.recognition.analyzer import FaceAnalyzer
from pipeline.recognition.detect.blazeface import BlazeFaceDetector
from pipeline.recognition.detect.factory import load_detector
from pipeline.recognition.encode import FaceEncoder
from pipeline.recognition.enroll import enrollment_template
from pipeline.redis.cluster import RedisClient
from pipeline.redis.server import EmbeddedRedis, make_private_dir, running_embedded_url
from pipeline.types import Embeddings, FoundBy

__all__ = [
    "EnrolmentTemplates",
    "Services",
    "gallery_client",
    "open_analyzer",
    "open_services",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EnrolmentTemplates:
    """What a set of enrolment photos gave: templates (N, 128), the still search that found
    each template's face (row i: template i), and one line per photo refused."""

    templates: Embeddings
    found_by: list[FoundBy]
    rejected: list[str]


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a command or the API needs, built from one config."""

    config: FaceStreamConfig
    metrics: PipelineMetrics
    engine: Engine
    analyzer: FaceAnalyzer
    gallery: Gallery
    redis: RedisClient  # the gallery's connection (bytes responses), shared with the events
    liveness_engine: Engine | None = None  # MiniFASNet, when liveness and its CNN cue are on

    def enrolment_templates(
        self, images: Sequence[tuple[str, npt.NDArray[np.uint8]]], *, face_index: int | None = None
    ) -> EnrolmentTemplates:
        """Enrolment templates from named RGB images, with how each face was found: the one
        enrolment path of the API, the CLI and calibration.

        A photo that fails the enrolment checks (``recognition.enroll``) is skipped and its reason
        reported; so is one that duplicates an earlier photo of the same call or a template
        already in the gallery (which is why this is a method of the services, not a function of
        ``recognition.enroll``).
        """
        accepted: list[npt.NDArray[np.float32]] = []
        found_by: list[FoundBy] = []
        problems: list[str] = []
        for name, image in images:
            existing = None
            if accepted:
                existing = Embeddings(np.concatenate(accepted), model_id=self.analyzer.model_id)
            try:
                enrolled = enrollment_template(
                    self.analyzer,
                    image,
                    self.config.enroll,
                    face_index=face_index,
                    existing=existing,
                )
            except EnrollmentRejectedError as exc:
                problems.append(f"{name}: {exc}")
                continue
            template = enrolled.template
            stored = self.gallery.identify(
                template, top_k=1, max_distance=self.config.enroll.duplicate_distance
            ).best()[0]
            if stored is not None:
                problems.append(
                    f"{name}: the face is {stored.distance:.4f} from a template of "
                    f"{stored.name!r} ({stored.identity_id}) already in the gallery (duplicate)"
                )
                continue
            accepted.append(template.vectors)
            found_by.append(enrolled.found_by)
        vectors = np.concatenate(accepted) if accepted else np.zeros((0, 128), np.float32)
        templates = Embeddings(vectors, model_id=self.analyzer.model_id)
        return EnrolmentTemplates(templates, found_by, problems)

    def enroll(
        self,
        name: str,
        templates: Embeddings,
        *,
        identity_id: str | None = None,
        galleries: Collection[str] = (DEFAULT_GALLERY,),
    ) -> Identity:
        """Store a new identity with ``templates`` in the gallery, a member of the named
        ``galleries`` (a door searches only its own)."""
        return self.gallery.enroll(
            Enrollment(
                name=name, embeddings=templates, identity_id=identity_id, galleries=tuple(galleries)
            )
        )


def _with_calibrated_tau(config: FaceStreamConfig, model_id: str) -> FaceStreamConfig:
    """``config`` with the calibrated tau for ``model_id``, unless the config sets its own."""
    match = config.recognition.match
    if "max_distance" in match.model_fields_set:
        return config  # an explicit setting wins over a measurement
    calibrated = calibrated_match(config.data_dir, model_id)
    if calibrated is None:
        return config
    _log.info("match threshold tau %.4f, calibrated for encoder %s", calibrated.tau, model_id)
    update: dict[str, object] = {"max_distance": calibrated.tau}
    if "gallery_size" not in match.model_fields_set:
        update["gallery_size"] = calibrated.gallery_size
    process = config.recognition.model_copy(update={"match": match.model_copy(update=update)})
    return config.model_copy(update={"recognition": process})


@contextmanager
def gallery_client(
    config: FaceStreamConfig, *, redis_dir: Path | None = None
) -> Iterator[RedisClient]:
    """A client of the configured gallery Redis; with no URL, the embedded redis-server under
    ``redis_dir`` (default ``data_dir/redis``): the one already running there, or a new one
    that stops when the block ends."""
    with ExitStack() as stack:
        url = config.gallery.redis_url
        embedded_dir = redis_dir or config.data_dir / "redis"
        if url is None and (url := running_embedded_url(embedded_dir)) is not None:
            _log.info("using the embedded redis-server already running at %s", url)
        if url is None:
            server = EmbeddedRedis(embedded_dir, config.gallery.embedded)
            stack.enter_context(server)
            server.wait_ready()
            url = server.url
            _log.info("embedded redis-server ready at %s", url)
        client = connect(url, config.gallery)
        stack.callback(client.close)
        yield client


@contextmanager
def open_analyzer(
    config: FaceStreamConfig, metrics: PipelineMetrics | None = None
) -> Iterator[FaceAnalyzer]:
    """The configured encoder, detector and aligner as one ``FaceAnalyzer`` (the service's, and
    calibration's, which measures the pipeline without the gallery); the engines close when the
    block ends. The encoder splits its input at ``engine.max_batch``, the largest batch a
    TensorRT plan is built for. ``metrics``: None counts into a registry of its own."""
    metrics = PipelineMetrics.create() if metrics is None else metrics
    with ExitStack() as stack:
        store = ModelStore(config.data_dir)
        engine = load_encoder(store, config.engine.settings())
        stack.callback(engine.close)
        detector = load_detector(config.detect, store)
        stack.callback(detector.close)
        encoder = FaceEncoder(engine, metrics, max_batch=config.engine.max_batch)
        yield FaceAnalyzer(detector, FaceAligner(), encoder, metrics=metrics)


@contextmanager
def open_services(config: FaceStreamConfig, *, redis_dir: Path | None = None) -> Iterator[Services]:
    """Build the services for ``config``; ``redis_dir`` overrides where an embedded Redis keeps
    its data (default: ``data_dir/redis``)."""
    metrics = PipelineMetrics.create()
    with ExitStack() as stack:
        make_private_dir(config.data_dir)  # templates, the audit log, the token live here
        store = ModelStore(config.data_dir)
        analyzer = stack.enter_context(open_analyzer(config, metrics))
        detector, engine = analyzer.detector, analyzer.encoder.engine
        config = _with_calibrated_tau(config, engine.model_id)
        client = stack.enter_context(gallery_client(config, redis_dir=redis_dir))
        gallery = Gallery(client, metrics, model_id=engine.model_id, config=config.gallery)
        stack.callback(gallery.close)
        gallery.start()
        metrics.engine_info.labels(
            role="encoder",
            backend=engine.backend,
            precision=config.engine.precision,
            model_id=engine.model_id,
        ).set(1)
        if isinstance(detector, BlazeFaceDetector):
            metrics.engine_info.labels(
                role="detector",
                backend=detector.engine.backend,
                precision=detector.config.precision,
                model_id=detector.engine.model_id,
            ).set(1)
        else:
            metrics.engine_info.labels(
                role="detector", backend="dlib", precision="native", model_id="dlib_hog"
            ).set(1)
        liveness_engine = None
        if config.liveness.enabled and config.liveness.cnn:
            liveness_engine = load_liveness_engine(store)
            stack.callback(liveness_engine.close)
            metrics.engine_info.labels(
                role="liveness",
                backend=liveness_engine.backend,
                precision="fp32",
                model_id=liveness_engine.model_id,
            ).set(1)
        yield Services(config, metrics, engine, analyzer, gallery, client, liveness_engine)
