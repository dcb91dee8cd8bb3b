"""Fusing cue probabilities into one score: a weighted sum of log-odds.

Each available cue contributes ``weight * logit(p)`` (p clipped to [0.02, 0.98] so no single
cue is ever certain); the score is the logistic of the sum. A cue with no evidence (no motion
yet, CNN off) contributes nothing, so the score stays at 0.5 ("undecided") until some cue
speaks. Weights come from ``LivenessConfig`` and are documented in docs/liveness.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["PROBABILITY_FLOOR", "fuse"]

PROBABILITY_FLOOR = 0.02


def fuse(probabilities: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """The fused score (0..1) of cue ``probabilities`` (P(live) each) under ``weights``."""
    total = 0.0
    for name, probability in probabilities.items():
        clipped = min(max(probability, PROBABILITY_FLOOR), 1.0 - PROBABILITY_FLOOR)
        total += weights.get(name, 0.0) * math.log(clipped / (1.0 - clipped))
    return 1.0 / (1.0 + math.exp(-max(min(total, 30.0), -30.0)))
