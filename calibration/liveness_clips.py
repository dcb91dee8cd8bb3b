"""The clip judge of the liveness evaluation (``calibration.liveness``): each clip or still run
through the service's own parts (the BlazeFace detector, the IoU tracker and ``LivenessJudge``)
and decided as at a door, by its main face track's first decided verdict."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from calibration.liveness_attacks import Clip
from engines.base import Engine
from engines.store import ModelStore
from pipeline.liveness import Liveness, LivenessConfig, LivenessJudge, Verdict
from pipeline.recognition.detect.blazeface import BlazeFaceConfig
from pipeline.recognition.detect.factory import load_detector
from pipeline.recognition.track import FaceTracker, TrackConfig, face_qualities

__all__ = ["ClipJudge", "ClipResult", "Still"]


@dataclass(frozen=True, slots=True)
class ClipResult:
    """One clip's outcome: its label, the main track's final liveness, whether the track's
    first non-undecided verdict was "live" (``accepted``: the door would have opened), and the
    seconds from the track's first frame to that verdict (None if never decided)."""

    source: str
    label: str
    liveness: Liveness
    decision_seconds: float | None
    accepted: bool = False
    main_track: int = -1

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "source": self.source,
            "label": self.label,
            "accepted": self.accepted,
            "verdict": self.liveness.verdict,
            "score": round(self.liveness.score, 4),
            "cues": {name: round(value, 4) for name, value in self.liveness.cues.items()},
            "decision_seconds": self.decision_seconds,
        }


@dataclass(frozen=True, slots=True)
class Still:
    """One image judged on its own (``stills = "passive"``); label as a clip's."""

    image: npt.NDArray[np.uint8]
    label: str
    source: str


class ClipJudge:
    """Detector + tracker + liveness judge, fresh per clip, as the service runs them."""

    def __init__(self, store: ModelStore, config: LivenessConfig, engine: Engine | None) -> None:
        self._detector = load_detector(BlazeFaceConfig(threads=1), store)
        self._config = config
        self._engine = engine
        self._still_judge: LivenessJudge | None = None

    def tracks(
        self, frames: list[npt.NDArray[np.uint8]]
    ) -> dict[int, dict[int, npt.NDArray[np.float32]]]:
        """Every track of ``frames``: track id -> {frame index: face box (x1 y1 x2 y2)}."""
        tracker = FaceTracker(TrackConfig())
        tracks: dict[int, dict[int, npt.NDArray[np.float32]]] = {}
        for index, frame in enumerate(frames):
            faces = self._detector.detect(np.ascontiguousarray(frame[:, :, ::-1]))
            update = tracker.update(index, faces, face_qualities(faces))
            for row, track_id in enumerate(update.track_ids.tolist()):
                tracks.setdefault(track_id, {})[index] = faces.boxes[row].copy()
        return tracks

    def judge(
        self,
        clip: Clip,
        *,
        config: LivenessConfig | None = None,
        trace: list[tuple[int, int, npt.NDArray[np.float32], Liveness]] | None = None,
    ) -> ClipResult:
        """The main track's final liveness, whether its first decided verdict was "live", and
        its time to that decision. config: another liveness config for this clip; trace: when
        given, gets (track id, frame index, face box, liveness after the frame) for every
        face."""
        tracker = FaceTracker(TrackConfig())
        judge = LivenessJudge(config or self._config, self._engine)
        frames_seen: dict[int, int] = {}
        widths: dict[int, float] = {}
        first_frame: dict[int, int] = {}
        first_decision: dict[int, tuple[int, Verdict]] = {}  # frame index, verdict
        last_verdict: dict[int, Liveness] = {}
        for index, frame in enumerate(clip.frames):
            faces = self._detector.detect(np.ascontiguousarray(frame[:, :, ::-1]))
            update = tracker.update(index, faces, face_qualities(faces))
            judge.observe(frame, faces, update.track_ids)
            for row, track_id in enumerate(update.track_ids.tolist()):
                frames_seen[track_id] = frames_seen.get(track_id, 0) + 1
                widths[track_id] = max(widths.get(track_id, 0.0), float(faces.widths_px[row]))
                first_frame.setdefault(track_id, index)
                liveness = judge.verdict(track_id)
                last_verdict[track_id] = liveness
                if track_id not in first_decision and liveness.verdict != "undecided":
                    first_decision[track_id] = (index, liveness.verdict)
                if trace is not None:
                    trace.append((track_id, index, faces.boxes[row].copy(), liveness))
        if not frames_seen:
            return ClipResult(clip.source, clip.label, Liveness.undecided(), None)
        main = max(frames_seen, key=lambda track_id: (frames_seen[track_id], widths[track_id]))
        liveness = last_verdict[main]  # as of the track's last frame in the clip
        if main not in first_decision:
            return ClipResult(clip.source, clip.label, liveness, None, main_track=main)
        decided_at, verdict = first_decision[main]
        seconds = (decided_at - first_frame[main] + 1) / clip.fps
        return ClipResult(
            clip.source, clip.label, liveness, seconds, accepted=verdict == "live", main_track=main
        )

    def judge_still(self, still: Still) -> ClipResult:
        """The passive verdict on the image's largest face (the still-image detector, with its
        fallback); accepted when it is "live"; no time to decision."""
        faces = self._detector.detect_still(np.ascontiguousarray(still.image[:, :, ::-1]))
        if not len(faces):
            return ClipResult(still.source, still.label, Liveness.undecided(), None)
        largest = int(np.argmax(faces.widths_px))
        if self._still_judge is None:  # stateless for stills: one serves every image
            self._still_judge = LivenessJudge(self._config, self._engine)
        liveness = self._still_judge.judge_still(still.image, faces)[largest]
        return ClipResult(
            still.source, still.label, liveness, None, accepted=liveness.verdict == "live"
        )

    def judge_any(self, item: Clip | Still) -> ClipResult:
        """``judge`` a clip, ``judge_still`` a still."""
        return self.judge_still(item) if isinstance(item, Still) else self.judge(item)

    def close(self) -> None:
        """Release the detector's engine."""
        self._detector.close()
