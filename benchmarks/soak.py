"""Soak: the whole service with N looping real-time cameras for a long run (not in CI).

Runs ``run_service`` with ``--cameras`` cameras reading a face clip in a loop at its own frame
rate, the face enrolled and a door on every camera, and samples once a minute: resident memory
(RSS), frame rate per camera, capture-queue depth and frames dropped. After a warm-up (models
loaded, allocator settled) it reports RSS growth, fps stability (min/max of the per-minute
rates) and whether any queue grew.

    python benchmarks/soak.py --cameras 4 --minutes 30     # last stdout line: the JSON result
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import log, machine_name
from pipeline.access.policy import DoorConfig
from pipeline.capture import CameraConfig
from pipeline.config.service import FaceStreamConfig
from pipeline.images import decode_image
from pipeline.recognition.offline import RecognitionConfig
from pipeline.service.sample import make_sample
from pipeline.service.service import run_service

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class Sample:
    """One sampling period: minutes since start, RSS, per-camera fps, totals."""

    minute: float
    rss_mb: float
    fps: list[float]
    queued: float
    captured: float
    dropped: float


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * _PAGE_BYTES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warmup-minutes", type=float, default=2.0)
    parser.add_argument("--detect-every", type=int, default=2)
    parser.add_argument("--sample-seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        sample = make_sample(root / "sample", seconds=6.0)
        ids = [f"cam{index}" for index in range(args.cameras)]
        config = FaceStreamConfig(
            data_dir=root / "data",
            recognition=RecognitionConfig(detect_every_frames=args.detect_every),
            doors=[DoorConfig(id="door", cameras=ids, cooldown_seconds=5.0)],
        )
        with run_service(config) as service:
            photo = next((sample.gallery / "eileen_collins").iterdir())
            templates = service.services.enrolment_templates(
                [(photo.name, decode_image(photo.read_bytes()))]
            ).templates
            service.services.enroll("eileen_collins", templates)
            for camera_id in ids:
                service.add_camera(
                    CameraConfig(id=camera_id, url=str(sample.video), loop=True, realtime=True)
                )
            registry = service.services.metrics.registry

            def total(name: str) -> dict[str, float]:
                return {c: registry.get_sample_value(name, {"camera": c}) or 0.0 for c in ids}

            samples: list[Sample] = []
            started = time.monotonic()
            previous = total("facestream_frames_processed_total")
            previous_at = started
            while time.monotonic() - started < (args.warmup_minutes + args.minutes) * 60:
                time.sleep(args.sample_seconds)
                now = time.monotonic()
                processed = total("facestream_frames_processed_total")
                row = Sample(
                    minute=(now - started) / 60,
                    rss_mb=_rss_bytes() / 2**20,
                    fps=[(processed[c] - previous[c]) / (now - previous_at) for c in ids],
                    queued=sum(total("facestream_queue_frames").values()),
                    captured=sum(total("facestream_frames_captured_total").values()),
                    dropped=sum(total("facestream_frames_dropped_total").values()),
                )
                previous, previous_at = processed, now
                samples.append(row)
                log(json.dumps(asdict(row)))
    measured = [row for row in samples if row.minute > args.warmup_minutes]
    if len(measured) < 2:
        raise SystemExit("run longer than the warm-up plus two sample periods")
    first, last = measured[0], measured[-1]
    fps_all = [value for row in measured for value in row.fps]
    captured = last.captured - first.captured
    print(
        json.dumps(
            {
                "benchmark": "soak",
                "machine": machine_name(),
                "cameras": args.cameras,
                "detect_every_frames": args.detect_every,
                "minutes_measured": round(last.minute - first.minute, 1),
                "rss_start_mb": round(first.rss_mb, 1),
                "rss_end_mb": round(last.rss_mb, 1),
                "rss_growth_percent": round(100 * (last.rss_mb - first.rss_mb) / first.rss_mb, 2),
                "fps_per_camera_median": round(statistics.median(fps_all), 2),
                "fps_per_camera_min": round(min(fps_all), 2),
                "fps_per_camera_max": round(max(fps_all), 2),
                "queued_frames_max": max(row.queued for row in measured),
                "dropped_percent": round(100 * (last.dropped - first.dropped) / captured, 2)
                if captured
                else None,
            }
        )
    )


if __name__ == "__main__":
    main()
