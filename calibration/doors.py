"""Door-level error rates: recordings replayed through the whole door chain.

Each video is fed frame by frame through the live path itself (``CameraRecognizer``: detect,
track, liveness; ``identify_batch``: encode and the gallery query, tau applied there; the
door's ``DoorPolicy``), with a gallery enrolled from photos and a door config (the shipped
defaults unless a config file names doors), and the door's decisions are compared with who
should be granted in that video; everybody else must not be:

- false grant: a grant of anyone not expected in that video (each grant opens the door once);
- missed grant: an expected person with no grant in that video;
- spoof refusal: a ``spoof_suspected`` decision;
- time to decision: from the first frame a track is seen to the door's decision about it,
  in video seconds (frame index / the file's frame rate), so it does not depend on this
  machine's speed.

A plan comes from folders (``--video``, ``--gallery DIR/<name>/*.jpg``, ``--expect``) or from
a manifest (TOML, paths relative to a data folder)::

    [gallery]
    lin_manuel_miranda = ["faces/face_recognition/examples/lin-manuel-miranda.png"]
    [[videos]]
    path = "video/faces/short_hamilton_clip.mp4"
    expect = ["lin_manuel_miranda"]
"""

from __future__ import annotations

import statistics
import tempfile
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from calibration.errors import DoorEvalError
from pipeline.access.policy import DoorConfig, DoorPolicy
from pipeline.capture import Camera, CameraConfig
from pipeline.config.service import FaceStreamConfig
from pipeline.recognition.camera import CameraRecognizer, RecognitionParts
from pipeline.recognition.offline import identify_batch
from pipeline.service.app import Services, open_services
from pipeline.service.enrolment import enroll_people
from pipeline.types import Decision, Frame

__all__ = [
    "DoorEvalPlan",
    "DoorEvalResult",
    "DoorVideo",
    "VideoOutcome",
    "door_of",
    "enrolled_services",
    "eval_door",
    "plan_from_folders",
    "plan_from_manifest",
    "replay_frames",
    "video_frames",
]

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_FALLBACK_FPS = 25.0  # a file that states no frame rate


@dataclass(frozen=True, slots=True)
class DoorVideo:
    """One recording and the gallery names that should be granted in it (none: nobody)."""

    path: Path
    expected: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DoorEvalPlan:
    """What to replay: the videos and the gallery (name -> enrolment photos)."""

    videos: tuple[DoorVideo, ...]
    gallery: Mapping[str, tuple[Path, ...]]

    def check(self) -> None:
        """DoorEvalError for an empty gallery, an expected name with no gallery photos, or a
        video that does not decode (its first frame is read)."""
        if not self.gallery or not any(self.gallery.values()):
            raise DoorEvalError("the gallery has no identity with photos (DIR/<name>/*.jpg)")
        for video in self.videos:
            unknown = sorted(set(video.expected) - set(self.gallery))
            if unknown:
                raise DoorEvalError(
                    f"{video.path}: expected {', '.join(unknown)} not in the gallery "
                    f"(known: {', '.join(sorted(self.gallery))})"
                )
            capture = cv2.VideoCapture(str(video.path))
            try:
                ok = capture.isOpened() and capture.read()[0]
            finally:
                capture.release()
            if not ok:
                raise DoorEvalError(f"{video.path}: not a video that decodes (no first frame)")


def plan_from_folders(
    videos: Sequence[Path], gallery_dir: Path, expected: Sequence[Sequence[str]]
) -> DoorEvalPlan:
    """A plan from ``gallery_dir/<name>/*.jpg`` (also .jpeg, .png) and, per video, who should
    be granted: one list for every video, or one list per video, in order."""
    if not videos:
        raise DoorEvalError("no --video given")
    if len(expected) not in (1, len(videos)):
        raise DoorEvalError(
            f"give --expect once (for every video) or once per --video: {len(videos)} videos, "
            f"{len(expected)} --expect"
        )
    if not gallery_dir.is_dir():
        raise DoorEvalError(f"{gallery_dir}: gallery folder not found")
    gallery = {
        folder.name: tuple(
            sorted(path for path in folder.iterdir() if path.suffix.lower() in _IMAGE_SUFFIXES)
        )
        for folder in sorted(gallery_dir.iterdir())
        if folder.is_dir()
    }
    gallery = {name: photos for name, photos in gallery.items() if photos}
    lists = list(expected) * len(videos) if len(expected) == 1 else list(expected)
    return DoorEvalPlan(
        tuple(DoorVideo(path, tuple(names)) for path, names in zip(videos, lists, strict=True)),
        gallery,
    )


def plan_from_manifest(manifest: Path, data_dir: Path) -> DoorEvalPlan:
    """A plan from a TOML manifest (module docstring) whose paths are relative to
    ``data_dir``."""
    try:
        raw = tomllib.loads(manifest.read_text(encoding="utf-8"))
        gallery = {
            str(name): tuple(data_dir / str(photo) for photo in photos)
            for name, photos in raw["gallery"].items()
        }
        videos = tuple(
            DoorVideo(data_dir / str(video["path"]), tuple(str(name) for name in video["expect"]))
            for video in raw["videos"]
        )
    except FileNotFoundError as exc:
        raise DoorEvalError(f"{manifest}: manifest not found") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DoorEvalError(f"{manifest}: cannot read the manifest: {exc}") from exc
    except (KeyError, TypeError, AttributeError) as exc:
        raise DoorEvalError(
            f"{manifest}: needs [gallery] name = [photos] and [[videos]] path, expect ({exc})"
        ) from exc
    missing = [str(photo) for photos in gallery.values() for photo in photos if not photo.is_file()]
    if missing:
        raise DoorEvalError(f"{manifest}: gallery photos not found: {', '.join(missing)}")
    return DoorEvalPlan(videos, gallery)


@dataclass(slots=True)
class VideoOutcome:
    """The door's decisions on one video and what they mean against its expected list."""

    path: str
    expected: tuple[str, ...]
    frames: int = 0
    decisions: list[tuple[Decision, float]] = field(default_factory=list)  # (decision, s)

    @property
    def granted(self) -> list[str]:
        """Names granted, in order, one per grant."""
        return [
            decision.name or str(decision.identity_id)
            for decision, _ in self.decisions
            if decision.outcome == "granted"
        ]

    @property
    def false_grants(self) -> int:
        """Grants of anyone not expected here."""
        return sum(1 for name in self.granted if name not in self.expected)

    @property
    def missed(self) -> list[str]:
        """Expected names never granted here."""
        return [name for name in self.expected if name not in self.granted]

    @property
    def spoof_refusals(self) -> int:
        """``spoof_suspected`` decisions."""
        return sum(1 for decision, _ in self.decisions if decision.outcome == "spoof_suspected")

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "video": self.path,
            "expected": list(self.expected),
            "frames": self.frames,
            "granted": self.granted,
            "false_grants": self.false_grants,
            "missed": self.missed,
            "spoof_refusals": self.spoof_refusals,
            "decisions": [
                {
                    "track_id": decision.track_id,
                    "outcome": decision.outcome,
                    "name": decision.name,
                    "distance": None if decision.distance is None else round(decision.distance, 4),
                    "time_to_decision_s": round(seconds, 3),
                }
                for decision, seconds in self.decisions
            ],
        }


def video_frames(path: Path) -> tuple[float, Iterator[npt.NDArray[np.uint8]]]:
    """The file's frame rate (frames per second) and its BGR uint8 (H, W, 3) frames, in order."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DoorEvalError(f"{path}: cannot open the video")
    fps = capture.get(cv2.CAP_PROP_FPS)

    def frames() -> Iterator[npt.NDArray[np.uint8]]:
        try:
            while True:
                ok, image = capture.read()
                if not ok or image is None:
                    return
                yield np.ascontiguousarray(image, dtype=np.uint8)
        finally:
            capture.release()

    return (fps if fps > 0 else _FALLBACK_FPS), frames()


def replay_frames(
    services: Services,
    door: DoorConfig,
    frames: Iterable[npt.NDArray[np.uint8]],
    *,
    fps: float,
    outcome: VideoOutcome,
) -> VideoOutcome:
    """Feed BGR frames, as one camera at ``fps``, through the live door chain; the door's
    decisions (with their time to decision) go into ``outcome``, which is returned."""
    camera_id = door.cameras[0]
    config = services.config
    parts = RecognitionParts(
        analyzer=services.analyzer,
        gallery=services.gallery,
        config=config.recognition,
        metrics=services.metrics,
        liveness=config.liveness if config.liveness.enabled else None,
        liveness_engine=services.liveness_engine,
    )
    # the camera is never started: it only stands for the origin of this state
    camera = Camera(CameraConfig(id=camera_id, url=outcome.path), services.metrics)
    recognizer = CameraRecognizer(camera_id, (camera, 0), parts)
    policy = DoorPolicy([door])
    first_seen: dict[int, float] = {}
    for sequence, image in enumerate(frames):
        at = sequence / fps
        frame = Frame(camera_id, sequence, at, image)
        observed = recognizer.observe(frame)
        outcome.frames = sequence + 1
        if observed is None:
            continue
        for label in recognizer.labels(frame):
            first_seen.setdefault(label.track_id, at)
        pending, ended = observed
        for finished in ended:
            policy.end_track(camera_id, finished.track_id)
        if not pending.track_ids:
            continue
        (matches,) = identify_batch(
            services.analyzer, services.gallery, [pending], config.recognition.match
        )
        recognizer.record(pending, matches)
        for observation in recognizer.observations(pending, matches, at):
            for decision in policy.observe(observation):
                since = first_seen.get(decision.track_id, decision.at)
                outcome.decisions.append((decision, decision.at - since))
    recognizer.finish()
    return outcome


@dataclass(frozen=True, slots=True)
class DoorEvalResult:
    """A run: each video's outcome, the door it was replayed at and the settings in force
    (tau as the service would use it: calibrated for the encoder unless the config sets it)."""

    outcomes: tuple[VideoOutcome, ...]
    door: DoorConfig
    config: FaceStreamConfig

    def as_dict(self) -> dict[str, object]:
        """The figures: totals first (the fixed keys), then the door and each video."""
        outcomes = self.outcomes
        times = [seconds for outcome in outcomes for _, seconds in outcome.decisions]
        grant_times = [
            seconds
            for outcome in outcomes
            for decision, seconds in outcome.decisions
            if decision.outcome == "granted"
        ]
        return {
            "false_grants": sum(outcome.false_grants for outcome in outcomes),
            "missed_grants": sum(len(outcome.missed) for outcome in outcomes),
            "granted": [name for outcome in outcomes for name in outcome.granted],
            "spoof_refusals": sum(outcome.spoof_refusals for outcome in outcomes),
            "median_time_to_decision_s": _median(times),
            "median_time_to_grant_s": _median(grant_times),
            "decisions": len(times),
            "door": {
                "id": self.door.id,
                "required_matches": self.door.required_matches,
                "window_encodings": self.door.window_encodings,
                "require_liveness": self.door.require_liveness,
                "liveness_enabled": self.config.liveness.enabled,
                "tau": self.config.recognition.match.max_distance,
                "track_vote_min_encodings": self.config.recognition.match.track_vote_min_encodings,
            },
            "videos": [outcome.as_dict() for outcome in outcomes],
        }


def _median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def door_of(config: FaceStreamConfig) -> DoorConfig:
    """The door a run replays at: the config's first door, or ``DoorConfig``'s defaults (the
    shipped secure defaults). DoorEvalError when it requires liveness that is off."""
    door = config.doors[0] if config.doors else DoorConfig(id="eval", cameras=["eval"])
    if door.require_liveness and not config.liveness.enabled:
        raise DoorEvalError(
            f"door {door.id!r}: require_liveness = true needs liveness.enabled = true"
        )
    return door


@contextmanager
def enrolled_services(plan: DoorEvalPlan, config: FaceStreamConfig) -> Iterator[Services]:
    """The services of ``config`` with a fresh gallery of the plan's photos, in a private
    embedded Redis under a temporary folder (never the configured Redis), closed at the end."""
    gallery_config = config.gallery.model_copy(
        update={"redis_url": None, "namespace": "eval-doors"}
    )
    private = config.model_copy(update={"gallery": gallery_config})
    with ExitStack() as stack:
        redis_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="facestream-doors-"))
        services = stack.enter_context(open_services(private, redis_dir=Path(redis_dir)))
        _enroll(services, plan.gallery)
        yield services


def eval_door(plan: DoorEvalPlan, config: FaceStreamConfig) -> DoorEvalResult:
    """Replay every video of ``plan`` at the door ``config`` defines (``door_of``), against a
    fresh gallery of the plan's photos (``enrolled_services``)."""
    plan.check()
    template = door_of(config)
    outcomes = []
    with enrolled_services(plan, config) as services:
        for index, video in enumerate(plan.videos):
            door = template.model_copy(update={"cameras": [f"video{index}"]})
            fps, frames = video_frames(video.path)
            outcome = VideoOutcome(str(video.path), video.expected)
            outcomes.append(replay_frames(services, door, frames, fps=fps, outcome=outcome))
        used = services.config
    return DoorEvalResult(tuple(outcomes), template, used)


def _enroll(services: Services, gallery: Mapping[str, tuple[Path, ...]]) -> None:
    """Enrol each name from its photos; DoorEvalError when no photo of a name gives a face."""
    for person in enroll_people(services, gallery):
        if person.identity is None:
            refused = "; ".join(person.found.rejected)
            raise DoorEvalError(f"gallery {person.name!r}: no usable face ({refused})")
