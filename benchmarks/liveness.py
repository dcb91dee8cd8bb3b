"""Liveness stage cost per face per frame at 720p: the per-frame cues vs the CNN on every frame.

A 1280x720 clip of the first face video of ../shared/data/video/labels.csv (upscaled), its
faces found once by BlazeFace and tracked; then, interleaved round by round on the same frames,
``LivenessJudge.observe`` with the default config (parallax every frame, the MiniFASNet CNN on
a track's first frame and every ``cnn_every_frames`` frames: "ours") against the same judge with
the CNN on every frame ("baseline"); also without the CNN ("no_cnn") and without the
surround-motion cue ("no_surround"). Times are ms per face per frame on CPU (1 ORT thread).

    python -m benchmarks.liveness [--rounds 3] [--frames 60]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import SHARED_DATA, log, machine_name
from calibration.liveness_dataset import read_video
from engines.models.antispoof import LivenessEngineSettings, load_liveness_engine
from engines.store import ModelStore
from pipeline.liveness import LivenessConfig, LivenessJudge
from pipeline.recognition.detect.blazeface import BlazeFaceConfig
from pipeline.recognition.detect.factory import load_detector
from pipeline.recognition.track import FaceTracker, TrackConfig, face_qualities


def main() -> None:
    """Print progress to stderr and the JSON result last on stdout."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=60)
    args = parser.parse_args()
    with (SHARED_DATA / "video" / "labels.csv").open(newline="") as handle:
        video = next(row["path"] for row in csv.DictReader(handle) if row["kind"] == "face")
    frames = read_video(SHARED_DATA / "video" / video, fps=15.0, width=1280)[: args.frames]
    with tempfile.TemporaryDirectory() as folder:
        store = ModelStore(Path(folder))
        detector = load_detector(BlazeFaceConfig(), store)
        tracker = FaceTracker(TrackConfig())
        detections = []
        for index, frame in enumerate(frames):
            faces = detector.detect(np.ascontiguousarray(frame[:, :, ::-1]))
            detections.append((faces, tracker.update(index, faces, face_qualities(faces))))
        detector.close()
        face_count = sum(len(faces) for faces, _ in detections)
        engine = load_liveness_engine(store, LivenessEngineSettings(threads=1))
        configs = {
            "ours": LivenessConfig(enabled=True),
            "baseline": LivenessConfig(enabled=True, cnn_every_frames=1),
            "no_cnn": LivenessConfig(enabled=True, cnn=False),
            "no_surround": LivenessConfig(enabled=True, surround=False),
        }
        times: dict[str, list[float]] = {name: [] for name in configs}
        for round_number in range(args.rounds):
            for name, config in configs.items():
                judge = LivenessJudge(config, engine if config.cnn else None)
                start = time.perf_counter()
                for frame, (faces, update) in zip(frames, detections, strict=True):
                    judge.observe(frame, faces, update.track_ids)
                times[name].append((time.perf_counter() - start) * 1000 / max(face_count, 1))
            log(f"round {round_number}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in times.items()))
        engine.close()
    ours, baseline = (statistics.median(times[name]) for name in ("ours", "baseline"))
    print(
        json.dumps(
            {
                "name": "liveness_720p",
                "machine": machine_name(),
                "backend": "onnxruntime-cpu",
                "ours": round(ours, 3),
                "baseline": round(baseline, 3),
                "ratio": round(baseline / ours, 2),
                "unit": "ms/face/frame",
                "per_frame_cues_only": round(statistics.median(times["no_cnn"]), 3),
                "without_surround": round(statistics.median(times["no_surround"]), 3),
                "cnn_every_frames": configs["ours"].cnn_every_frames,
                "faces": face_count,
                "frames": len(frames),
            }
        )
    )


if __name__ == "__main__":
    main()
