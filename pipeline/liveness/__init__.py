"""Liveness: is a tracked face a live person, or a printed photo or a screen replay?

One ``LivenessJudge`` per camera gathers evidence for each track over a window of frames
(parallax, surround motion, texture, flicker, the MiniFASNet CNN, optionally blinks; a face
that stays still can pass on the stronger evidence of ``still``) and answers with a
``Liveness`` (verdict, fused score, cues). See docs/liveness.md.
"""

from __future__ import annotations

from engines.models.antispoof import (
    LivenessEngineSettings,
    build_liveness_onnx,
    load_liveness_engine,
)
from pipeline.liveness.config import LivenessConfig
from pipeline.liveness.judge import LivenessJudge
from pipeline.types import Liveness, Verdict

__all__ = [
    "Liveness",
    "LivenessConfig",
    "LivenessEngineSettings",
    "LivenessJudge",
    "Verdict",
    "build_liveness_onnx",
    "load_liveness_engine",
]
