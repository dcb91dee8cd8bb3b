"""Texture, colour and flicker cues: what prints and screens do to a face's pixels.

From a 64x64 patch of the inner face (at native resolution where the face is big enough, so a
screen's pixel grid and moire survive; upsampled otherwise) six features are computed:

- ``high_frequency``: log10 of the power above half the Nyquist frequency over the power
  between 5% and 50% of it (a Hann-windowed FFT). Prints are smoother (lower), pixel grids and
  moire add high-frequency power (higher).
- ``spectral_peak``: log10 of the strongest over the median power in the 30-100% Nyquist band;
  periodic patterns (pixel grids, moire, halftone) make isolated peaks.
- ``saturation``: mean HSV saturation (0..1); prints lose gamut, screens often oversaturate.
- ``chroma_spread``: standard deviation of the YCrCb chroma channels (0..1 units).
- ``highlights``: fraction of pixels with HSV value above 0.95 (blown screen highlights).
- ``contrast``: standard deviation over mean of luma (print contrast is compressed).

A logistic model over the standardised features (``TextureModel``; the default coefficients in
``pipeline.liveness.texture_model`` were fitted by ``python -m calibration.tune_liveness``
on the tune split: real face crops against synthetic attacks only) turns them into P(live).

Flicker: screens beat against the camera's exposure, so the mean brightness of a replayed face
jitters from frame to frame; ``flicker_statistic`` is the standard deviation of the
second difference of the face's mean luma over the window, relative to the mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

__all__ = [
    "PATCH_SIZE_PX",
    "TEXTURE_FEATURES",
    "TextureModel",
    "flicker_live_probability",
    "flicker_statistic",
    "texture_features",
    "texture_patch",
]

PATCH_SIZE_PX = 64
TEXTURE_FEATURES = (
    "high_frequency",
    "spectral_peak",
    "saturation",
    "chroma_spread",
    "highlights",
    "contrast",
)
_INNER_FRACTION = 0.6  # the patch covers the central 60% of the face box (eyes, nose, cheeks)
_FLICKER_NEUTRAL = 0.012  # relative second-difference jitter at which flicker is neutral
_FLICKER_SLOPE = 250.0  # log-odds per unit of flicker statistic


def _radial_frequency(size: int) -> npt.NDArray[np.float64]:
    frequencies = np.fft.fftshift(np.fft.fftfreq(size)) * 2.0  # 1.0 = Nyquist
    grid_x, grid_y = np.meshgrid(frequencies, frequencies)
    radius: npt.NDArray[np.float64] = np.hypot(grid_x, grid_y)
    return radius


_RADIUS = _radial_frequency(PATCH_SIZE_PX)
_HIGH_BAND = _RADIUS > 0.5
_MID_BAND = (_RADIUS > 0.05) & (_RADIUS <= 0.5)
_PEAK_BAND = (_RADIUS > 0.3) & (_RADIUS <= 1.0)
_WINDOW = np.outer(np.hanning(PATCH_SIZE_PX), np.hanning(PATCH_SIZE_PX))


def texture_patch(
    image_bgr: npt.NDArray[np.uint8], box: npt.NDArray[np.float32]
) -> npt.NDArray[np.uint8] | None:
    """The 64x64 BGR patch of the inner face of ``box`` (x1 y1 x2 y2, frame pixels), native
    pixels when the inner face is at least 64 px wide, resampled up otherwise; None when the
    face is (almost) outside the image."""
    height, width = image_bgr.shape[:2]
    x1, y1, x2, y2 = (float(value) for value in box)
    side = max(x2 - x1, 1.0) * _INNER_FRACTION
    centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
    crop_side = PATCH_SIZE_PX if side >= PATCH_SIZE_PX else max(round(side), 8)
    left = round(centre_x - crop_side / 2)
    top = round(centre_y - crop_side / 2)
    if left < 0 or top < 0 or left + crop_side > width or top + crop_side > height:
        return None  # the inner face is cut by the frame edge: no trustworthy texture
    crop = image_bgr[top : top + crop_side, left : left + crop_side]
    if crop_side != PATCH_SIZE_PX:
        size = (PATCH_SIZE_PX, PATCH_SIZE_PX)
        return np.ascontiguousarray(cv2.resize(crop, size, interpolation=cv2.INTER_LINEAR))
    return np.ascontiguousarray(crop)


def texture_features(patch_bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """The ``TEXTURE_FEATURES`` of a 64x64 BGR uint8 patch, float32 (6,)."""
    luma = cv2.cvtColor(patch_bgr, cv2.COLOR_BGR2GRAY).astype(np.float64)
    centred = (luma - luma.mean()) * _WINDOW
    power = np.abs(np.fft.fftshift(np.fft.fft2(centred))) ** 2 + 1e-6
    high_frequency = np.log10(power[_HIGH_BAND].sum() / power[_MID_BAND].sum())
    band = power[_PEAK_BAND]
    spectral_peak = np.log10(band.max() / np.median(band))
    hsv = cv2.cvtColor(patch_bgr, cv2.COLOR_BGR2HSV)
    saturation = hsv[:, :, 1].mean() / 255.0
    highlights = float((hsv[:, :, 2] > 242).mean())
    chroma = cv2.cvtColor(patch_bgr, cv2.COLOR_BGR2YCrCb)[:, :, 1:].astype(np.float64) / 255.0
    chroma_spread = float(np.sqrt(chroma[:, :, 0].var() + chroma[:, :, 1].var()))
    contrast = luma.std() / max(luma.mean(), 1.0)
    return np.array(
        [high_frequency, spectral_peak, saturation, chroma_spread, highlights, contrast],
        dtype=np.float32,
    )


@dataclass(frozen=True, slots=True)
class TextureModel:
    """Logistic model over standardised texture features: P(live) = sigmoid(w . z + bias),
    z = (features - means) / scales; all float tuples in ``TEXTURE_FEATURES`` order."""

    means: tuple[float, ...]
    scales: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float

    def __post_init__(self) -> None:
        count = len(TEXTURE_FEATURES)
        if not len(self.means) == len(self.scales) == len(self.weights) == count:
            raise ValueError(f"a texture model needs {count} means, scales and weights")

    def live_probability(self, features: npt.NDArray[np.float32]) -> float:
        """P(live) of one feature vector (float32 (6,))."""
        standard = (features.astype(np.float64) - np.asarray(self.means)) / np.asarray(self.scales)
        logit = float(standard @ np.asarray(self.weights)) + self.bias
        return float(1.0 / (1.0 + np.exp(-np.clip(logit, -30.0, 30.0))))


def flicker_statistic(luma_means: Sequence[float]) -> float | None:
    """Std of the second difference of per-frame face luma over its mean; None under 5 frames."""
    if len(luma_means) < 5:
        return None
    series = np.asarray(luma_means, dtype=np.float64)
    second = series[1:-1] - (series[:-2] + series[2:]) / 2
    return float(second.std() / max(series.mean(), 1.0))


def flicker_live_probability(statistic: float) -> float:
    """P(live) from ``flicker_statistic``: steady light is live-like, beating is screen-like."""
    return float(1.0 / (1.0 + np.exp(_FLICKER_SLOPE * (statistic - _FLICKER_NEUTRAL))))
