"""The encode stage: aligned chips -> embeddings, batched into as few engine calls as possible."""

from __future__ import annotations

import time

import numpy as np

from engines.base import Engine
from pipeline.metrics import PipelineMetrics
from pipeline.types import Embeddings, FaceChips

__all__ = ["FaceEncoder"]


class FaceEncoder:
    """Runs chips through the face encoder engine and tags the result with its model id.

    max_batch: most chips per engine call; larger inputs are split.
    """

    def __init__(self, engine: Engine, metrics: PipelineMetrics, *, max_batch: int = 64) -> None:
        (self._input_name,) = engine.inputs
        (self._output_name,) = engine.outputs
        self.engine = engine
        self._metrics = metrics
        self._max_batch = max_batch

    @property
    def model_id(self) -> str:
        """Id of the embedding space this encoder produces."""
        return self.engine.model_id

    def encode(self, chips: FaceChips) -> Embeddings:
        """Embeddings float32 (N, 128) for RGB uint8 chips (N, 150, 150, 3)."""
        vectors = [np.zeros((0, 128), np.float32)]
        timer = self._metrics.stage_seconds.labels(stage="encode", backend=self.engine.backend)
        for start in range(0, len(chips), self._max_batch):
            batch = chips.chips[start : start + self._max_batch]
            nchw = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
            began = time.perf_counter()
            result = self.engine.infer({self._input_name: nchw})[self._output_name]
            timer.observe(time.perf_counter() - began)
            vectors.append(np.asarray(result, dtype=np.float32))
        self._metrics.faces_encoded.labels(
            backend=self.engine.backend, model_id=self.engine.model_id
        ).inc(len(chips))
        return Embeddings(np.concatenate(vectors), model_id=self.engine.model_id)
