"""Frames per second on a 720p face video: our pipeline vs the classic face_recognition loop.

The baseline is the real face_recognition package: face_locations + face_encodings on every
frame. Ours is ``facestream process``'s RecordingProcessor (detect -> track -> align -> encode
when due -> gallery) with a one-person gallery, at detect_every_frames 1 and 3. Both read the
same 720p file (the shared crowd/hamilton clips scaled to 1280x720) in the same process.
Prints progress on stderr and one JSON object as the last line; ratio = ours fps / baseline fps.

    python benchmarks/pipeline.py [--frames 60] [--baseline-frames 15]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED_DATA, log, machine_name
from engines.convert.parity import read_rgb
from pipeline.config.service import FaceStreamConfig
from pipeline.recognition.offline import RecognitionConfig, RecordingProcessor
from pipeline.service.app import open_services

VIDEO = SHARED_DATA / "video" / "faces" / "short_hamilton_clip.mp4"
ENROL = SHARED_DATA / "faces" / "face_recognition" / "examples" / "lin-manuel-miranda.png"


def _write_720p(source: Path, target: Path, frames: int) -> int:
    capture = cv2.VideoCapture(str(source))
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter.fourcc(*"mp4v"), 30.0, (1280, 720))
    written = 0
    while written < frames:
        ok, frame = capture.read()
        if not ok:
            break
        writer.write(cv2.resize(frame, (1280, 720), interpolation=cv2.INTER_LINEAR))
        written += 1
    capture.release()
    writer.release()
    return written


def _baseline_fps(video: Path, frames: int) -> float:
    import face_recognition  # noqa: PLC0415  (benchmark-only baseline)

    capture = cv2.VideoCapture(str(video))
    started = time.perf_counter()
    done = 0
    while done < frames:
        ok, frame = capture.read()
        if not ok:
            break
        rgb = np.ascontiguousarray(frame[:, :, ::-1])
        face_recognition.face_encodings(rgb, face_recognition.face_locations(rgb))
        done += 1
    capture.release()
    return done / (time.perf_counter() - started)


def main() -> None:
    """Run both loops and print the JSON result line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60, help="frames of the 720p clip")
    parser.add_argument("--baseline-frames", type=int, default=15, help="frames for the baseline")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        video = Path(work) / "clip720.mp4"
        frames = _write_720p(VIDEO, video, args.frames)
        config = FaceStreamConfig(data_dir=Path("data"))
        with open_services(config, redis_dir=Path(work) / "redis") as services:
            templates = services.enrolment_templates([("enrol", read_rgb(ENROL))]).templates
            services.enroll("lin_manuel_miranda", templates)
            results = {}
            for every in (1, 3):
                processor = RecordingProcessor(
                    services.analyzer,
                    services.gallery,
                    RecognitionConfig(detect_every_frames=every),
                )
                summary = processor.run(video)
                p95 = float(np.percentile(summary.frame_seconds, 95)) * 1000
                results[every] = (summary.fps, p95, [t.identity for t in summary.tracks])
                log(f"ours detect_every={every}: {summary.fps:.2f} fps, p95 {p95:.1f} ms/frame")
            baseline = _baseline_fps(video, args.baseline_frames)
            log(f"face_recognition loop: {baseline:.2f} fps")
    ours_fps, p95_ms, identities = results[1]
    print(
        json.dumps(
            {
                "name": "pipeline",
                "machine": machine_name(),
                "backend": services.engine.backend,
                "ours": round(ours_fps, 2),
                "baseline": round(baseline, 2),
                "ratio": round(ours_fps / baseline, 2),
                "unit": "frames/s (720p)",
                "fps": round(ours_fps, 2),
                "baseline_fps": round(baseline, 2),
                "p95_latency_ms": round(p95_ms, 1),
                "fps_detect_every_3": round(results[3][0], 2),
                "ratio_detect_every_3": round(results[3][0] / baseline, 2),
                "p95_latency_ms_detect_every_3": round(results[3][1], 1),
                "tracks_identities": identities,
                "frames": frames,
                "baseline_frames": args.baseline_frames,
            }
        )
    )


if __name__ == "__main__":
    main()
