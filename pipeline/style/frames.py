"""Frame geometry and the runtime temporal filter of the style stream.

Odd frame sizes: a style model runs at one fixed size (its export size, 640x360 for the shipped
models). A frame of any other size (odd sides, another aspect ratio) is scaled to fit inside
that size with its aspect ratio kept, and the rest is filled by mirroring the border (a mirror
keeps instance-norm statistics closer to the image's than black bars would); after the model,
the padding is cut off and the result is scaled back, so every output frame has its input's
size.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["Letterbox", "TemporalFilter", "blend", "fit_to_output"]


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a (frame_width, frame_height) frame maps into a (model_width, model_height) input."""

    frame_width_px: int
    frame_height_px: int
    model_width_px: int
    model_height_px: int

    @property
    def identity(self) -> bool:
        """True when the frame already has the model's size."""
        return (self.frame_width_px, self.frame_height_px) == (
            self.model_width_px,
            self.model_height_px,
        )

    @property
    def _scaled(self) -> tuple[int, int, int, int]:
        scale = min(
            self.model_width_px / self.frame_width_px, self.model_height_px / self.frame_height_px
        )
        width = min(self.model_width_px, max(1, round(self.frame_width_px * scale)))
        height = min(self.model_height_px, max(1, round(self.frame_height_px * scale)))
        left = (self.model_width_px - width) // 2
        top = (self.model_height_px - height) // 2
        return left, top, width, height

    def fit(
        self, image: npt.NDArray[np.uint8], *, black_bars: bool = False
    ) -> npt.NDArray[np.uint8]:
        """BGR uint8 frame -> BGR uint8 (model_height, model_width, 3), scaled and mirrored into
        the padding (what the network sees), or with black bars (what a viewer sees)."""
        if self.identity:
            return image
        left, top, width, height = self._scaled
        scaled = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        if black_bars:
            border = cv2.BORDER_CONSTANT
        else:
            border = cv2.BORDER_REFLECT_101 if min(width, height) > 1 else cv2.BORDER_REPLICATE
        padded = cv2.copyMakeBorder(
            scaled,
            top,
            self.model_height_px - height - top,
            left,
            self.model_width_px - width - left,
            border,
            value=(0, 0, 0),
        )
        return np.asarray(padded, dtype=np.uint8)

    def unfit(self, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """Model-size output -> the frame's own size (padding cut off, scaled back)."""
        if self.identity:
            return image
        left, top, width, height = self._scaled
        inner = image[top : top + height, left : left + width]
        restored = cv2.resize(
            inner, (self.frame_width_px, self.frame_height_px), interpolation=cv2.INTER_LINEAR
        )
        return np.asarray(restored, dtype=np.uint8)


def fit_to_output(
    image: npt.NDArray[np.uint8], width_px: int, height_px: int
) -> npt.NDArray[np.uint8]:
    """``image`` (BGR uint8) at the output's size: unchanged when it already has it, else scaled
    to fit inside, keeping its aspect, with black bars. Sinks are opened at the first frame's
    size; a live source that comes back from a reconnect at another resolution must not break
    them."""
    height, width = image.shape[:2]
    return Letterbox(width, height, width_px, height_px).fit(image, black_bars=True)


def blend(
    stylized: npt.NDArray[np.uint8], original: npt.NDArray[np.uint8], strength: float
) -> npt.NDArray[np.uint8]:
    """``strength`` * stylized + (1 - strength) * original, both BGR uint8 of one shape."""
    if strength >= 1.0:
        return stylized
    return np.asarray(
        cv2.addWeighted(stylized, strength, original, 1.0 - strength, 0.0), dtype=np.uint8
    )


class TemporalFilter:
    """Damps flicker: where the *input* did not change, keep most of the previous output.

    out_t = w * out_{t-1} + (1 - w) * stylized_t, per pixel, with
    w = smoothing * exp(-(d / change_levels)^2) and d the change of the input pixel since the
    previous frame: the luma (BT.601 grey, 0-255) of its per-channel absolute difference.
    Moving content (large d) takes the new stylization at once; static content averages over
    about 1 / (1 - smoothing) frames. It costs a few milliseconds at 640x360 and needs no
    optical flow at run time. ``smoothing`` 0 turns it off.
    """

    def __init__(self, smoothing: float, change_levels: float = 12.0) -> None:
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"temporal smoothing must be in [0, 1), got {smoothing}")
        levels = np.arange(256, dtype=np.float32)
        self._weight_by_change = smoothing * np.exp(-((levels / change_levels) ** 2))
        self._smoothing = smoothing
        self._previous_input: npt.NDArray[np.uint8] | None = None
        self._previous_output: npt.NDArray[np.float32] | None = None

    def reset(self) -> None:
        """Forget the previous frame (after a style switch or a size change)."""
        self._previous_input = None
        self._previous_output = None

    def apply(
        self, original: npt.NDArray[np.uint8], stylized: npt.NDArray[np.uint8]
    ) -> npt.NDArray[np.uint8]:
        """The filtered output for this frame; both arguments BGR uint8 of one shape."""
        if self._smoothing == 0.0:
            return stylized
        current = stylized.astype(np.float32)
        if (
            self._previous_input is None
            or self._previous_output is None
            or self._previous_input.shape != original.shape
        ):
            output = current
        else:
            change = cv2.cvtColor(cv2.absdiff(original, self._previous_input), cv2.COLOR_BGR2GRAY)
            weight = self._weight_by_change[change][:, :, None]
            output = current + weight * (self._previous_output - current)
        self._previous_input = original.copy()
        self._previous_output = output
        return np.asarray(np.clip(output + 0.5, 0, 255), dtype=np.uint8)
