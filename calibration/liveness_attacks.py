"""Synthetic presentation attacks (and bona fide clips) for developing and measuring liveness.

Every clip is a list of BGR uint8 frames at ``fps``; every random choice comes from the
``numpy.random.Generator`` passed in, so a seed reproduces a clip exactly. Parameters are drawn
uniformly from the documented ranges of ``PrintParameters`` / ``ReplayParameters``.

- Print attack (``print_attack``): a still face photo becomes a sheet of paper: saturation
  and contrast compressed, a warm paper tint, paper grain and fibre shading, print blur, a white
  margin; it is lit by a directional gradient with a broad flat sheen, placed in front of a
  background (a defocused scene photo, or a plain backdrop when no scenes are given) and seen
  by a moving (hand-held) camera: a 3-D rotation and translation of the sheet, projected
  through a pinhole camera, i.e. one homography per frame.
- Screen replay (``replay_attack``): consecutive frames of a bona fide clip (or one still) are
  shown on a virtual screen: display gamma and colour temperature, brightness gain with blown
  highlights, an RGB sub-pixel grid with a black matrix (sampled by the camera -> moire),
  refresh flicker (a global beat and rolling bands), a dark bezel, a soft reflection on the
  glass, the same moving-camera perspective. The camera integrates the panel's light over its
  own pixels (area resampling to the size the screen has in the frame) before anything clips,
  so the sub-pixel grid leaves moire, not a washed-out picture.
- Both, and bona fide clips (``bona_fide_clip``), then pass through one camera model:
  defocus blur, sensor noise and JPEG compression, so the camera itself is no giveaway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

__all__ = [
    "CameraParameters",
    "Clip",
    "PrintParameters",
    "ReplayParameters",
    "bona_fide_clip",
    "print_attack",
    "replay_attack",
]

Image = npt.NDArray[np.uint8]
Range = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Clip:
    """Frames (BGR uint8) of one presentation; label: bona_fide, print or replay."""

    frames: tuple[Image, ...]
    fps: float
    label: str
    source: str


@dataclass(frozen=True, slots=True)
class CameraParameters:
    """The capturing camera: defocus blur sigma (px), sensor noise sigma (0..255), JPEG quality."""

    blur_sigma_px: Range = (0.2, 0.9)
    noise_sigma: Range = (1.0, 4.0)
    jpeg_quality: Range = (60.0, 92.0)


@dataclass(frozen=True, slots=True)
class PrintParameters:
    """Ranges of a print attack (uniform draws).

    saturation: kept fraction of colour saturation; black_level/white_level: darkest and
    brightest printable value; tint_blue/tint_green: paper colour gains (warm paper < 1);
    grain_sigma: per-pixel paper grain (0..255); fibre_amplitude: low-frequency paper shading
    (fraction); print_blur_px: blur of the printing; lighting_gradient: brightness change across
    the sheet (fraction); sheen: added flat specular light (0..255); yaw/pitch/roll_degrees: peak
    amplitude of the hand-held rotation; motion_hz: its frequency; sheet_height_fraction: height
    of the sheet in the frame.
    """

    saturation: Range = (0.55, 0.9)
    black_level: Range = (12.0, 40.0)
    white_level: Range = (205.0, 245.0)
    tint_blue: Range = (0.86, 0.98)
    tint_green: Range = (0.94, 1.0)
    grain_sigma: Range = (2.0, 7.0)
    fibre_amplitude: Range = (0.02, 0.07)
    print_blur_px: Range = (0.4, 1.4)
    lighting_gradient: Range = (0.1, 0.35)
    sheen: Range = (0.0, 35.0)
    yaw_degrees: Range = (8.0, 25.0)
    pitch_degrees: Range = (5.0, 18.0)
    roll_degrees: Range = (2.0, 8.0)
    motion_hz: Range = (0.3, 0.9)
    sheet_height_fraction: Range = (0.55, 0.85)


@dataclass(frozen=True, slots=True)
class ReplayParameters:
    """Ranges of a screen replay (uniform draws).

    gamma_ratio: display over camera gamma; blue_gain/red_gain: colour temperature; gain:
    brightness boost (values clip at 255: blown highlights); subpixel_px: width of one screen
    pixel in the rendered texture (3 sub-pixel stripes); black_matrix: lit fraction of a
    sub-pixel; flicker_amplitude/flicker_hz: global refresh beat; band_amplitude/band_period:
    rolling bands (fraction, in screen heights); bezel_fraction: bezel width over screen width;
    reflection: peak added light of the glass reflection (0..255); yaw/pitch/roll_degrees,
    motion_hz, screen_height_fraction: as for prints.
    """

    gamma_ratio: Range = (0.8, 1.3)
    blue_gain: Range = (1.0, 1.12)
    red_gain: Range = (0.9, 1.0)
    gain: Range = (1.0, 1.3)
    subpixel_px: Range = (3.0, 4.0)
    black_matrix: Range = (0.65, 0.9)
    flicker_amplitude: Range = (0.02, 0.08)
    flicker_hz: Range = (2.0, 7.0)
    band_amplitude: Range = (0.0, 0.06)
    band_period: Range = (0.15, 0.5)
    bezel_fraction: Range = (0.03, 0.08)
    reflection: Range = (8.0, 45.0)
    yaw_degrees: Range = (5.0, 20.0)
    pitch_degrees: Range = (4.0, 14.0)
    roll_degrees: Range = (1.0, 6.0)
    motion_hz: Range = (0.3, 0.9)
    screen_height_fraction: Range = (0.55, 0.85)


def _draw(rng: np.random.Generator, bounds: Range) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _rotation(yaw: float, pitch: float, roll: float) -> npt.NDArray[np.float64]:
    """Rotation matrix from angles in radians (about y, x, z)."""
    cy, sy, cp, sp, cr, sr = (
        math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch),
        math.cos(roll), math.sin(roll),
    )  # fmt: skip
    about_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    about_x = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    about_z = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    rotation: npt.NDArray[np.float64] = about_z @ about_x @ about_y
    return rotation


@dataclass(frozen=True, slots=True)
class _HandMotion:
    """A smooth hand-held motion of a plane in front of a pinhole camera."""

    amplitudes: tuple[float, float, float]  # yaw, pitch, roll (radians)
    phases: tuple[float, float, float]
    frequency_hz: float
    height_fraction: float
    drift: tuple[float, float]

    @classmethod
    def draw(
        cls, rng: np.random.Generator, degrees: tuple[Range, Range, Range], hz: Range, size: Range
    ) -> _HandMotion:
        amplitudes = tuple(math.radians(_draw(rng, bounds)) for bounds in degrees)
        phases = tuple(float(value) for value in rng.uniform(0, 2 * math.pi, 3))
        drift = (float(rng.uniform(-0.05, 0.05)), float(rng.uniform(-0.05, 0.05)))
        return cls(
            (amplitudes[0], amplitudes[1], amplitudes[2]),
            (phases[0], phases[1], phases[2]),
            _draw(rng, hz),
            _draw(rng, size),
            drift,
        )

    def homography(
        self, time_s: float, plane_size: tuple[int, int], frame_size: tuple[int, int]
    ) -> npt.NDArray[np.float64]:
        """Plane pixels -> frame pixels at ``time_s``."""
        plane_width, plane_height = plane_size
        frame_width, frame_height = frame_size
        angles = [
            amplitude * math.sin(2 * math.pi * self.frequency_hz * time_s * (1 + 0.3 * k) + phase)
            for k, (amplitude, phase) in enumerate(zip(self.amplitudes, self.phases, strict=True))
        ]
        rotation = _rotation(angles[0], angles[1], angles[2])
        focal = 1.2 * frame_width
        distance = 1.0
        height_metres = self.height_fraction * frame_height / focal * distance
        width_metres = height_metres * plane_width / plane_height
        corners = np.array(
            [[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], dtype=np.float64
        ) * np.array([width_metres / 2, height_metres / 2, 0])
        shift = np.array([self.drift[0] * time_s, self.drift[1] * time_s, distance])
        world = corners @ rotation.T + shift
        projected = np.stack(
            [
                focal * world[:, 0] / world[:, 2] + frame_width / 2,
                focal * world[:, 1] / world[:, 2] + frame_height / 2,
            ],
            axis=1,
        ).astype(np.float32)
        source = np.array(
            [[0, 0], [plane_width, 0], [plane_width, plane_height], [0, plane_height]],
            dtype=np.float32,
        )
        return cv2.getPerspectiveTransform(source, projected).astype(np.float64)


def _background(
    rng: np.random.Generator, size: tuple[int, int], scenes: tuple[Image, ...] = ()
) -> npt.NDArray[np.float32]:
    """What the camera sees behind the print or screen. Without ``scenes``: a plain
    indoor-looking backdrop (a smooth colour gradient with faint blurred noise). With them: one
    scene photo, scaled to cover the frame (1-1.5x), cropped at random, dimmed (gain 0.5-1.0)
    and defocused (Gaussian sigma 1-3 px: the camera is focused on the sheet in front), so the
    room has the edges and corners a real one has. The plain backdrop's random draws are made
    either way and the scene's come from a child generator, so the rest of an attack (motion,
    print, screen, camera) is the same with or without scenes."""
    width, height = size
    top, bottom = rng.uniform(60, 200, 3), rng.uniform(40, 180, 3)
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    image = top[None, None, :] * (1 - ramp) + bottom[None, None, :] * ramp
    noise = cv2.GaussianBlur(rng.normal(0, 12, (height, width)).astype(np.float32), (0, 0), 9)
    plain = np.broadcast_to(image, (height, width, 3)).astype(np.float32) + noise[:, :, None]
    if not scenes:
        return plain
    scene_rng = rng.spawn(1)[0]
    scene = scenes[int(scene_rng.integers(len(scenes)))]
    cover = max(width / scene.shape[1], height / scene.shape[0]) * scene_rng.uniform(1.0, 1.5)
    scaled = cv2.resize(
        scene,
        (max(round(scene.shape[1] * cover), width), max(round(scene.shape[0] * cover), height)),
        interpolation=cv2.INTER_AREA if cover < 1 else cv2.INTER_LINEAR,
    )
    left = int(scene_rng.integers(scaled.shape[1] - width + 1))
    top_row = int(scene_rng.integers(scaled.shape[0] - height + 1))
    crop = scaled[top_row : top_row + height, left : left + width].astype(np.float32)
    crop *= scene_rng.uniform(0.5, 1.0)
    blurred: npt.NDArray[np.float32] = np.asarray(
        cv2.GaussianBlur(crop, (0, 0), scene_rng.uniform(1.0, 3.0)), np.float32
    )
    return blurred


def _camera(
    frame: npt.NDArray[np.float32], settings: tuple[float, float, int], rng: np.random.Generator
) -> Image:
    """Defocus, sensor noise and JPEG round trip of one frame (float BGR 0..255)."""
    blur, noise, quality = settings
    blurred = cv2.GaussianBlur(frame, (0, 0), blur) if blur > 0.05 else frame
    noisy = blurred + rng.normal(0, noise, blurred.shape).astype(np.float32)
    image = np.clip(noisy, 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        return image
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    return np.ascontiguousarray(decoded, dtype=np.uint8)


def _camera_settings(
    rng: np.random.Generator, camera: CameraParameters
) -> tuple[float, float, int]:
    return (
        _draw(rng, camera.blur_sigma_px),
        _draw(rng, camera.noise_sigma),
        round(_draw(rng, camera.jpeg_quality)),
    )


def _composite(
    background: npt.NDArray[np.float32],
    plane: npt.NDArray[np.float32],
    homography: npt.NDArray[np.float64],
) -> npt.NDArray[np.float32]:
    height, width = background.shape[:2]
    warped = cv2.warpPerspective(plane, homography, (width, height), flags=cv2.INTER_LINEAR)
    coverage = cv2.warpPerspective(
        np.ones(plane.shape[:2], np.float32), homography, (width, height), flags=cv2.INTER_LINEAR
    )[:, :, None]
    blended: npt.NDArray[np.float32] = background * (1 - coverage) + warped
    return blended


def print_attack(
    photo_bgr: Image,
    *,
    frame_count: int,
    fps: float,
    frame_size: tuple[int, int],
    rng: np.random.Generator,
    parameters: PrintParameters | None = None,
    camera: CameraParameters | None = None,
    source: str = "",
    scenes: tuple[Image, ...] = (),
) -> Clip:
    """A hand-held print of ``photo_bgr`` filmed for ``frame_count`` frames (frame_size: w, h),
    in front of one of ``scenes`` (BGR photos of rooms or places; a plain backdrop if none)."""
    p = parameters or PrintParameters()
    photo = photo_bgr.astype(np.float32)
    hsv = cv2.cvtColor(photo_bgr, cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[:, :, 1] *= _draw(rng, p.saturation)
    photo = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR).astype(
        np.float32
    )
    black, white = _draw(rng, p.black_level), _draw(rng, p.white_level)
    photo = black + photo * (white - black) / 255.0
    photo *= np.array([_draw(rng, p.tint_blue), _draw(rng, p.tint_green), 1.0], np.float32)
    photo = np.asarray(cv2.GaussianBlur(photo, (0, 0), _draw(rng, p.print_blur_px)), np.float32)
    height, width = photo.shape[:2]
    grain = rng.normal(0, _draw(rng, p.grain_sigma), (height, width)).astype(np.float32)
    fibres = np.asarray(
        cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 6),
        np.float32,
    )
    fibres *= _draw(rng, p.fibre_amplitude) / max(float(fibres.std()), 1e-6)
    photo = photo * (1 + fibres[:, :, None]) + grain[:, :, None]
    angle = rng.uniform(0, 2 * math.pi)
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
    along = (grid_x / width - 0.5) * math.cos(angle) + (grid_y / height - 0.5) * math.sin(angle)
    photo *= (1 + _draw(rng, p.lighting_gradient) * along)[:, :, None]
    sheen_centre = rng.uniform(0.2, 0.8, 2)
    sheen = np.exp(
        -((grid_x / width - sheen_centre[0]) ** 2 + (grid_y / height - sheen_centre[1]) ** 2) / 0.08
    )
    photo += (_draw(rng, p.sheen) * sheen)[:, :, None]
    margin = max(round(0.04 * max(height, width)), 2)
    paper = (white * 0.97, white * 0.99, white)
    clipped = np.clip(photo, 0, 255).astype(np.float32)
    bordered = cv2.copyMakeBorder(
        clipped, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=paper
    )
    motion = _HandMotion.draw(
        rng, (p.yaw_degrees, p.pitch_degrees, p.roll_degrees), p.motion_hz,
        p.sheet_height_fraction,
    )  # fmt: skip
    background = _background(rng, frame_size, scenes)
    settings = _camera_settings(rng, camera or CameraParameters())
    sheet: npt.NDArray[np.float32] = np.asarray(bordered, np.float32)
    plane_size = (sheet.shape[1], sheet.shape[0])
    frames = tuple(
        _camera(_composite(background, sheet, motion.homography(i / fps, plane_size, frame_size)),
                settings, rng)
        for i in range(frame_count)
    )  # fmt: skip
    return Clip(frames, fps, "print", source)


def _subpixel_mask(screen_size: tuple[int, int], pitch: int, lit: float) -> npt.NDArray[np.float32]:
    """Per-channel gains of an RGB-stripe panel rendered ``pitch`` texture px per screen px."""
    width, height = screen_size[0] * pitch, screen_size[1] * pitch
    columns = np.arange(width) % pitch
    stripe = (columns * 3) // pitch  # 0, 1, 2: which sub-pixel a texture column belongs to
    mask = np.zeros((height, width, 3), np.float32)
    for channel, colour in enumerate((2, 1, 0)):  # BGR order: R stripe first on the panel
        mask[:, :, colour] = (stripe == channel).astype(np.float32)[None, :]
    rows = np.arange(height) % pitch
    mask *= (rows < max(round(pitch * lit), 1)).astype(np.float32)[:, None, None]
    return mask * 3.0  # keep mean brightness: one of three stripes lit per channel


def replay_attack(
    source_frames: tuple[Image, ...],
    *,
    frame_count: int,
    fps: float,
    frame_size: tuple[int, int],
    rng: np.random.Generator,
    parameters: ReplayParameters | None = None,
    camera: CameraParameters | None = None,
    source: str = "",
    scenes: tuple[Image, ...] = (),
) -> Clip:
    """``source_frames`` (a clip, or one still repeated) replayed on a filmed screen, in front
    of one of ``scenes`` (a plain backdrop if none)."""
    p = parameters or ReplayParameters()
    first = source_frames[0]
    screen_height = int(rng.integers(150, 240))
    screen_width = round(screen_height * first.shape[1] / first.shape[0])
    pitch = round(_draw(rng, p.subpixel_px))
    mask = _subpixel_mask((screen_width, screen_height), pitch, _draw(rng, p.black_matrix))
    gamma = _draw(rng, p.gamma_ratio)
    colour = np.array([_draw(rng, p.blue_gain), 1.0, _draw(rng, p.red_gain)], np.float32)
    gain = _draw(rng, p.gain)
    flicker_amplitude, flicker_hz = _draw(rng, p.flicker_amplitude), _draw(rng, p.flicker_hz)
    band_amplitude, band_period = _draw(rng, p.band_amplitude), _draw(rng, p.band_period)
    bezel_fraction = _draw(rng, p.bezel_fraction)
    texture_height, texture_width = mask.shape[:2]
    rows = np.arange(texture_height, dtype=np.float32) / texture_height
    grid_y, grid_x = np.mgrid[0:texture_height, 0:texture_width].astype(np.float32)
    glare_centre = rng.uniform(0.1, 0.9, 2)
    reflection = _draw(rng, p.reflection) * np.exp(
        -((grid_x / texture_width - glare_centre[0]) ** 2) / 0.05
        - ((grid_y / texture_height - glare_centre[1]) ** 2) / 0.3
    )
    motion = _HandMotion.draw(
        rng, (p.yaw_degrees, p.pitch_degrees, p.roll_degrees), p.motion_hz,
        p.screen_height_fraction,
    )  # fmt: skip
    background = _background(rng, frame_size, scenes)
    settings = _camera_settings(rng, camera or CameraParameters())
    bezel_colour = float(rng.uniform(5, 40))
    # the panel as big as the camera sees it (at most its texture size): about the fraction of
    # the frame height the screen covers
    display_height = min(round(motion.height_fraction * frame_size[1]), texture_height)
    display = (max(round(display_height * texture_width / texture_height), 1), display_height)
    bezel = max(round(bezel_fraction * display[0]), 2)
    frames = []
    for index in range(frame_count):
        content = source_frames[min(index, len(source_frames) - 1)]
        small = cv2.resize(content, (screen_width, screen_height), interpolation=cv2.INTER_AREA)
        shown = 255.0 * (small.astype(np.float32) / 255.0) ** gamma * colour * gain
        time_s = index / fps
        beat = 1 + flicker_amplitude * math.sin(2 * math.pi * flicker_hz * time_s)
        bands = 1 + band_amplitude * np.sin(2 * math.pi * (rows / band_period + 3.1 * time_s))
        panel = cv2.resize(
            np.clip(shown, 0, 255), (texture_width, texture_height),
            interpolation=cv2.INTER_NEAREST,
        )  # fmt: skip
        panel = panel * mask * beat * bands[:, None, None] + reflection[:, :, None]
        # the camera integrates light over each of its pixels (lens blur, pixel area): the
        # sub-pixel stripes average out into a residual moire, and only then can light clip
        integrated = cv2.resize(panel, display, interpolation=cv2.INTER_AREA)
        device = cv2.copyMakeBorder(
            np.clip(integrated, 0, 255).astype(np.float32), bezel, bezel, bezel, bezel,
            cv2.BORDER_CONSTANT, value=(bezel_colour,) * 3,
        )  # fmt: skip
        plane_size = (device.shape[1], device.shape[0])
        homography = motion.homography(time_s, plane_size, frame_size)
        frames.append(_camera(_composite(background, device, homography), settings, rng))
    return Clip(tuple(frames), fps, "replay", source)


def bona_fide_clip(
    frames: tuple[Image, ...],
    *,
    fps: float,
    rng: np.random.Generator,
    camera: CameraParameters | None = None,
    source: str = "",
) -> Clip:
    """Real video frames through the same camera model as the attacks."""
    settings = _camera_settings(rng, camera or CameraParameters())
    processed = tuple(_camera(frame.astype(np.float32), settings, rng) for frame in frames)
    return Clip(processed, fps, "bona_fide", source)
