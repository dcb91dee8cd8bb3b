"""The cost curve: N 720p cameras at 15 fps over RTSP into one facestream service.

One RTSP server (tests/rtsp_server.py, a subprocess on 127.0.0.1: GstRtspServer, x264, the
shared hamilton clip scaled to 720p at 15 fps, looping; its media is shared, so N clients cost
one encode) serves every camera; one ``run_service`` with N cameras of that URL recognises
them. For each point: frames captured, processed (detected), dropped (evicted from a full
queue), p95 capture-to-decision and this process's CPU (decode + recognition; the RTSP
server's encode is a separate process, not counted) per camera, over a window after a warm-up.
The knee is the most cameras with under 1 % of frames dropped. Prints one JSON object as the
last line; ``baseline`` is one camera (the first point), ``ours`` the knee.

    python benchmarks/scale.py [--cameras 1,2,4,8] [--seconds 15] [--detect-every 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from script_servers import RtspServer  # tests/: the RTSP test server's controls

from benchmarks.common import SHARED_DATA, log, machine_name
from benchmarks.pipeline import ENROL
from benchmarks.streams import (
    FPS,
    _p95_seconds,
    _sample,
    _write_clip,
    capture_to_decision_buckets,
)
from pipeline.config.service import FaceStreamConfig
from pipeline.images import read_image
from pipeline.service.service import run_service

# Each RTSP session starts with a burst of the server's buffered frames, which the drop-oldest
# queue rightly evicts as stale: measuring from then would count start-up, not load. The
# window opens once every camera has streamed this long and settled this much longer.
STREAMING_BEFORE_WINDOW_SECONDS = 2.0
SETTLE_SECONDS = 1.0
WARM_UP_LIMIT_SECONDS = 60.0
KNEE_DROPPED_PERCENT = 1.0


def _measure_point(
    url: str,
    cameras: int,
    *,
    seconds: float,
    detect_every: int,
    capture_backend: str,
    queue_frames: int,
    work: Path,
) -> dict[str, Any]:
    """Run the service with ``cameras`` cameras of ``url`` and measure one window."""
    ids = [f"camera-{index}" for index in range(cameras)]
    config = FaceStreamConfig.model_validate(
        {
            "data_dir": work / f"data-{cameras}",
            "capture": {
                "cameras": [
                    {
                        "id": camera_id,
                        "url": url,
                        "backend": capture_backend,
                        "queue_frames": queue_frames,
                    }
                    for camera_id in ids
                ]
            },
            "recognition": {"detect_every_frames": detect_every},
        }
    )
    with run_service(config, redis_dir=work / f"redis-{cameras}") as service:
        services = service.services
        templates = services.enrolment_templates([("enrol", read_image(ENROL))]).templates
        services.enroll("lin_manuel_miranda", templates)
        metrics = services.metrics

        def totals(name: str) -> dict[str, float]:
            return {camera_id: _sample(metrics, name, camera_id) for camera_id in ids}

        warm_up_until = time.monotonic() + WARM_UP_LIMIT_SECONDS
        streaming = FPS * STREAMING_BEFORE_WINDOW_SECONDS
        while min(totals("facestream_frames_captured_total").values()) < streaming:
            if time.monotonic() > warm_up_until:
                streaming_now = sum(
                    value >= streaming
                    for value in totals("facestream_frames_captured_total").values()
                )
                log(f"{cameras} cameras: {streaming_now} streaming after the warm-up")
                return {"cameras": cameras, "streaming_cameras": streaming_now, "failed": True}
            time.sleep(0.2)
        time.sleep(SETTLE_SECONDS)
        buckets0 = capture_to_decision_buckets(metrics, ids)

        captured0 = totals("facestream_frames_captured_total")
        dropped0 = totals("facestream_frames_dropped_total")
        processed0 = totals("facestream_frames_processed_total")
        cpu0 = time.process_time()
        began = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - began
        cpu_seconds = time.process_time() - cpu0
        captured = sum(totals("facestream_frames_captured_total").values()) - sum(
            captured0.values()
        )
        dropped = sum(totals("facestream_frames_dropped_total").values()) - sum(dropped0.values())
        processed = sum(totals("facestream_frames_processed_total").values()) - sum(
            processed0.values()
        )
        p95_ms = _p95_seconds(metrics, ids, since=buckets0) * 1000
        backend = services.engine.backend
    row = {
        "cameras": cameras,
        "seconds": round(elapsed, 1),
        "captured_fps_per_camera": round(captured / elapsed / cameras, 2),
        "processed_fps_per_camera": round(processed / elapsed / cameras, 2),
        "dropped_percent": round(100.0 * dropped / max(captured, 1.0), 2),
        "p95_capture_to_decision_ms": round(p95_ms, 1),
        "cpu_cores_per_camera": round(cpu_seconds / elapsed / cameras, 3),
        "cpu_cores_total": round(cpu_seconds / elapsed, 2),
        "backend": backend,
    }
    log(f"{cameras} cameras: {row}")
    return row


def main() -> None:
    """Measure each point and print the JSON result line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", default="1,2,4,8", help="comma-separated camera counts")
    parser.add_argument("--seconds", type=float, default=15.0, help="window per point")
    parser.add_argument("--detect-every", type=int, default=2, help="detect on every n-th frame")
    parser.add_argument("--capture-backend", choices=("opencv", "gstreamer"), default="opencv")
    parser.add_argument("--queue-frames", type=int, default=4, help="capture queue per camera")
    args = parser.parse_args()
    points = sorted({int(value) for value in args.cameras.split(",")})
    if not SHARED_DATA.is_dir():
        raise SystemExit(f"needs the shared data at {SHARED_DATA}")
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        clip = work / "clip720p15.mp4"
        _write_clip(clip)
        server = RtspServer(clip, work / "rtsp.log")
        server.start()
        try:
            for cameras in points:
                rows.append(
                    _measure_point(
                        server.url,
                        cameras,
                        seconds=args.seconds,
                        detect_every=args.detect_every,
                        capture_backend=args.capture_backend,
                        queue_frames=args.queue_frames,
                        work=work,
                    )
                )
        finally:
            server.kill()
    under = [
        row["cameras"]
        for row in rows
        if not row.get("failed") and row["dropped_percent"] < KNEE_DROPPED_PERCENT
    ]
    knee = max(under, default=0)
    print(
        json.dumps(
            {
                "name": "scale",
                "machine": machine_name(),
                "backend": next((row["backend"] for row in rows if "backend" in row), None),
                "ours": knee,
                "baseline": 1,
                "ratio": knee,
                "unit": "cameras with < 1 % dropped (knee; baseline: one camera)",
                "knee_cameras": knee,
                "source": "rtsp (tests/rtsp_server.py, shared media), 1280x720 at 15 fps",
                "source_fps": FPS,
                "detect_every_frames": args.detect_every,
                "capture_backend": args.capture_backend,
                "queue_frames": args.queue_frames,
                "load_average_before": [round(value, 2) for value in load_before],
                "cpu_count": os.cpu_count(),
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
