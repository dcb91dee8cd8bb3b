"""A track speaks as one: enrolled tracks granted over RTSP, track vote off and on.

Each shared video is streamed by the project's RTSP test server (tests/rtsp_server.py: x264,
zerolatency, on 127.0.0.1) and read back by facestream's own capture (``Camera``, OpenCV/FFmpeg)
for one pass of the clip; the frames received are then replayed through the live door chain
(``calibration.doors.replay_frames``) twice on the same frames, with the track vote off
(``recognition.match.track_vote_min_encodings = 0``: frame votes only, as before) and on (the
default), at two doors: the shipped defaults (liveness required) and the same door without
liveness (recognition alone). Gallery and expected names: deploy/examples/eval_doors.toml.

Run: ``.venv/bin/python benchmarks/door_tracks.py [--data ../shared/data]``. Progress goes to
stderr; the last stdout line is one JSON object: ``ours`` = grants of expected people with the
track vote on, ``baseline`` = off (liveness off door), ``false_grants`` per variant, per video.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from script_servers import RtspServer

from benchmarks.common import log, machine_name
from calibration.doors import (
    DoorVideo,
    VideoOutcome,
    door_of,
    enrolled_services,
    plan_from_manifest,
    replay_frames,
)
from pipeline.capture import Camera, CameraConfig
from pipeline.config.service import FaceStreamConfig
from pipeline.metrics import PipelineMetrics
from pipeline.service.app import Services

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "deploy" / "examples" / "eval_doors.toml"
CAPTURE_GRACE_SECONDS = 20.0  # beyond the clip's own length: connect and first keyframe


def received_frames(video: Path, log_dir: Path) -> tuple[float, list[npt.NDArray[np.uint8]]]:
    """One pass of ``video`` as facestream's capture receives it over RTSP: (fps, BGR frames)."""
    source = cv2.VideoCapture(str(video))
    fps = source.get(cv2.CAP_PROP_FPS) or 25.0
    count = int(source.get(cv2.CAP_PROP_FRAME_COUNT))
    source.release()
    server = RtspServer(video, log_dir / "rtsp.log")
    server.start()
    camera = Camera(
        CameraConfig(id="rtsp", url=server.url, queue_frames=1000), PipelineMetrics.create()
    )
    frames: list[npt.NDArray[np.uint8]] = []
    try:
        camera.start()
        deadline = time.monotonic() + count / fps + CAPTURE_GRACE_SECONDS
        while len(frames) < count and time.monotonic() < deadline:
            frame = camera.frames.get(timeout_seconds=1.0)
            if frame is not None:
                frames.append(np.array(frame.image))
    finally:
        camera.stop()
        server.kill()
    log(f"{video.name}: {len(frames)} of {count} frames received over RTSP")
    return fps, frames


def replay(
    services: Services,
    video: DoorVideo,
    frames: list[npt.NDArray[np.uint8]],
    fps: float,
    *,
    min_encodings: int,
    liveness: bool,
) -> VideoOutcome:
    """The door's decisions on ``frames`` with the track vote at ``min_encodings`` (0: off)."""
    config = services.config
    match = config.recognition.match.model_copy(update={"track_vote_min_encodings": min_encodings})
    process = config.recognition.model_copy(update={"match": match})
    door = door_of(config).model_copy(update={"cameras": ["replay"], "require_liveness": liveness})
    variant = dataclasses.replace(
        services, config=config.model_copy(update={"recognition": process})
    )
    outcome = VideoOutcome(str(video.path), video.expected)
    return replay_frames(variant, door, frames, fps=fps, outcome=outcome)


def main() -> None:
    """Stream, replay, print the figures (last line JSON)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data", help="models")
    arguments = parser.parse_args()
    plan = plan_from_manifest(MANIFEST, arguments.data)
    plan.check()
    config = FaceStreamConfig(data_dir=arguments.data_dir)
    variants = {
        "frame_votes": (0, False),
        "track_vote": (3, False),
        "frame_votes_liveness": (0, True),
        "track_vote_liveness": (3, True),
    }
    outcomes: dict[str, list[VideoOutcome]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as folder, enrolled_services(plan, config) as services:
        for video in plan.videos:
            fps, frames = received_frames(video.path, Path(folder))
            for name, (min_encodings, liveness) in variants.items():
                outcome = replay(
                    services, video, frames, fps, min_encodings=min_encodings, liveness=liveness
                )
                outcomes[name].append(outcome)
                log(f"{video.path.name} {name}: {json.dumps(outcome.as_dict())}")
        tau = services.config.recognition.match.max_distance

    def expected_grants(name: str) -> int:
        return sum(len(outcome.granted) - outcome.false_grants for outcome in outcomes[name])

    ours, baseline = expected_grants("track_vote"), expected_grants("frame_votes")
    print(
        json.dumps(
            {
                "name": "door_tracks_rtsp",
                "machine": machine_name(),
                "backend": "onnxruntime-cpu",
                "ours": ours,
                "baseline": baseline,
                "ratio": ours / baseline if baseline else None,
                "unit": "grants of expected people (track vote on / off, no liveness)",
                "tau": tau,
                "expected_grants": {name: expected_grants(name) for name in variants},
                "false_grants": {
                    name: sum(outcome.false_grants for outcome in per_video)
                    for name, per_video in outcomes.items()
                },
                "videos": {
                    name: [outcome.as_dict() for outcome in per_video]
                    for name, per_video in outcomes.items()
                },
            }
        )
    )


if __name__ == "__main__":
    main()
