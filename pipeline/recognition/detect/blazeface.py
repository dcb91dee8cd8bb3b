"""BlazeFace face detection through an engines ``Engine``, with dlib 5-point landmarks.

One frame goes through these steps (all in numpy/OpenCV; only the network runs in the engine;
letterbox, decode and weighted NMS are ``pipeline.recognition.detect.blazeface_decode``)::

    letterbox    RGB frame -> S x S, aspect kept, centred, black borders; x / 127.5 - 1, NCHW
    engine       regressors (1, A, 16), classificators (1, A, 1)
    decode       SSD anchors + regressors -> boxes and 6 keypoints; sigmoid(logit) -> score
    weighted NMS overlapping boxes (IoU > nms_iou) are merged, score-weighted, as MediaPipe does
    landmarks    dlib's 5-point predictor on each box, in the full-resolution frame

Landmarks: the 6 keypoints are not dlib's 5 points (eye corners and nose base), so dlib's 5-point
predictor (trained on HOG boxes) runs on each BlazeFace box and the faces keep the ``dlib5``
scheme that alignment and tracking use. BlazeFace boxes sit where HOG's do to within 2% of the
face size (centre) and are 4-9% larger (``benchmarks/detectors.py`` reports this placement).
Moving and shrinking them to HOG's placement before the predictor was tried and measured: it
changed nothing (median landmark distance from the landmarks found on HOG's own box 0.62% of
the inter-ocular distance moved, 0.58% unmoved; full range, 88 photos of ../shared/data/faces),
so the box is handed over as it is.

Still images (``detect_still``: enrolment, identify/verify uploads, calibration) get more
searches when this finds no face (``detect_still`` lists them in order): first the image with a
replicated border, so a tight crop or a pre-aligned chip has the surroundings BlazeFace was
trained with (``pipeline.recognition.detect.still``); then the frame contrast-normalised
(``normalise_contrast``: light median denoise, a gamma lift when dark, CLAHE on luminance) and
searched again whole and in overlapping square tiles (``still_tiles``; both views are in
``pipeline.recognition.detect.still`` too), each tile fed to the network at its own input size,
so a face a few percent of the frame wide reaches the network ~2-3x larger, as tiled (sliced)
small-object detection does. Detections of all views are mapped back to frame pixels and merged
by the same weighted NMS; the merged faces must beat ``still_fallback.score_threshold``, higher
than the per-frame threshold because ~7 windows are searched instead of one; last, dlib's HOG
detector on the padded image. Video frames (``detect``) never pay for this.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from engines.base import Engine
from engines.convert.blazeface import INPUT_NAME, SCORES_NAME, VALUES_NAME
from engines.errors import ModelFileError
from engines.models.detector import DetectorBackendName, DetectorEngineSettings
from engines.runtime.dlibrt import import_dlib
from engines.store import installed_dlib_model
from pipeline.config.base import StrictModel
from pipeline.recognition.detect.blazeface_decode import (
    ANCHOR_SPECS,
    Detections,
    Letterbox,
    decode_detections,
    letterbox,
    ssd_anchor_centres,
    weighted_nms,
)
from pipeline.recognition.detect.still import (
    View,
    chip_format,
    normalise_contrast,
    padded_view,
    shrunk_view,
    still_tiles,
)
from pipeline.recognition.track import box_iou
from pipeline.types import LANDMARK_COUNT, Faces, FoundBy, require_array

__all__ = ["BlazeFaceConfig", "BlazeFaceDetector", "StillFallbackConfig"]

_log = logging.getLogger(__name__)


class StillFallbackConfig(StrictModel):
    """The search a still image gets when one pass finds no face (never run on video frames).

    ``detect_still`` runs it for every still image: enrolment, identify/verify uploads,
    calibration and evaluation (``FaceAnalyzer.analyze``).
    """

    enabled: bool = Field(
        default=True,
        description="on a still image where no face is found, search again on a "
        "contrast-normalised copy (median denoise, gamma lift when dark, CLAHE on luminance), "
        "whole and in overlapping tiles, each seen at the network's input size: finds faces "
        "~30-50 px wide and faces in dark, noisy frames; costs ~1 network run per tile "
        "(7 on a 640x480 frame, ~100 ms on 2 CPU cores) only when the first pass found none",
    )
    tiles: int = Field(
        default=2,
        ge=1,
        le=6,
        description="tiles across the frame's shorter side (more along the longer one, square "
        "tiles); more tiles find smaller faces and cost one network run each",
    )
    tile_overlap: float = Field(
        default=0.25,
        ge=0.1,
        le=0.5,
        description="fraction of a tile shared with its neighbour, so a face on a seam is "
        "whole in some tile",
    )
    score_threshold: float = Field(
        default=0.7,
        gt=0.0,
        lt=1.0,
        description="minimum face probability of a face found by the fallback; above the "
        "per-frame threshold because ~7 windows of a normalised (noise-amplified) frame are "
        "searched, so false faces are likelier, while a real face seen larger scores high",
    )
    pad_fraction: float = Field(
        default=0.5,
        ge=0.1,
        le=1.0,
        description="width of the replicated border a tight crop gets on every side before "
        "the 'padded' search, as a fraction of its longer side (measured: 50 % finds every "
        "tight crop of the shared faces above 0.7; 100 % raises non-face scores above 0.7)",
    )
    upscale_below_px: int = Field(
        default=128,
        ge=0,
        le=1024,
        description="images whose shorter side is below this are enlarged to it (bicubic) "
        "before the border is added: the 'upscaled' search, instead of 'padded'; 0: never",
    )
    min_image_px: int = Field(
        default=24,
        ge=8,
        le=256,
        description="images whose shorter side is below this hold no usable face: the searches "
        "beyond the first pass are skipped (nothing is made of a 10x10 image or a 20 px strip)",
    )
    max_aspect: float = Field(
        default=4.0,
        ge=1.0,
        le=100.0,
        description="images longer than this many times their width (or the reverse) get no "
        "padded, chip or HOG search (a strip holds no face to pad around)",
    )
    chips: bool = Field(
        default=True,
        description="recognise pre-aligned chips by their size (dlib 150x150, ArcFace 112x112, "
        "OpenFace 96x96) and find landmarks where their face sits, once a padded search "
        "confirms a face there ('chip')",
    )
    chip_min_iou: float = Field(
        default=0.5,
        gt=0.0,
        lt=1.0,
        description="overlap (IoU) the confirming detection must have with the format's face "
        "box; the confirmation then needs only the per-frame score_threshold",
    )
    hog: bool = Field(
        default=True,
        description="last resort: dlib's HOG detector (upsampled once) on the padded image "
        "('hog'); ~100-250 ms, only when every other search found nothing",
    )
    hog_max_side_px: int = Field(
        default=800,
        ge=160,
        le=4096,
        description="the padded image is shrunk to this longer side before HOG (bounds its cost)",
    )


class BlazeFaceConfig(StrictModel):
    """How BlazeFace finds faces (one of the detector choices of the ``detect`` section)."""

    model: Literal["blazeface_full", "blazeface_back", "blazeface_short"] = Field(
        default="blazeface_full",
        description="BlazeFace model: full (192 px input, faces up to ~5 m), back (256 px, "
        "smallest faces), short (128 px, faces within ~2 m)",
    )
    score_threshold: float = Field(
        default=0.5,
        gt=0.0,
        lt=1.0,
        description="minimum face probability (MediaPipe's min_score_thresh is 0.5)",
    )
    nms_iou: float = Field(
        default=0.3,
        gt=0.0,
        lt=1.0,
        description="boxes overlapping more than this IoU are merged into one face "
        "(MediaPipe's min_suppression_threshold is 0.3)",
    )
    min_face_px: int = Field(
        default=20, ge=8, le=1024, description="faces narrower than this (frame pixels) are ignored"
    )
    backend: DetectorBackendName = Field(
        default="onnxruntime",
        description="runtime of the detector network: 'onnxruntime' (CPU, or CUDA with "
        "onnxruntime-gpu) or 'tensorrt' (needs device 'cuda' and facestream[tensorrt]; the plan "
        "is built into data_dir on first use); a backend that cannot load is an error, never "
        "replaced by another",
    )
    device: Literal["cpu", "cuda"] = Field(
        default="cpu", description="where the detector network runs; tensorrt needs 'cuda'"
    )
    precision: Literal["fp32", "fp16"] = Field(
        default="fp32",
        description="arithmetic of the network; fp16 needs backend 'tensorrt' "
        "(onnxruntime runs the converted model in fp32)",
    )
    threads: int = Field(
        default=2,
        ge=0,
        le=256,
        description="CPU threads for the network on onnxruntime (0: one per core)",
    )
    still_fallback: StillFallbackConfig = StillFallbackConfig()

    @model_validator(mode="after")
    def _backend_fits_device_and_precision(self) -> BlazeFaceConfig:
        if self.backend == "tensorrt" and self.device != "cuda":
            raise ValueError("backend 'tensorrt' runs on device 'cuda'; set device = 'cuda'")
        if self.backend != "tensorrt" and self.precision != "fp32":
            raise ValueError(
                f"precision {self.precision!r} needs backend 'tensorrt'; "
                f"{self.backend} runs the detector in fp32"
            )
        return self

    def engine_settings(self) -> DetectorEngineSettings:
        """The engines-layer settings of the detector network this section describes."""
        return DetectorEngineSettings(
            backend=self.backend,
            device=self.device,
            precision=self.precision,
            threads=self.threads,
        )


class BlazeFaceDetector:
    """BlazeFace (run by an ``Engine``) plus dlib's 5-point landmarks: ``Faces`` in frame pixels.

    The engine must hold a converted BlazeFace model whose variant is ``config.model``
    (``engines.models.detector.load_detector_engine``); its shapes are checked against the anchors.
    """

    def __init__(
        self,
        config: BlazeFaceConfig,
        engine: Engine,
        *,
        predictor_path: Path | None = None,
    ) -> None:
        spec = ANCHOR_SPECS[config.model]
        expected = {
            INPUT_NAME: (None, 3, spec.input_size_px, spec.input_size_px),
            VALUES_NAME: (None, spec.anchor_count, 16),
            SCORES_NAME: (None, spec.anchor_count, 1),
        }
        found = {name: item.shape for name, item in {**engine.inputs, **engine.outputs}.items()}
        if found != expected:
            raise ModelFileError(
                f"detector model {engine.model_id} has tensors {found}; {config.model} "
                f"needs {expected}"
            )
        dlib = import_dlib("BlazeFace landmarks need dlib's 5-point predictor")
        path = predictor_path or installed_dlib_model("shape_predictor_5_face_landmarks.dat")
        self.config = config
        self.engine = engine
        self._spec = spec
        self._anchors = ssd_anchor_centres(spec)
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(path))
        self._hog = dlib.get_frontal_face_detector()  # built in, no file: the still last resort

    def _run(self, tensor: npt.NDArray[np.float32], score_threshold: float) -> list[Detections]:
        """The network on a batch (N, 3, S, S): each image's merged detections, best first,
        in letterbox units."""
        outputs = self.engine.infer({INPUT_NAME: tensor})
        return [
            weighted_nms(
                decode_detections(
                    outputs[VALUES_NAME][row],
                    outputs[SCORES_NAME][row, :, 0],
                    self._anchors,
                    input_size_px=self._spec.input_size_px,
                    score_threshold=score_threshold,
                ),
                iou_threshold=self.config.nms_iou,
            )
            for row in range(tensor.shape[0])
        ]

    def detect_keypoints(self, image_rgb: npt.NDArray[np.uint8]) -> tuple[Detections, Letterbox]:
        """BlazeFace alone on ``image_rgb`` (RGB uint8 HxWx3): merged detections, best first,
        in letterbox units, and the letterbox that maps them to frame pixels."""
        require_array("image", image_rgb, dtype=np.uint8, shape=(None, None, 3))
        tensor, fit = letterbox(image_rgb, self._spec.input_size_px)
        (detections,) = self._run(tensor, self.config.score_threshold)
        return detections, fit

    def _faces(
        self,
        image_rgb: npt.NDArray[np.uint8],
        boxes: npt.NDArray[np.float32],
        scores: npt.NDArray[np.float32],
    ) -> Faces:
        """Faces from boxes in frame pixels: too narrow ones dropped, dlib5 landmarks found in
        ``image_rgb``, largest first."""
        wide = (boxes[:, 2] - boxes[:, 0]) >= self.config.min_face_px
        boxes, scores = boxes[wide], scores[wide]
        if not len(boxes):
            return Faces.empty()
        landmarks = np.zeros((len(boxes), LANDMARK_COUNT, 2), np.float32)
        for row, box in enumerate(boxes):
            rectangle = self._dlib.rectangle(*(round(float(value)) for value in box))
            shape = self._predictor(image_rgb, rectangle)
            landmarks[row] = [(shape.part(i).x, shape.part(i).y) for i in range(LANDMARK_COUNT)]
        faces = Faces(
            boxes=boxes.astype(np.float32), scores=scores.astype(np.float32), landmarks=landmarks
        )
        return faces.select(np.argsort(-faces.widths_px, kind="stable"))

    def detect(self, image_rgb: npt.NDArray[np.uint8]) -> Faces:
        """Every face in ``image_rgb`` (RGB uint8 HxWx3), largest first; boxes xyxy and dlib5
        landmarks in frame pixels, scores BlazeFace probabilities. One network run: the
        per-frame (video) path."""
        detections, fit = self.detect_keypoints(image_rgb)
        boxes = fit.to_frame(detections.boxes.reshape(-1, 2, 2)).reshape(-1, 4)
        return self._faces(image_rgb, boxes, detections.scores)

    def detect_still(self, image_rgb: npt.NDArray[np.uint8]) -> Faces:
        """``detect``, and where it finds no face and ``config.still_fallback`` is enabled, the
        still-image searches in this order, each only while the ones before found nothing:

        - ``chip``/``padded``/``upscaled``: one network run on the image with a replicated
          border (enlarged first when small, ``pipeline.recognition.detect.still``); a chip-sized
          image whose
          detection (per-frame threshold) overlaps the format's face box is a ``chip`` with
          landmarks found on that box, else a detection above the fallback's threshold is
          ``padded`` (``upscaled`` when enlarged);
        - ``tiled``: the contrast-normalised frame, whole and in overlapping tiles, in one
          batch of network runs, merged by weighted NMS, above the fallback's threshold;
          landmarks from the normalised frame;
        - ``hog``: dlib's HOG detector, upsampled once, on the padded image.

        Images under ``min_image_px`` get only the first pass, strips beyond ``max_aspect``
        no padded, chip or HOG search. Boxes and landmarks are in pixels of ``image_rgb``;
        ``Faces.found_by`` names the search that found them."""
        faces = self.detect(image_rgb)
        fallback = self.config.still_fallback
        if len(faces) or not fallback.enabled:
            return faces
        height, width = image_rgb.shape[:2]
        if min(height, width) < fallback.min_image_px:
            return faces
        padded: View | None = None
        if max(height, width) <= fallback.max_aspect * min(height, width):
            padded = padded_view(
                image_rgb,
                pad_fraction=fallback.pad_fraction,
                upscale_to_px=fallback.upscale_below_px,
            )
            faces = self._padded(image_rgb, padded)
        if not len(faces):
            faces = self._tiled(image_rgb)
        if not len(faces) and padded is not None and fallback.hog:
            faces = self._hog_faces(shrunk_view(padded, max_side_px=fallback.hog_max_side_px))
        _log.debug("still image: %d faces (%s)", len(faces), faces.found_by)
        return faces

    def _padded(self, image_rgb: npt.NDArray[np.uint8], view: View) -> Faces:
        """The chip, padded or upscaled search: one network run on ``view``."""
        fallback = self.config.still_fallback
        tensor, fit = letterbox(view.image, self._spec.input_size_px)
        (detections,) = self._run(tensor, self.config.score_threshold)
        boxes = fit.to_frame(detections.boxes.reshape(-1, 2, 2)).reshape(-1, 4)
        chip = chip_format(image_rgb) if fallback.chips else None
        if chip is not None and len(boxes):
            expected = chip.box_px()
            overlaps = box_iou(
                expected[None], view.to_image(boxes.reshape(-1, 2, 2)).reshape(-1, 4)
            )[0]
            best = int(np.argmax(overlaps))
            if overlaps[best] >= fallback.chip_min_iou:
                # landmarks where the format puts the face, found in the view: its border gives
                # the predictor pixels where an OpenFace crop cuts the face off
                in_view = expected * np.float32(view.scale) + np.float32(view.offset_px)
                score = detections.scores[best : best + 1]
                return self._view_faces(view, in_view[None, :], score, "chip")
        confident = detections.scores >= fallback.score_threshold
        found_by: FoundBy = "upscaled" if view.scale > 1.0 else "padded"
        return self._view_faces(view, boxes[confident], detections.scores[confident], found_by)

    def _view_faces(
        self,
        view: View,
        boxes: npt.NDArray[np.float32],
        scores: npt.NDArray[np.float32],
        found_by: FoundBy,
    ) -> Faces:
        """Faces from boxes in ``view`` pixels: landmarks found in the view, both mapped to the
        searched image, too narrow ones (there) dropped, largest first."""
        if not len(boxes):
            return Faces.empty()
        faces = self._faces(view.image, boxes, scores)
        mapped = Faces(
            boxes=view.to_image(faces.boxes.reshape(-1, 2, 2)).reshape(-1, 4),
            scores=faces.scores.copy(),
            landmarks=view.to_image(faces.landmarks),
            found_by=found_by,
        )
        return mapped.select(mapped.widths_px >= self.config.min_face_px)

    def _hog_faces(self, view: View) -> Faces:
        """dlib's HOG (upsampled once, its own threshold) on ``view``; scores are HOG's
        detection scores (> 0), not probabilities."""
        rectangles, scores, _ = self._hog.run(view.image, 1, 0.0)
        if not len(rectangles):
            return Faces.empty()
        boxes = np.asarray(
            [[box.left(), box.top(), box.right(), box.bottom()] for box in rectangles], np.float32
        )
        return self._view_faces(view, boxes, np.asarray(scores, np.float32), "hog")

    def _tiled(self, image_rgb: npt.NDArray[np.uint8]) -> Faces:
        """The contrast-normalised frame, whole and in overlapping tiles (``tiled``)."""
        fallback = self.config.still_fallback
        height, width = image_rgb.shape[:2]
        enhanced = normalise_contrast(image_rgb)
        views = [(0, 0, width, height)]
        views += [
            view
            for view in still_tiles(
                height, width, across=fallback.tiles, overlap=fallback.tile_overlap
            )
            if view != views[0]
        ]
        tensors, fits = [], []
        for left, top, right, bottom in views:
            tensor, fit = letterbox(
                np.ascontiguousarray(enhanced[top:bottom, left:right]), self._spec.input_size_px
            )
            tensors.append(tensor)
            fits.append(fit)
        found = self._run(np.concatenate(tensors), fallback.score_threshold)
        boxes, keypoints, scores = [], [], []
        for (left, top, _, _), fit, detections in zip(views, fits, found, strict=True):
            offset = np.array([left, top], np.float32)
            boxes.append(fit.to_frame(detections.boxes.reshape(-1, 2, 2)) + offset)
            keypoints.append(fit.to_frame(detections.keypoints) + offset)
            scores.append(detections.scores)
        merged = weighted_nms(
            Detections(
                np.concatenate(boxes).reshape(-1, 4),
                np.concatenate(keypoints),
                np.concatenate(scores),
            ),
            iou_threshold=self.config.nms_iou,
        )
        _log.debug("still-image tiles: %d views, %d faces", len(views), len(merged.scores))
        return replace(self._faces(enhanced, merged.boxes, merged.scores), found_by="tiled")

    def close(self) -> None:
        """Release the engine; later ``detect`` calls raise EngineStateError."""
        self.engine.close()
