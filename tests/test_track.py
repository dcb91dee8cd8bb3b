"""The IoU tracker: stable ids, occlusion tolerance, and when a track asks to be encoded."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.recognition.offline import track_result
from pipeline.recognition.track import FaceTracker, Track, TrackConfig, box_iou, face_qualities
from pipeline.types import Faces, Match


def _faces(*boxes: tuple[float, float, float, float]) -> Faces:
    count = len(boxes)
    return Faces(
        boxes=np.array(boxes, dtype=np.float32).reshape(count, 4),
        scores=np.ones(count, np.float32),
        landmarks=np.zeros((count, 5, 2), np.float32),
    )


def test_box_iou_known_values() -> None:
    """Identical boxes have IoU 1, disjoint 0, half-overlapping 1/3."""
    boxes = np.array([[0, 0, 10, 10]], np.float32)
    others = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [5, 0, 15, 10]], np.float32)
    np.testing.assert_allclose(box_iou(boxes, others), [[1.0, 0.0, 1 / 3]], atol=1e-6)


def test_ids_follow_moving_faces_and_survive_short_occlusion() -> None:
    """Two faces moving slowly keep their ids; one hidden for 3 frames comes back with its id."""
    tracker = FaceTracker(TrackConfig(max_missed_frames=5))
    ids = []
    for frame in range(10):
        shift = 2.0 * frame
        left = (10 + shift, 10, 60 + shift, 60)
        right = (200 - shift, 10, 250 - shift, 60)
        faces = _faces(left) if 4 <= frame <= 6 else _faces(left, right)
        update = tracker.update(frame, faces, face_qualities(faces))
        assert not update.ended
        ids.append(tuple(update.track_ids.tolist()))
    assert ids[0] == (1, 2)
    assert ids[-1] == (1, 2)
    assert {track_ids[0] for track_ids in ids} == {1}


def test_track_ends_after_max_missed_frames() -> None:
    """A face unseen for more than max_missed_frames ends its track, reported once."""
    tracker = FaceTracker(TrackConfig(max_missed_frames=2))
    tracker.update(0, _faces((0, 0, 50, 50)), np.array([50.0], np.float32))
    ended = [
        tracker.update(frame, Faces.empty(), np.zeros(0, np.float32)).ended for frame in range(1, 5)
    ]
    assert [len(item) for item in ended] == [0, 0, 1, 0]
    assert ended[2][0].first_frame == 0
    assert not tracker.live_tracks


@pytest.mark.parametrize(("every", "expected"), [(1, 6), (3, 2), (100, 1)])
def test_encode_schedule(every: int, expected: int) -> None:
    """A steady face is encoded when it appears, then every `encode_every_frames` frames."""
    tracker = FaceTracker(TrackConfig(encode_every_frames=every))
    encodes = 0
    for frame in range(6):
        update = tracker.update(frame, _faces((0, 0, 50, 50)), np.array([50.0], np.float32))
        encodes += len(update.encode)
    assert encodes == expected


def test_much_better_face_is_encoded_early() -> None:
    """Quality jumping by quality_gain triggers an encode before the schedule is due."""
    tracker = FaceTracker(TrackConfig(encode_every_frames=100, quality_gain=1.5))
    first = tracker.update(0, _faces((0, 0, 50, 50)), np.array([50.0], np.float32))
    same = tracker.update(1, _faces((0, 0, 50, 50)), np.array([55.0], np.float32))
    better = tracker.update(2, _faces((0, 0, 52, 52)), np.array([80.0], np.float32))
    assert (first.encode, same.encode, better.encode) == ((0,), (), (0,))


def test_turned_head_has_lower_quality() -> None:
    """With the nose off the eye line, quality drops below that of a frontal face."""
    eyes = [(30, 40), (40, 40), (70, 40), (60, 40)]
    frontal = Faces(
        np.array([[0, 0, 100, 100]], np.float32),
        np.ones(1, np.float32),
        np.array([[*eyes, (50, 60)]], np.float32),
    )
    turned = Faces(
        np.array([[0, 0, 100, 100]], np.float32),
        np.ones(1, np.float32),
        np.array([[*eyes, (75, 60)]], np.float32),
    )
    assert face_qualities(frontal)[0] == pytest.approx(100.0)
    assert face_qualities(turned)[0] < 50.0


def test_select_with_no_index_gives_no_faces() -> None:
    """Faces.select([]) is an empty Faces, not an IndexError (no face due for encoding)."""
    faces = _faces((0, 0, 10, 10), (20, 20, 30, 30))
    assert len(faces.select([])) == 0
    assert len(faces.select([1])) == 1


def test_face_of_quality_zero_keeps_to_the_schedule() -> None:
    """A turned head (nose beyond the eye span: quality 0) is encoded when it appears and then
    every encode_every_frames frames, not on every frame (0 is not "better" than 0); a later
    frontal face of that track still counts as better and is encoded at once."""
    turned = Faces(
        np.array([[40, 30, 100, 90]], np.float32),
        np.ones(1, np.float32),
        np.array([[[50, 50], [55, 50], [60, 50], [65, 50], [90, 60]]], np.float32),
    )
    assert face_qualities(turned)[0] == 0.0
    tracker = FaceTracker(TrackConfig(encode_every_frames=10))
    encoded_frames = [
        frame for frame in range(30) if tracker.update(frame, turned, face_qualities(turned)).encode
    ]
    assert encoded_frames == [0, 10, 20]
    frontal = tracker.update(31, turned, np.array([60.0], np.float32))
    assert frontal.encode == (0,)


def _track_with(votes: list[Match | None], distances: list[float]) -> Track:
    track = Track(track_id=7, box=np.zeros(4, np.float32), first_frame=0, last_frame=9)
    track.matches.extend(votes)
    track.distances.extend(distances)
    return track


def test_a_track_votes_by_identity_id_so_people_sharing_a_name_never_pool() -> None:
    # two enrolled people called Sam, two votes each, and Kim with three: pooled by name the
    # Sams would win 4 to 3; by identity Kim wins, and the result names Kim's id
    sam_a = Match(identity_id="sam-a", name="Sam", distance=0.30)
    sam_b = Match(identity_id="sam-b", name="Sam", distance=0.31)
    kim = Match(identity_id="kim", name="Kim", distance=0.45)
    votes: list[Match | None] = [sam_a, sam_a, sam_b, sam_b, kim, kim, kim, None]
    result = track_result(_track_with(votes, [0.30, 0.32, 0.31, 0.33, 0.45, 0.44, 0.46, 0.9]))
    assert (result.identity, result.identity_id) == ("Kim", "kim")
    assert result.distance == pytest.approx(0.44)  # Kim's best, not the Sams' 0.30
    assert result.encodings == 8


def test_a_tied_vote_goes_to_the_nearest_identity_and_no_vote_is_unknown() -> None:
    near = Match(identity_id="near", name="Ana", distance=0.35)
    far = Match(identity_id="far", name="Ana", distance=0.5)
    tied = track_result(_track_with([far, near], [0.5, 0.35]))
    assert tied.identity_id == "near"
    unknown = track_result(_track_with([None, None], [0.7, 0.65]))
    assert (unknown.identity, unknown.identity_id, unknown.distance) == (None, None, 0.65)
