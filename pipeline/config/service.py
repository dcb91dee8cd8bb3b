"""Service configuration: strict pydantic models, validated before anything starts.

Files are TOML. Every section forbids unknown keys, so a typo is an error that names the key,
not a silently ignored setting. ``facestream check-config FILE`` runs exactly this validation.
What is valid but probably a mistake (a door watching a camera no section lists: cameras can
also be added at run time, through the API) is logged as a warning when a file is loaded.
"""

from __future__ import annotations

import difflib
import logging
import tomllib
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import (
    Field,
    IPvAnyNetwork,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from engines.errors import ConfigError
from engines.models.encoder import EngineSettings
from pipeline.access.policy import DoorConfig
from pipeline.capture.config import CaptureConfig
from pipeline.config.base import StrictModel
from pipeline.config.secrets import SecretSpec, resolve_secret
from pipeline.config.unknowns import UnknownsConfig
from pipeline.errors import ConfigFileError
from pipeline.events.config import EventsConfig, MqttConfig
from pipeline.liveness.config import LivenessConfig
from pipeline.recognition.detect.blazeface import BlazeFaceConfig
from pipeline.recognition.detect.factory import DetectConfig
from pipeline.recognition.enroll import EnrollConfig
from pipeline.recognition.offline import RecognitionConfig
from pipeline.redact import redact_credentials
from pipeline.redis.cluster import is_cluster_url, parse_cluster_url
from pipeline.redis.ha import is_sentinel_url, parse_sentinel_url

__all__ = [
    "BACKEND_ALIASES",
    "ApiConfig",
    "AuditConfig",
    "EmbeddedRedisConfig",
    "EngineConfig",
    "FaceStreamConfig",
    "FeedbackConfig",
    "GalleryConfig",
    "StrictModel",
    "load_config",
    "with_engine_overrides",
]

_log = logging.getLogger(__name__)


def _redacted_values(value: object) -> object:
    if isinstance(value, str):
        return redact_credentials(value)
    if isinstance(value, dict):
        return {key: _redacted_values(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted_values(item) for item in value]
    return value


class EngineConfig(StrictModel):
    """The face encoder's runtime."""

    backend: Literal["auto", "onnxruntime", "tensorrt", "torch"] = Field(
        default="onnxruntime",
        description="model runtime; 'auto' picks tensorrt on a GPU with TensorRT, else "
        "onnxruntime, and logs the choice",
    )
    device: Literal["cpu", "cuda"] = Field(default="cpu", description="where the encoder runs")
    precision: Literal["fp32", "fp16", "int8"] = Field(
        default="fp32", description="fp16/int8 need tensorrt (or torch fp16 on cuda)"
    )
    threads: int = Field(
        default=0, ge=0, le=256, description="CPU threads per engine; 0 lets the library choose"
    )
    min_batch: int = Field(default=1, ge=1, le=4096, description="smallest batch (faces)")
    opt_batch: int = Field(default=16, ge=1, le=4096, description="batch tuned for (faces)")
    max_batch: int = Field(default=64, ge=1, le=4096, description="largest batch (faces)")
    adapter: Path | None = Field(
        default=None,
        description="site adapter head from `facestream train adapter`, appended to the "
        "encoder (a new model id: run `facestream gallery reencode` and calibrate tau again)",
    )

    @model_validator(mode="after")
    def _batches_ordered(self) -> EngineConfig:
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError("need min_batch <= opt_batch <= max_batch")
        return self

    def settings(self) -> EngineSettings:
        """The engines-layer settings this section describes."""
        return EngineSettings(
            backend=self.backend,
            device=self.device,
            precision=self.precision,
            threads=self.threads,
            min_batch=self.min_batch,
            opt_batch=self.opt_batch,
            max_batch=self.max_batch,
            adapter=self.adapter,
        )


class EmbeddedRedisConfig(StrictModel):
    """The redis-server the service starts itself when no Redis URL is configured."""

    appendonly: bool = Field(
        default=True, description="AOF persistence: every acknowledged write is logged to disk"
    )
    appendfsync: Literal["always", "everysec", "no"] = Field(
        default="always",
        description="when the AOF is fsynced: 'always' (one fsync per write: enrolments and "
        "events are few) loses nothing acknowledged; 'everysec' can lose up to ~2 s of "
        "acknowledged writes when the server is killed while the disk is slow",
    )
    ready_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="how long to wait for the server to answer PING"
    )
    stop_timeout_seconds: float = Field(
        default=5.0, gt=0, le=300, description="grace after SIGTERM before the server is killed"
    )


class GalleryConfig(StrictModel):
    """The face gallery: where it lives in Redis and how clients talk to it."""

    redis_url: str | None = Field(
        default=None,
        description="redis://, rediss:// or unix:// URL of the gallery's Redis, "
        "redis+sentinel://[user[:password]@]host:port[,host:port...]/master_name for a Redis "
        "watched by Sentinel (the master is asked of the sentinels and found again after a "
        "failover), or redis+cluster://[user[:password]@]host:port[,host:port...] for a Redis "
        "Cluster (the hosts are seed nodes); none starts an embedded redis-server under data_dir",
    )
    namespace: str = Field(
        default="gallery",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Redis hash tag of every gallery key (fs:{namespace}:...), so the gallery "
        "stays in one Redis Cluster slot",
    )
    socket_timeout_seconds: float = Field(
        default=5.0, gt=0, le=300, description="Redis connect and command timeout"
    )
    resync_interval_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="after losing Redis, how often the index retries to reconnect and resync",
    )
    redis_password_file: Path | None = Field(
        default=None,
        description="file holding the Redis password (a mounted Secret); "
        "FACESTREAM_REDIS_PASSWORD or FACESTREAM_REDIS_PASSWORD_FILE override it, a password "
        "in redis_url wins over all; the ACL user name goes in the URL (redis://facestream@host)",
    )
    allow_insecure_redis: bool = Field(
        default=False,
        description="let the service use a redis:// URL to a host that is not this machine "
        "without a password (anyone who reaches that Redis can enrol faces and forge events); "
        "the service refuses such a URL unless this is true, and warns at start when it is",
    )
    min_replicas_acked: int = Field(
        default=0,
        ge=0,
        le=16,
        description="a gallery write (an enrolment, a removal) is acknowledged only after this "
        "many replicas confirmed it (Redis WAIT); fewer within replica_ack_timeout_seconds: "
        "the write is refused (the API answers 503 with the reason). 0 (the embedded Redis has "
        "no replica): the master's answer is enough; set 1 with Sentinel so no acknowledged "
        "enrolment is lost in a failover",
    )
    replica_ack_timeout_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="longest wait for min_replicas_acked replicas to confirm a gallery write; "
        "must be below socket_timeout_seconds",
    )
    embedded: EmbeddedRedisConfig = EmbeddedRedisConfig()

    @field_validator("redis_url")
    @classmethod
    def _ha_url_is_well_formed(cls, url: str | None) -> str | None:
        # a malformed Sentinel or Cluster URL is a config error before anything starts, not a
        # failure at the first connection (ConfigError is a ValueError: pydantic reports it)
        if url is not None and is_sentinel_url(url):
            parse_sentinel_url(url)
        elif url is not None and is_cluster_url(url):
            parse_cluster_url(url)
        return url

    @model_validator(mode="after")
    def _replica_wait_fits_socket_timeout(self) -> GalleryConfig:
        if self.min_replicas_acked and (
            self.replica_ack_timeout_seconds >= self.socket_timeout_seconds
        ):
            raise ValueError(
                f"gallery.replica_ack_timeout_seconds ({self.replica_ack_timeout_seconds}) must "
                f"be below gallery.socket_timeout_seconds ({self.socket_timeout_seconds}): the "
                "wait for replicas is one Redis command"
            )
        return self


class FeedbackConfig(StrictModel):
    """Operators' corrections of door decisions (``facestream feedback``, the feedback route)."""

    probe_ttl_seconds: int = Field(
        default=7 * 86_400,
        ge=60,
        le=90 * 86_400,
        description="how long the encoding behind each decision is kept in Redis (under its "
        "event id) so that an operator can still correct it; afterwards feedback on that "
        "decision is refused (404). An encoding, never a face image",
    )
    negative_margin: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description="an identity an operator corrected gets its own tau: this far (Euclidean, "
        "descriptor units) below the distance from its templates to its nearest negative (a "
        "probe that was not this person), when that is below the global tau",
    )
    max_negatives_per_identity: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="negatives kept per identity; beyond it the oldest is dropped",
    )


class ApiConfig(StrictModel):
    """The HTTP API (``facestream run``)."""

    host: str = Field(default="127.0.0.1", description="address to listen on")
    port: int = Field(default=8080, ge=0, le=65535, description="TCP port; 0 picks a free one")
    token: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="bearer token every endpoint but /healthz, /readyz and /metrics requires; "
        "FACESTREAM_API_TOKEN overrides it; with neither, `facestream run` makes a random one "
        "and writes it to data_dir/api_token (mode 600)",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="bearer token that adding and removing cameras (POST and DELETE "
        "/v1/streams) requires, and that opens every other route too; "
        "FACESTREAM_ADMIN_TOKEN or FACESTREAM_ADMIN_TOKEN_FILE override it; none: the API "
        "token is the admin token as well",
    )
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=list,
        max_length=256,
        description="reverse proxies (addresses or CIDR ranges) whose X-Forwarded-For and "
        "X-Forwarded-Proto headers are believed; none (the default): those headers are "
        "ignored, so a client cannot pick the address the rate limit counts it under",
    )
    drain_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="longest wait for the body of a refused request (401, 413, 429) before "
        "the connection is closed, so a client that declares a body and never sends it "
        "holds nothing",
    )
    preview_session_seconds: int = Field(
        default=12 * 3600,
        ge=60,
        le=30 * 24 * 3600,
        description="how long the browser preview cookie from /login is valid; the server "
        "checks the expiry it carries (signed), not only the browser",
    )
    max_upload_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1024, le=1024**3, description="largest accepted image"
    )
    max_images_per_request: int = Field(
        default=20, ge=1, le=1000, description="most images one enrolment request may carry"
    )
    max_request_pixels: int = Field(
        default=256_000_000,
        ge=1_000_000,
        le=10_000_000_000,
        description="pixels the decoded images of one enrolment may have together (it holds "
        "them all at once: 3 bytes a pixel, so 256 MP, 20 phone photos of 12 MP, is about "
        "770 MB); beyond it 413",
    )
    preview_max_fps: float = Field(
        default=10.0, gt=0, le=60, description="frame rate cap of each live preview stream"
    )
    preview_jpeg_quality: int = Field(default=80, ge=10, le=100, description="preview JPEG quality")
    preview_max_clients: int = Field(
        default=8, ge=1, le=1000, description="concurrent preview streams per camera"
    )
    analysis_per_minute: float = Field(
        default=120.0,
        gt=0,
        le=1_000_000,
        description="face-analysis requests (identify, verify, enrol) per minute per client "
        "address; beyond it 429 with Retry-After",
    )
    analysis_burst: int = Field(
        default=20, ge=1, le=100_000, description="analysis requests a client may send at once"
    )


AUDIT_KEY_ENVIRONMENT = "FACESTREAM_AUDIT_KEY"


class AuditConfig(StrictModel):
    """The hash-chained decision log."""

    path: Path | None = Field(
        default=None, description="JSON-lines file; default data_dir/audit/decisions.jsonl"
    )
    key: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="HMAC key of the chain (16+ characters; keep it away from the log: "
        "FACESTREAM_AUDIT_KEY or a file named by FACESTREAM_AUDIT_KEY_FILE win, or key_file); "
        "without one, whoever can write the log can rewrite it unseen",
    )
    key_file: Path | None = Field(
        default=None, description="file holding the audit key (a mounted Kubernetes Secret)"
    )
    checkpoint_interval_seconds: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        description="how often the audit head (seq, digest, MAC) is published as an "
        "audit_checkpoint event, anchoring the log outside the machine",
    )
    _key: SecretStr | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _key_resolves(self) -> AuditConfig:
        key = resolve_secret(
            SecretSpec("audit.key", AUDIT_KEY_ENVIRONMENT, self.key_file, self.key)
        )
        if key is not None and len(key.get_secret_value()) < 16:
            raise ValueError("audit key: expected at least 16 characters")
        self._key = key
        return self

    @property
    def key_bytes(self) -> bytes | None:
        """The audit key (environment, file or config), or None when none is set."""
        return None if self._key is None else self._key.get_secret_value().encode()


class FaceStreamConfig(StrictModel):
    """The whole service configuration."""

    data_dir: Path = Field(
        default=Path("data"), description="models, compiled plans and the embedded Redis live here"
    )
    engine: EngineConfig = EngineConfig()
    capture: CaptureConfig = CaptureConfig()
    gallery: GalleryConfig = GalleryConfig()
    feedback: FeedbackConfig = FeedbackConfig()
    unknowns: UnknownsConfig = UnknownsConfig()
    detect: DetectConfig = BlazeFaceConfig()
    enroll: EnrollConfig = EnrollConfig()
    recognition: RecognitionConfig = RecognitionConfig()
    liveness: LivenessConfig = LivenessConfig()
    events: EventsConfig = EventsConfig()
    api: ApiConfig = ApiConfig()
    audit: AuditConfig = AuditConfig()
    mqtt: MqttConfig = MqttConfig()
    doors: list[DoorConfig] = Field(
        default_factory=list, max_length=1024, description="doors (or zones) and their policy"
    )

    @model_validator(mode="before")
    @classmethod
    def _process_section_renamed(cls, data: Any) -> Any:
        """``[process]`` is the old name of ``[recognition]`` (it held the live settings too):
        still read, with a warning, so existing config files keep working."""
        if isinstance(data, dict) and "process" in data:
            if "recognition" in data:
                raise ValueError("give [recognition] or its old name [process], not both")
            _log.warning("config: [process] is now called [recognition]; rename the section")
            data = {
                ("recognition" if key == "process" else key): value for key, value in data.items()
            }
        return data

    @property
    def audit_path(self) -> Path:
        """Where decisions are logged."""
        return self.audit.path or self.data_dir / "audit" / "decisions.jsonl"

    def printable(self) -> dict[str, object]:
        """The resolved settings as JSON-able values for people to read (``facestream
        check-config``): secret fields print as ``**********``, passwords and credential query
        values inside URLs (gallery.redis_url, cameras, webhooks, MQTT) as ``***``."""
        return cast(dict[str, object], _redacted_values(self.model_dump(mode="json")))

    def warnings(self) -> list[str]:
        """What is valid but probably a mistake, one line each: a door watching a camera id
        that ``capture.cameras`` does not list (not an error, since a camera may be added at
        run time (POST /v1/streams); until one is, that door decides nothing), and a door that
        opted out of liveness (``require_liveness = false``)."""
        known = [camera.id for camera in self.capture.cameras]
        lines = []
        for door in self.doors:
            for camera_id in door.cameras:
                if camera_id in known:
                    continue
                close = difflib.get_close_matches(camera_id, known, n=1)
                lines.append(
                    f"door {door.id!r} watches camera {camera_id!r}, which capture.cameras does "
                    f"not list (known: {', '.join(map(repr, known)) or 'none'}); the door "
                    "decides nothing until a camera with that id is added through the API"
                    + (f"; did you mean {close[0]!r}?" if close else "")
                )
        lines.extend(
            f"door {door.id!r} does not require liveness (require_liveness = false): a printed "
            "photo or a phone replay of an enrolled face opens it"
            for door in self.doors
            if not door.require_liveness
        )
        return lines

    @model_validator(mode="after")
    def _unique_doors(self) -> FaceStreamConfig:
        ids = [door.id for door in self.doors]
        repeated = sorted({door_id for door_id in ids if ids.count(door_id) > 1})
        if repeated:
            raise ValueError(f"door ids must be unique; repeated: {', '.join(repeated)}")
        return self

    @model_validator(mode="after")
    def _one_osdp_address_per_bus(self) -> FaceStreamConfig:
        seen: dict[tuple[str, int], str] = {}
        for index, door in enumerate(self.doors):
            for name, link in (("osdp", door.osdp), ("card_reader", door.card_reader)):
                if link is None:
                    continue
                where = f"doors.{index}.{name}.address"
                bus = (link.channel.bus, link.address)
                if bus in seen:
                    raise ValueError(
                        f"{where}: PD address {link.address} on {link.channel.bus} is already "
                        f"used by {seen[bus]}; each reader on one bus needs its own address"
                    )
                seen[bus] = where
        return self

    @model_validator(mode="after")
    def _liveness_for_doors_that_need_it(self) -> FaceStreamConfig:
        needing = [
            f"doors.{index}.require_liveness ({door.id})"
            for index, door in enumerate(self.doors)
            if door.require_liveness
        ]
        if needing and not self.liveness.enabled:
            raise ValueError(
                f"{', '.join(needing)} is true (the default) but liveness.enabled is false: "
                "set liveness.enabled = true, or require_liveness = false in the door's section "
                "to let photos and screens through"
            )
        return self


def load_config(path: Path | None) -> FaceStreamConfig:
    """Read and validate a TOML config file; ``None`` gives the embedded defaults."""
    if path is None:
        return FaceStreamConfig()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigFileError(f"{path}: config file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"{path}: cannot read the config file: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path}: not valid TOML: {exc}") from exc
    try:
        config = FaceStreamConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigFileError(f"{path}: {_problems(exc)}") from exc
    for line in config.warnings():
        _log.warning("%s: %s", path, line)
    return config


def _problems(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or '(top level)'}: {item['msg']}"
        for item in error.errors()
    )


BACKEND_ALIASES = {"ort": "onnxruntime", "trt": "tensorrt"}


def with_engine_overrides(config: FaceStreamConfig, **overrides: str | None) -> FaceStreamConfig:
    """``config`` with engine fields replaced (command-line options); None leaves a field as is.

    Backend aliases ``ort`` and ``trt`` are accepted. Invalid values raise ConfigError.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    if "backend" in given:
        given["backend"] = BACKEND_ALIASES.get(given["backend"], given["backend"])
    if not given:
        return config
    try:
        engine = EngineConfig.model_validate({**config.engine.model_dump(), **given})
    except ValidationError as exc:
        raise ConfigError(f"engine option: {_problems(exc)}") from exc
    return config.model_copy(update={"engine": engine})
