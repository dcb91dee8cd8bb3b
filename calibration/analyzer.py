"""The service's detect + align + encode, built from a config without the gallery or Redis.

Calibration measures the pipeline, not the gallery: ``open_analyzer`` builds the same
``FaceAnalyzer`` as ``pipeline.service.app.open_services`` (same encoder backend, detector and
aligner
from the same config) and closes the engines when the block ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from engines.models.encoder import load_encoder
from engines.store import ModelStore
from pipeline.config.service import FaceStreamConfig
from pipeline.metrics import PipelineMetrics
from pipeline.recognition.align import FaceAligner
from pipeline.recognition.analyzer import FaceAnalyzer
from pipeline.recognition.detect.factory import load_detector
from pipeline.recognition.encode import FaceEncoder

__all__ = ["open_analyzer"]


@contextmanager
def open_analyzer(config: FaceStreamConfig) -> Iterator[FaceAnalyzer]:
    """The configured encoder, detector and aligner as one ``FaceAnalyzer``."""
    with ExitStack() as stack:
        store = ModelStore(config.data_dir)
        engine = load_encoder(store, config.engine.settings())
        stack.callback(engine.close)
        detector = load_detector(config.detect, store)
        stack.callback(detector.close)
        encoder = FaceEncoder(engine, PipelineMetrics.create(), max_batch=config.engine.max_batch)
        yield FaceAnalyzer(detector, FaceAligner(), encoder)
