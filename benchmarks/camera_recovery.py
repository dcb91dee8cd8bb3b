"""How fast a camera is back after its RTSP source returns: the running service (reconnect
with backoff, stall watchdog) against a bare OpenCV open of the same stream, side by side.

The real RTSP server (tests/rtsp_server.py on 127.0.0.1, x264) is killed at random moments and
started again after a random pause; "ours" is the time from the server's restart to the
service's ``facestream_camera_up`` being 1 again, "baseline" the time a fresh
``cv2.VideoCapture`` takes to open the restarted stream and return its first frame (the floor
any reconnect logic stands on). The chaos test (tests/chaos/test_camera_chaos.py) checks that
the camera recovers every time; the figure lives here, not as a timed assertion there.

    python benchmarks/camera_recovery.py [--outages 10] [--seed 20261123]

The last line is one JSON object (see DESIGN.md "Measuring").
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from script_servers import RtspServer

from benchmarks.common import SHARED_DATA, log, machine_name
from pipeline.capture import CameraConfig
from pipeline.config.service import FaceStreamConfig
from pipeline.service.service import FaceStreamService, run_service

VIDEO = SHARED_DATA / "video" / "faces" / "short_hamilton_clip.mp4"


def _until(condition: Callable[[], bool], seconds: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            raise RuntimeError(f"{what}: not within {seconds} s")
        time.sleep(0.01)
    return time.monotonic() - started


def _camera_up(service: FaceStreamService) -> float:
    registry = service.services.metrics.registry
    return registry.get_sample_value("facestream_camera_up", {"camera": "door"}) or 0.0


def _opencv_first_frame_seconds(url: str) -> float:
    started = time.monotonic()
    capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
    try:
        ok, _ = capture.read()
    finally:
        capture.release()
    if not ok:
        raise RuntimeError(f"OpenCV could not read {url}")
    return time.monotonic() - started


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[round(fraction * (len(ordered) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outages", type=int, default=10)
    parser.add_argument("--seed", type=int, default=20261123)
    arguments = parser.parse_args()
    if not VIDEO.is_file():
        raise SystemExit(f"{VIDEO} is missing (../shared/data)")
    rng = random.Random(arguments.seed)
    ours: list[float] = []
    baseline: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        server = RtspServer(VIDEO, Path(folder) / "rtsp.log")
        server.start()
        config = FaceStreamConfig(data_dir=Path(folder) / "data")
        with run_service(config) as service:
            service.add_camera(CameraConfig(id="door", url=server.url, stall_timeout_seconds=2.0))
            _until(lambda: _camera_up(service) == 1, 30, "first connection")
            for outage in range(arguments.outages):
                time.sleep(rng.uniform(0.2, 2.0))
                server.kill()
                _until(lambda: _camera_up(service) == 0, 10, "the outage seen")
                time.sleep(rng.uniform(0.0, 3.0))
                server.start()
                # both clocks start at the restart: the bare open runs beside the service
                with ThreadPoolExecutor(max_workers=1) as pool:
                    bare = pool.submit(_opencv_first_frame_seconds, server.url)
                    back = _until(lambda: _camera_up(service) == 1, 30, "back up")
                    baseline.append(bare.result(timeout=30))
                ours.append(back)
                log(f"outage {outage + 1}: back in {back:.2f} s, bare open {baseline[-1]:.2f} s")
        server.kill()
    result = {
        "name": "camera_recovery",
        "machine": machine_name(),
        "backend": "opencv-ffmpeg",
        "ours": round(statistics.median(ours), 3),
        "baseline": round(statistics.median(baseline), 3),
        "ratio": round(statistics.median(ours) / statistics.median(baseline), 3),
        "unit": "seconds from the source's return to the camera up (median)",
        "outages": len(ours),
        "ours_p95": round(_percentile(ours, 0.95), 3),
        "ours_max": round(max(ours), 3),
        "baseline_p95": round(_percentile(baseline, 0.95), 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
