"""Face detectors side by side: dlib HOG (baseline) vs BlazeFace through ONNX Runtime.

Every detector produces the same ``Faces`` (boxes + dlib 5-point landmarks) on the same inputs
in one process; timings are interleaved round by round. Inputs, from ../shared/data:

- single: the ``n_faces == 1`` rows of faces/labels.csv; "found" = at least one face.
- multi: dlib_faces group photos against the boxes of dlib's training.xml/testing.xml; a box
  is found when a detection's centre lies in it and its centre lies in the detection.
- dogs: faces reported on dlib_faces/dogs.jpg (false positives).
- landmarks: on single photos where HOG (upsample 1) and the detector each find one face,
  the median distance of the 5 landmarks from HOG's, in inter-ocular distances; and where
  HOG's box lies relative to the detector's (median centre shift per box size, size ratio).
- ms per frame: frames of video/faces (1080p crowd shrunk to 1280x720; the 640x360 clip).

Progress and a markdown table go to stderr; the last stdout line is the JSON result, with
``ours`` BlazeFace full range and ``baseline`` HOG upsample 1, both ms per 720p frame.

    python benchmarks/detectors.py [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import cv2
import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED_DATA, log, machine_name
from engines.models.detector import load_detector_engine
from engines.runtime.onnxrt import OrtSettings
from engines.store import ModelStore
from pipeline.images import read_image
from pipeline.recognition.detect.blazeface import BlazeFaceConfig, BlazeFaceDetector
from pipeline.recognition.detect.factory import DlibHogConfig, DlibHogDetector
from pipeline.types import Faces

Image = npt.NDArray[np.uint8]
Detect = Callable[[Image], Faces]
VARIANTS = ("blazeface_full", "blazeface_back", "blazeface_short")


@dataclass(frozen=True, slots=True)
class Inputs:
    """Images and truth boxes (xyxy pixels) read once and shared by every detector."""

    single: list[Image]
    multi: list[tuple[Image, npt.NDArray[np.float32]]]
    dogs: Image
    frames_720p: list[Image]
    frames_360p: list[Image]


def _truth_boxes(folder: Path) -> dict[str, npt.NDArray[np.float32]]:
    boxes: dict[str, list[list[float]]] = {}
    for name in ("training.xml", "testing.xml"):
        for image in ElementTree.parse(folder / name).getroot().iter("image"):
            for box in image.iter("box"):
                left, top = float(box.get("left", 0)), float(box.get("top", 0))
                width, height = float(box.get("width", 0)), float(box.get("height", 0))
                rows = boxes.setdefault(Path(image.get("file", "")).name, [])
                rows.append([left, top, left + width, top + height])
    return {name: np.asarray(rows, np.float32) for name, rows in boxes.items()}


def _frames(path: Path, count: int, size: tuple[int, int]) -> list[Image]:
    capture = cv2.VideoCapture(str(path))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    for index in np.linspace(0, total - 1, count + 2)[1:-1].astype(int):
        capture.set(cv2.CAP_PROP_POS_FRAMES, int(index))
        ok, frame = capture.read()
        if ok:
            resized = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            frames.append(np.ascontiguousarray(cv2.cvtColor(resized, cv2.COLOR_BGR2RGB), np.uint8))
    capture.release()
    return frames


def read_inputs(data: Path) -> Inputs:
    """Everything the benchmark measures on, from ``data`` (../shared/data)."""
    faces = data / "faces"
    rows = list(csv.DictReader((faces / "labels.csv").open(encoding="utf-8")))
    truth = _truth_boxes(faces / "dlib_faces")
    return Inputs(
        single=[read_image(faces / row["path"]) for row in rows if row["n_faces"] == "1"],
        multi=[
            (read_image(faces / "dlib_faces" / name), boxes)
            for name, boxes in sorted(truth.items())
        ],
        dogs=read_image(faces / "dlib_faces" / "dogs.jpg"),
        frames_720p=_frames(data / "video/faces/facenet_pytorch_crowd_walk.mp4", 3, (1280, 720)),
        frames_360p=_frames(data / "video/faces/short_hamilton_clip.mp4", 3, (640, 360)),
    )


def _centre_inside(
    points: npt.NDArray[np.float32], boxes: npt.NDArray[np.float32]
) -> npt.NDArray[np.bool_]:
    """(N, M): point n (N, 2) lies inside box m (M, 4) xyxy."""
    return (
        (points[:, None, 0] >= boxes[None, :, 0])
        & (points[:, None, 0] <= boxes[None, :, 2])
        & (points[:, None, 1] >= boxes[None, :, 1])
        & (points[:, None, 1] <= boxes[None, :, 3])
    )


def matched_truth(found: npt.NDArray[np.float32], truth: npt.NDArray[np.float32]) -> int:
    """Truth boxes (M, 4) matched one to one by found boxes (N, 4): centres inside each other."""
    if not len(found):
        return 0
    found_centres = ((found[:, :2] + found[:, 2:]) / 2).astype(np.float32)
    truth_centres = ((truth[:, :2] + truth[:, 2:]) / 2).astype(np.float32)
    pairs = _centre_inside(found_centres, truth) & _centre_inside(truth_centres, found).T
    used: set[int] = set()
    for row in pairs:
        for column in np.flatnonzero(row):
            if int(column) not in used:
                used.add(int(column))
                break
    return len(used)


def landmark_error(faces: Faces, reference: Faces) -> float | None:
    """Mean landmark distance from ``reference`` in inter-ocular distances, one face each."""
    if len(faces) != 1 or len(reference) != 1:
        return None
    points, truth = faces.landmarks[0], reference.landmarks[0]
    eyes = np.linalg.norm(truth[0:2].mean(axis=0) - truth[2:4].mean(axis=0))
    return float(np.linalg.norm(points - truth, axis=1).mean() / max(float(eyes), 1.0))


def hog_box_placement(faces: list[Faces], reference: list[Faces]) -> list[float]:
    """Median (shift x, shift y, size ratio) of HOG's box against ``faces``' box, per box size,
    over images where each finds exactly one face."""
    rows = []
    for ours, theirs in zip(faces, reference, strict=True):
        if len(ours) == 1 and len(theirs) == 1:
            box, hog = ours.boxes[0], theirs.boxes[0]
            size = box[2:] - box[:2]
            shift = ((hog[:2] + hog[2:]) - (box[:2] + box[2:])) / 2 / size
            rows.append([float(shift[0]), float(shift[1]), float((hog[2] - hog[0]) / size[0])])
    return [round(float(value), 3) for value in np.median(np.asarray(rows), axis=0)]


def quality(detect: Detect, inputs: Inputs, reference: list[Faces]) -> dict[str, Any]:
    """Recall, false positives and landmark agreement of one detector."""
    single = [detect(image) for image in inputs.single]
    errors = [landmark_error(faces, ref) for faces, ref in zip(single, reference, strict=True)]
    measured = [error for error in errors if error is not None]
    multi = [detect(image) for image, _ in inputs.multi]
    return {
        "hog_box_shift_x_y_scale": hog_box_placement(single, reference),
        "single_found": sum(len(faces) > 0 for faces in single),
        "single_exactly_one": sum(len(faces) == 1 for faces in single),
        "single_total": len(single),
        "multi_found": sum(
            matched_truth(faces.boxes, truth)
            for faces, (_, truth) in zip(multi, inputs.multi, strict=True)
        ),
        "multi_total": sum(len(truth) for _, truth in inputs.multi),
        "multi_detections": sum(len(faces) for faces in multi),
        "dogs_false_positives": len(detect(inputs.dogs)),
        "landmark_error_iod": round(float(np.median(measured)), 4) if measured else -1.0,
        "landmark_compared": len(measured),
    }


def _ms_per_frame(detect: Detect, frames: list[Image]) -> float:
    start = time.perf_counter()
    for frame in frames:
        detect(frame)
    return (time.perf_counter() - start) / len(frames) * 1000


def timings(detectors: dict[str, Detect], inputs: Inputs, rounds: int) -> dict[str, list[float]]:
    """Median ms per 720p and 360p frame of each detector, interleaved round by round."""
    samples: dict[str, list[list[float]]] = {name: [[], []] for name in detectors}
    for detect in detectors.values():  # warm-up: first calls allocate
        detect(inputs.frames_360p[0])
    for round_index in range(rounds):
        for name, detect in detectors.items():
            samples[name][0].append(_ms_per_frame(detect, inputs.frames_720p))
            samples[name][1].append(_ms_per_frame(detect, inputs.frames_360p))
        log(f"timing round {round_index + 1}/{rounds} done")
    return {
        name: [round(float(np.median(values)), 2) for values in pair]
        for name, pair in samples.items()
    }


def markdown(results: dict[str, dict[str, Any]]) -> str:
    """The results as the table in docs/detectors.md."""
    lines = [
        "| detector | single found | multi found | multi detections | dogs FP "
        "| landmark error (IOD) | ms 720p | ms 360p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results.items():
        lines.append(
            f"| {name} | {row['single_found']}/{row['single_total']} "
            f"| {row['multi_found']}/{row['multi_total']} | {row['multi_detections']} "
            f"| {row['dogs_false_positives']} | {row['landmark_error_iod']} "
            f"| {row['ms_720p']} | {row['ms_360p']} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Run the comparison and print the JSON result line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime CPU threads")
    args = parser.parse_args()
    if not SHARED_DATA.is_dir():
        sys.exit(f"shared data not found at {SHARED_DATA}")
    inputs = read_inputs(SHARED_DATA)
    log(f"{len(inputs.single)} single-face photos, {len(inputs.multi)} group photos")
    hog_u1 = DlibHogDetector(DlibHogConfig(upsample=1, detect_width_px=7680, min_face_px=8))
    detectors: dict[str, Detect] = {
        "dlib_hog upsample 0": DlibHogDetector(
            DlibHogConfig(upsample=0, detect_width_px=7680, min_face_px=8)
        ).detect,
        "dlib_hog upsample 1": hog_u1.detect,
        "dlib_hog upsample 1, 960 px (default)": DlibHogDetector(DlibHogConfig()).detect,
    }
    with tempfile.TemporaryDirectory() as data_dir:
        store = ModelStore(Path(data_dir))
        blazeface: dict[str, BlazeFaceDetector] = {}
        for variant in VARIANTS:
            config = BlazeFaceConfig(model=variant, min_face_px=8)
            engine = load_detector_engine(
                store, variant, OrtSettings(intra_op_threads=args.threads)
            )
            blazeface[variant] = BlazeFaceDetector(config, engine)
            detectors[variant] = blazeface[variant].detect
        backend = blazeface["blazeface_full"].engine.backend
        reference = [hog_u1.detect(image) for image in inputs.single]
        results: dict[str, dict[str, Any]] = {}
        for name, detect in detectors.items():
            results[name] = quality(detect, inputs, reference)
            log(f"{name}: {results[name]}")
        for name, (ms_720p, ms_360p) in timings(detectors, inputs, args.rounds).items():
            results[name].update({"ms_720p": ms_720p, "ms_360p": ms_360p})
        for detector in blazeface.values():
            detector.close()
    log(markdown(results))
    ours = float(results["blazeface_full"]["ms_720p"])
    baseline = float(results["dlib_hog upsample 1"]["ms_720p"])
    print(
        json.dumps(
            {
                "name": "face_detectors_720p",
                "machine": machine_name(),
                "backend": backend,
                "threads": args.threads,
                "ours": ours,
                "baseline": baseline,
                "ratio": round(baseline / ours, 2),
                "unit": "ms/frame",
                "detectors": results,
            }
        )
    )


if __name__ == "__main__":
    main()
