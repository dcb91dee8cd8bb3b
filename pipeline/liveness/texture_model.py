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
    means=(-2.084543, 2.92428, 0.323142, 0.027589, 0.040165, 0.231561),
    scales=(0.822957, 0.745878, 0.116421, 0.014464, 0.085999, 0.070982),
    weights=(-0.794247, -1.105917, 0.666911, 0.45477, 0.052294, 0.599059),
    bias=-0.433945,
)
