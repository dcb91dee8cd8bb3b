"""Default coefficients of the texture cue's logistic model (``TextureModel``).

Placeholder: neutral until fitted by ``calibration.liveness.fit_texture_model``.
"""

from __future__ import annotations

from pipeline.liveness.texture import TextureModel

__all__ = ["DEFAULT_TEXTURE_MODEL"]

DEFAULT_TEXTURE_MODEL = TextureModel(
    means=(0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    scales=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0),
    weights=(0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    bias=0.0,
)
