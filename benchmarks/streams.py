"""Four 720p cameras at 15 fps through live recognition: processed rate, drops, latency.

Each camera reads the same 720p 15 fps clip (the shared hamilton clip scaled up) in real time
and in a loop, through the capture threads and drop-oldest queues, into one recognition worker.
The baseline is the face_recognition loop's frame rate on the same frames (one stream, every
frame), measured in the same run. Prints one JSON object as the last line.

    python benchmarks/streams.py [--cameras 4] [--seconds 30]
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
from benchmarks.pipeline import ENROL, VIDEO, _baseline_fps
from pipeline.capture import CameraConfig, CameraSet
from pipeline.config.service import FaceStreamConfig
from pipeline.images import read_image
from pipeline.metrics import PipelineMetrics
from pipeline.recognition.live import LiveRecognition
from pipeline.recognition.offline import RecognitionConfig
from pipeline.service.app import open_services

FPS = 15.0


def _write_clip(target: Path) -> None:
    capture = cv2.VideoCapture(str(VIDEO))
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter.fourcc(*"mp4v"), FPS, (1280, 720))
    index = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index % 2 == 0:  # 30 fps source -> 15 fps clip
            writer.write(cv2.resize(frame, (1280, 720), interpolation=cv2.INTER_LINEAR))
        index += 1
    capture.release()
    writer.release()


def _sample(metrics: PipelineMetrics, name: str, camera: str) -> float:
    return metrics.registry.get_sample_value(name, {"camera": camera}) or 0.0


def capture_to_decision_buckets(metrics: PipelineMetrics, cameras: list[str]) -> dict[float, float]:
    """Cumulative capture-to-decision counts per bucket bound, summed over ``cameras``."""
    counts: dict[float, float] = {}
    for metric in metrics.capture_to_decision_seconds.collect():
        for sample in metric.samples:
            if sample.name.endswith("_bucket") and sample.labels["camera"] in cameras:
                bound = float(sample.labels["le"])
                counts[bound] = counts.get(bound, 0.0) + sample.value
    return counts


def _p95_seconds(
    metrics: PipelineMetrics, cameras: list[str], since: dict[float, float] | None = None
) -> float:
    """p95 of capture-to-decision over all cameras, interpolated within histogram buckets;
    with ``since`` (an earlier ``capture_to_decision_buckets``), of what came after it only."""
    now = capture_to_decision_buckets(metrics, cameras)
    earlier = since or {}
    edges = np.array(sorted(now))
    cumulative = np.array([now[bound] - earlier.get(bound, 0.0) for bound in edges])
    target = 0.95 * cumulative[-1]
    index = int(np.searchsorted(cumulative, target))
    low_edge = 0.0 if index == 0 else edges[index - 1]
    low_count = 0.0 if index == 0 else cumulative[index - 1]
    high_edge = edges[min(index, len(edges) - 2)] if np.isinf(edges[index]) else edges[index]
    share = (target - low_count) / max(cumulative[index] - low_count, 1.0)
    return float(low_edge + share * (high_edge - low_edge))


def main() -> None:
    """Run the cameras for the given time and print the JSON result line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--detect-every", type=int, default=1, help="detect on every n-th frame")
    args = parser.parse_args()
    if not SHARED_DATA.is_dir():
        raise SystemExit(f"needs the shared data at {SHARED_DATA}")
    with tempfile.TemporaryDirectory() as work:
        clip = Path(work) / "clip720p15.mp4"
        _write_clip(clip)
        config = FaceStreamConfig(data_dir=Path("data"))
        with open_services(config, redis_dir=Path(work) / "redis") as services:
            templates = services.enrolment_templates([("enrol", read_image(ENROL))]).templates
            services.enroll("lin_manuel_miranda", templates)
            metrics = services.metrics
            ids = [f"camera-{index}" for index in range(args.cameras)]
            cameras = CameraSet(metrics)
            for camera_id in ids:
                cameras.add(CameraConfig(id=camera_id, url=str(clip), loop=True, realtime=True))
            live = LiveRecognition(
                services.analyzer,
                services.gallery,
                cameras,
                config=RecognitionConfig(detect_every_frames=args.detect_every),
                metrics=metrics,
            )
            with cameras:
                for camera in cameras:
                    camera.start()
                live.start()
                time.sleep(2.0)  # warm-up: engines allocate, files open
                start = {c: _sample(metrics, "facestream_frames_captured_total", c) for c in ids}
                dropped0 = {c: _sample(metrics, "facestream_frames_dropped_total", c) for c in ids}
                done0 = {c: _sample(metrics, "facestream_frames_processed_total", c) for c in ids}
                began = time.monotonic()
                time.sleep(args.seconds)
                elapsed = time.monotonic() - began
                captured = {
                    c: _sample(metrics, "facestream_frames_captured_total", c) - start[c]
                    for c in ids
                }
                dropped = {
                    c: _sample(metrics, "facestream_frames_dropped_total", c) - dropped0[c]
                    for c in ids
                }
                processed = {
                    c: _sample(metrics, "facestream_frames_processed_total", c) - done0[c]
                    for c in ids
                }
                live.stop()
            p95_ms = _p95_seconds(metrics, ids) * 1000
            log(f"captured {captured}, dropped {dropped}, processed {processed}")
            baseline = _baseline_fps(clip, 10)
            log(f"face_recognition loop: {baseline:.2f} fps")
    total_captured = sum(captured.values())
    drop_percent = 100.0 * sum(dropped.values()) / max(total_captured, 1.0)
    # frames the worker took from each queue per second (captured minus evicted); every
    # n-th of them runs detection
    per_stream_fps = [(captured[c] - dropped[c]) / elapsed for c in ids]
    ours = min(per_stream_fps)
    print(
        json.dumps(
            {
                "name": "streams",
                "machine": machine_name(),
                "backend": services.engine.backend,
                "ours": round(ours, 2),
                "baseline": round(baseline, 2),
                "ratio": round(ours / baseline, 2),
                "unit": "frames/s taken per 720p stream (slowest stream)",
                "cameras": args.cameras,
                "detect_every_frames": args.detect_every,
                "source_fps": FPS,
                "seconds": round(elapsed, 1),
                "per_stream_fps": [round(value, 2) for value in per_stream_fps],
                "dropped_percent": round(drop_percent, 2),
                "detected_fps_per_stream": [round(processed[c] / elapsed, 2) for c in ids],
                "p95_capture_to_decision_ms": round(p95_ms, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
