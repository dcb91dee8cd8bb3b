"""Default coefficients of the texture cue's logistic model (``TextureModel``).

Fitted by the project on the tune split of its synthetic evaluation only (bona fide face-track
windows of ../shared/data/video and the tune photos of ../shared/data/faces through the camera
model, against synthetic prints and screen replays of the same photos and windows from
``calibration.liveness_attacks``, seed 1; docs/liveness.md). It has never seen a real print or
a real screen. Reproduce with:

    python -m calibration.tune_liveness --seed 1 --l2 20.0 --write-texture-model
"""

from __future__ import annotations

from pipeline.liveness.texture import TextureModel

__all__ = ["DEFAULT_TEXTURE_MODEL"]

# feature order: high_frequency, spectral_peak, saturation, chroma_spread, highlights, contrast
DEFAULT_TEXTURE_MODEL = TextureModel(
    means=(-2.077099, 2.925685, 0.322473, 0.027826, 0.039405, 0.232619),
    scales=(0.830029, 0.737216, 0.115987, 0.014713, 0.085453, 0.07094),
    weights=(-0.810912, -1.12614, 0.683716, 0.46704, 0.057626, 0.590761),
    bias=-0.429848,
)
