"""The still-person path to "live": strong, sustained evidence from a face that does not move
in 3-D.

``require_motion_for_live`` keeps a face "undecided" until it has moved enough for a parallax
measurement, so a person who stands or sits still at a door never gets in. A still person
still shows two things a print or a frozen screen does not both show:

- *non-rigid motion*: talking, blinking or a change of expression moves a minority of the face's
  tracked points (mouth, eyes) unlike the rest, which no homography explains
  (``ParallaxMeasurement.nonrigid_residual``; a blink from the optional blink cue counts too).
  A print, or a screen showing a still image, leaves only tracking noise;
- *a confident CNN on a large face, sustained*: every one of the track's last few MiniFASNet
  scores high, on a face wide enough for its crops to carry detail. On the real recordings the
  CNN is what separated screens replaying a real person (who talks and blinks too) from real
  people (docs/liveness.md).

Both are required (with no surround spoof evidence and an unblocky stream); the fused score
must still reach ``live_threshold``. Thresholds and the figures behind them: docs/liveness.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.liveness.config import LivenessConfig
from pipeline.liveness.parallax import ParallaxMeasurement

__all__ = ["StillEvidence", "still_evidence"]


@dataclass(frozen=True, slots=True)
class StillEvidence:
    """What a track shows without 3-D motion. cnn_scores: how many of its latest CNN scores were
    looked at; cnn_min: the lowest of them (0 with none); face_width_px: the median face width
    over the window; nonrigid_measurements: parallax measurements whose non-rigid residual
    reached the threshold; nonrigid_residual: the ``still_live_nonrigid_frames``-th largest
    non-rigid residual of the window (0 with fewer measurements; what the threshold is compared
    with); blinked: the blink cue saw a blink."""

    cnn_scores: int
    cnn_min: float
    face_width_px: float
    nonrigid_measurements: int
    nonrigid_residual: float
    blinked: bool

    def suffices(self, config: LivenessConfig) -> bool:
        """Whether this is enough for "live" under ``config``'s still-person settings."""
        return (
            config.still_live
            and self.cnn_scores >= config.still_live_cnn_scores
            and self.cnn_min >= config.still_live_min_cnn
            and self.face_width_px >= config.still_live_min_face_px
            and (self.blinked or self.nonrigid_measurements >= config.still_live_nonrigid_frames)
        )

    def figures(self) -> dict[str, float]:
        """The evidence as cue figures (for events and the evaluation's traces)."""
        return {
            "still_cnn_min": self.cnn_min,
            "still_face_width_px": self.face_width_px,
            "nonrigid_measurements": float(self.nonrigid_measurements),
            "nonrigid_residual": self.nonrigid_residual,
        }


def still_evidence(
    cnn: Sequence[float],
    widths: Sequence[float],
    measurements: Sequence[ParallaxMeasurement],
    *,
    config: LivenessConfig,
    blinked: bool,
) -> StillEvidence:
    """The still-person evidence of a track: its CNN scores (oldest first), face widths (px)
    and parallax measurements over the window."""
    latest = list(cnn)[-config.still_live_cnn_scores :]
    residuals = sorted((item.nonrigid_residual for item in measurements), reverse=True)
    nonrigid = sum(residual >= config.still_live_nonrigid_residual for residual in residuals)
    rank = config.still_live_nonrigid_frames
    return StillEvidence(
        cnn_scores=len(latest),
        cnn_min=float(min(latest)) if latest else 0.0,
        face_width_px=float(np.median(widths)) if widths else 0.0,
        nonrigid_measurements=int(nonrigid),
        nonrigid_residual=float(residuals[rank - 1]) if len(residuals) >= rank else 0.0,
        blinked=blinked,
    )
