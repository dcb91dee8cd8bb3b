"""Errors of the pipeline layer; all derive from ``engines.errors.FaceStreamError``.

Each error also inherits the builtin a caller would naturally catch::

    FaceStreamError                                  (engines.errors)
    ├── ConfigError(ValueError)                      (engines.errors)
    │   ├── ConfigFileError                          the config file is missing, unparsable or
    │   │                                            invalid
    │   └── CameraUrlRefusedError                    a camera URL the API may not open (a scheme,
    │                                                file or address range it refuses); has .reason
    ├── CameraError(ConnectionError)                 a camera cannot be opened, or its stream
    │   │                                            failed
    │   ├── CameraTimeoutError(TimeoutError)         no answer, or no new frame, within the
    │   │                                            configured seconds (a stall)
    │   ├── StreamEndedError(EOFError)               the stream ended (end of a file, server gone)
    │   └── CameraFrameError(ValueError)             a camera delivered garbage (no image, wrong
    │                                                dtype or shape)
    ├── UnknownCameraError(KeyError)                 no camera with that id is running
    ├── QueueClosedError(RuntimeError)               a frame queue was closed and is empty
    ├── RedisServerError(RuntimeError)               the embedded redis-server is missing, died or
    │                                                was not ready by its deadline
    ├── GalleryUnavailableError(ConnectionError)     Redis cannot be reached (down, restarting,
    │   │                                            loading its data, timed out)
    │   └── GalleryNotReplicatedError                a write reached the master but not
    │                                                gallery.min_replicas_acked replicas in time
    ├── GalleryStoreError(RuntimeError)              Redis answered with an error, or holds gallery
    │                                                data this code cannot read
    ├── GalleryRequestError(ValueError)              a gallery call has bad arguments
    │   ├── ModelMismatchError                       embeddings come from another model than the
    │   │                                            gallery's active one
    │   └── IdentityExistsError                      enrolment under an id that is already taken
    ├── IdentityNotFoundError(LookupError)           no identity has the id asked for
    ├── DecisionNotFoundError(LookupError)           no decision awaits feedback under that event id
    │                                                (unknown, or its probe expired)
    ├── FeedbackGivenError(ValueError)               the decision already had its feedback
    ├── UnknownsDisabledError(LookupError)           unknown faces are not kept ([unknowns]
    │                                                enabled = false)
    ├── UnknownClusterNotFoundError(LookupError)     no unknown-face cluster has the id asked for
    ├── ClusterEnrolledError(ValueError)             an unknown-face cluster was enrolled already,
    │                                                or holds no encoding to enrol
    ├── ImageDecodeError(ValueError)                 an image is empty, corrupt, too big, or not
    │                                                an image at all
    ├── EnrollmentRejectedError(ValueError)          a photo cannot be enrolled (no face, several,
    │                                                too small, blurred, duplicate); has .reason
    ├── RecordingError(ValueError)                   a recording cannot be opened or decoded
    ├── EventFormatError(ValueError)                 an event is not valid JSON of the right shape
    ├── EventsUnavailableError(ConnectionError)      Redis, which holds events and the outbox, is
    │                                                unreachable
    ├── EventStoreError(RuntimeError)                Redis refused an events command
    ├── WebhookSignatureError(ValueError)            a webhook signature or timestamp is invalid
    │                                                or outside the replay window
    ├── AuditLogError(OSError)                       the audit log cannot be opened, locked,
    │                                                read, written or synced
    ├── AuditLogCorruptError(ValueError)             the audit log's last line is torn or corrupt;
    │                                                appends are refused until repair()
    ├── AuditEventError(ValueError)                  an audit event is not a JSON object of JSON
    │                                                values
    ├── PreviewBusyError(RuntimeError)               a camera's preview has as many viewers as
    │                                                allowed
    └── ServiceNotReadyError(RuntimeError)           the service cannot answer yet (starting,
                                                     stopping, or a part it needs is down)
"""

from __future__ import annotations

from engines.errors import ConfigError, FaceStreamError

__all__ = [
    "AuditEventError",
    "AuditLogCorruptError",
    "AuditLogError",
    "CameraError",
    "CameraFrameError",
    "CameraTimeoutError",
    "CameraUrlRefusedError",
    "ClusterEnrolledError",
    "ConfigFileError",
    "DecisionNotFoundError",
    "EnrollmentRejectedError",
    "EventFormatError",
    "EventStoreError",
    "EventsUnavailableError",
    "FeedbackGivenError",
    "GalleryNotReplicatedError",
    "GalleryRequestError",
    "GalleryStoreError",
    "GalleryUnavailableError",
    "IdentityExistsError",
    "IdentityNotFoundError",
    "ImageDecodeError",
    "ModelMismatchError",
    "PreviewBusyError",
    "QueueClosedError",
    "RecordingError",
    "RedisServerError",
    "ServiceNotReadyError",
    "StreamEndedError",
    "UnknownCameraError",
    "UnknownClusterNotFoundError",
    "UnknownsDisabledError",
    "WebhookSignatureError",
]


class ConfigFileError(ConfigError):
    """The config file is missing, is not valid TOML, or fails validation (names the field)."""


class CameraUrlRefusedError(ConfigError):
    """A camera URL sent to the API that it refuses to open (``POST /v1/streams``): a scheme
    other than rtsp(s)/http(s)/device, a file outside ``capture.media_dir``, or a host in an
    address range ``capture.api_allowed_networks`` does not list. ``reason`` is a short
    machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{message} ({reason})")
        self.reason = reason


class CameraError(FaceStreamError, ConnectionError):
    """A camera cannot be opened, or its stream ended or failed (names the camera and URL)."""


class CameraTimeoutError(CameraError, TimeoutError):
    """A camera did not open, or delivered no new frame, within the configured seconds."""


class StreamEndedError(CameraError, EOFError):
    """A stream ended: the end of a video file, or a server that closed the stream."""


class CameraFrameError(CameraError, ValueError):
    """A camera delivered something that is not a BGR uint8 HxWx3 image."""


class QueueClosedError(FaceStreamError, RuntimeError):
    """A frame queue was closed and holds no more frames."""


class RedisServerError(FaceStreamError, RuntimeError):
    """The embedded redis-server binary is missing, exited, or did not answer PING in time."""


class GalleryUnavailableError(FaceStreamError, ConnectionError):
    """Redis, the gallery's source of truth, cannot be reached or is still loading its data."""


class GalleryNotReplicatedError(GalleryUnavailableError):
    """A gallery write reached the Redis master but not gallery.min_replicas_acked replicas in
    time: it is not acknowledged (it may or may not survive a failover)."""


class GalleryStoreError(FaceStreamError, RuntimeError):
    """Redis refused a gallery command, or stored gallery data is malformed (names the key)."""


class GalleryRequestError(FaceStreamError, ValueError):
    """A gallery call has bad arguments (empty name, no templates, top_k < 1, bad id)."""


class ModelMismatchError(GalleryRequestError):
    """Embeddings were made by a different model than the gallery's active model id."""


class IdentityExistsError(GalleryRequestError):
    """An enrolment names an identity id that the gallery already holds."""


class IdentityNotFoundError(FaceStreamError, LookupError):
    """The gallery holds no identity with the id asked for."""


class DecisionNotFoundError(FaceStreamError, LookupError):
    """No decision awaits feedback under the event id given (unknown, or its probe expired)."""


class FeedbackGivenError(FaceStreamError, ValueError):
    """An operator's feedback names a decision that already had its feedback."""


class UnknownsDisabledError(FaceStreamError, LookupError):
    """Unknown faces are not kept (``[unknowns] enabled = false``): there is nothing to list."""


class UnknownClusterNotFoundError(FaceStreamError, LookupError):
    """No unknown-face cluster has the id asked for (never made, deleted, merged or purged)."""


class ClusterEnrolledError(FaceStreamError, ValueError):
    """An unknown-face cluster was enrolled already, or holds no encoding to enrol."""


class ImageDecodeError(FaceStreamError, ValueError):
    """An image is empty, corrupt, truncated, too large, or not an image at all."""


class EnrollmentRejectedError(FaceStreamError, ValueError):
    """A photo cannot give an enrolment template; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{message} ({reason})")
        self.reason = reason


class RecordingError(FaceStreamError, ValueError):
    """A recording given for offline processing cannot be opened or holds no decodable frame."""


class UnknownCameraError(FaceStreamError, KeyError):
    """No camera with the given id is running."""


class EventFormatError(FaceStreamError, ValueError):
    """An event, or its JSON encoding, is malformed (names the field, expected and found)."""


class EventsUnavailableError(FaceStreamError, ConnectionError):
    """Redis, which holds the event stream and the webhook outbox, cannot be reached."""


class EventStoreError(FaceStreamError, RuntimeError):
    """Redis refused an event command, or holds outbox data this code cannot read."""


class WebhookSignatureError(FaceStreamError, ValueError):
    """A received webhook's signature is wrong, or its timestamp is outside the replay window."""


class AuditLogError(FaceStreamError, OSError):
    """The audit log file cannot be opened, locked, read, written or synced (names the file)."""


class AuditLogCorruptError(FaceStreamError, ValueError):
    """The audit log's last line is torn or corrupt (names the file and the 1-based line)."""


class AuditEventError(FaceStreamError, ValueError):
    """An audit event is not a JSON object whose values JSON can encode (no NaN, str keys)."""


class PreviewBusyError(FaceStreamError, RuntimeError):
    """A camera's live preview already has as many viewers as ``api.preview_max_clients``."""


class ServiceNotReadyError(FaceStreamError, RuntimeError):
    """The service cannot answer yet: starting, stopping, or a part it needs is down."""
