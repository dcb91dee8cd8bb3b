"""Default coefficients of the texture cue's logistic model (``TextureModel``).

Fitted by the project on the tune split of its synthetic evaluation only (bona fide face-track
windows of ../shared/data/video against synthetic prints and screen replays from
``calibration.liveness_attacks``, seed 1; docs/liveness.md). It has never seen a real print or
a real screen. Reproduce with:

    python -m calibration.tune_liveness --seed 1 --l2 20.0 --write-texture-model
"""

from __future__ import annotations

from pipeline.liveness.texture import TextureModel

__all__ = ["DEFAULT_TEXTURE_MODEL"]

# feature order: high_frequency, spectral_peak, saturation, chroma_spread, highlights, contrast
DEFAULT_TEXTURE_MODEL = TextureModel(
    means=(-2.07319, 2.941519, 0.320066, 0.027714, 0.038544, 0.231963),
    scales=(0.842447, 0.743901, 0.11687, 0.014877, 0.084997, 0.070157),
    weights=(-1.502238, -0.246525, 0.131911, -0.87358, -0.38236, 1.605858),
    bias=-2.049826,
)
