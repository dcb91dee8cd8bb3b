"""Redis Cluster on real processes: three masters on 127.0.0.1 (redis-server
--cluster-enabled yes, joined by redis-cli --cluster create) behind the real service. Real
faces are enrolled and identified over HTTP, events go through the stream, the webhook outbox
(Lua) and two consumer groups, an operator's feedback is written; the keys land on more than
one master, each room's keys in one slot. A killed master is a visible fault: /readyz names
it, an enrolment is refused with 503 and nothing is half-written. Cluster URLs that are
malformed, reach the network without a password or name a plain Redis are clear errors."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import cast

import httpx
import numpy as np
import pytest
import redis
from cluster_support import RedisClusterGroup
from ports import free_port
from redis.crc import key_slot
from sentinel_support import RedisProcess
from typer.testing import CliRunner
from waiting import wait_until

from engines.errors import ConfigError
from pipeline.cli.main import app as cli_app
from pipeline.config.service import ApiConfig, FaceStreamConfig, GalleryConfig
from pipeline.errors import GalleryNotReplicatedError, GalleryUnavailableError
from pipeline.events.config import EventsConfig
from pipeline.gallery.model import Enrollment
from pipeline.gallery.store import Gallery, connect
from pipeline.liveness.config import LivenessConfig
from pipeline.metrics import PipelineMetrics
from pipeline.redis.cluster import parse_cluster_url
from pipeline.service.service import FaceStreamService, run_service
from pipeline.types import Decision, Embeddings, Event

ServeApi = Callable[[FaceStreamService, str], AbstractContextManager[str]]
TOKEN = "cluster-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WEBHOOK_SECRET = "cluster-test-webhook-secret-0123456789"
TRAIN = Path("faces/face_recognition/examples/knn_examples/train")
# identity -> (enrolment photo, another photo of the same person to identify)
PEOPLE = {
    "barack_obama": ("obama/obama.jpg", "obama/obama2.jpg"),
    "joe_biden": ("biden/biden.jpg", "biden/biden2.jpg"),
    "rose_leslie": ("rose_leslie/img1.jpg", "rose_leslie/img2.jpg"),
    "kit_harington": ("kit_harington/john1.jpeg", "kit_harington/john2.jpeg"),
}
EVENT_COUNT = 6
RECOVERY_TIMEOUT_SECONDS = 20.0
cli = CliRunner()


# -- the URL ----------------------------------------------------------------------------------


def test_cluster_url_names_its_nodes_and_credentials() -> None:
    parsed = parse_cluster_url("redis+cluster://facestream:s%40cret@10.0.0.1:7000,node-b:7001")
    assert parsed.nodes == (("10.0.0.1", 7000), ("node-b", 7001))
    assert (parsed.username, parsed.password) == ("facestream", "s@cret")
    assert "s@cret" not in parsed.describe()
    assert "s@cret" not in repr(parsed)


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://",  # no node
        "redis+cluster://127.0.0.1",  # no port
        "redis+cluster://127.0.0.1:0",  # port out of range
        "redis+cluster://127.0.0.1:7000,:7001",  # a node without host
        "redis+cluster://127.0.0.1:7000/0",  # a database: a Cluster has only one
    ],
)
def test_cluster_url_malformed_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="redis\\+cluster://"):
        parse_cluster_url(url)


def test_cluster_url_check_config_accepts_it_and_names_a_malformed_one(tmp_path: Path) -> None:
    """`facestream check-config` (and so `doctor`, which loads the same file) takes a Cluster
    URL, hides its password, and refuses a malformed one naming the node and the form."""
    good = tmp_path / "good.toml"
    good.write_text(
        '[gallery]\nredis_url = "redis+cluster://fs:hunter2@10.0.0.1:7000,10.0.0.2:7000"\n'
    )
    result = cli.invoke(cli_app, ["check-config", str(good)])
    assert result.exit_code == 0, result.output
    assert "redis+cluster://fs:***@10.0.0.1:7000,10.0.0.2:7000" in result.output
    assert "hunter2" not in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text('[gallery]\nredis_url = "redis+cluster://10.0.0.1:7000,10.0.0.2"\n')
    for command in (["check-config", str(bad)], ["doctor", "--config", str(bad)]):
        result = cli.invoke(cli_app, command)
        assert result.exit_code != 0, result.output
        assert "node '10.0.0.2' is not host:port" in result.output, result.output


def test_cluster_url_over_the_network_without_password_is_refused() -> None:
    with pytest.raises(ConfigError, match="no password"):
        connect("redis+cluster://127.0.0.1:7000,10.9.8.7:7000", GalleryConfig())


def test_cluster_url_naming_a_plain_redis_is_a_config_error(tmp_path: Path) -> None:
    conf = tmp_path / "redis.conf"
    port = free_port()
    conf.write_text(f'bind 127.0.0.1\nport {port}\ndir {tmp_path}\nsave ""\n')
    plain = RedisProcess(port, conf)
    try:
        plain.start()
        with pytest.raises(ConfigError, match="not a Cluster"):
            connect(f"redis+cluster://127.0.0.1:{port}", GalleryConfig(socket_timeout_seconds=2))
    finally:
        plain.kill()


def test_cluster_url_with_no_node_answering_is_unavailable() -> None:
    with pytest.raises(GalleryUnavailableError, match="no Redis Cluster node answered"):
        connect(f"redis+cluster://127.0.0.1:{free_port()}", GalleryConfig(socket_timeout_seconds=1))


# -- WAIT on the slot's master -----------------------------------------------------------------


def _template(seed: int, model_id: str = "test-model") -> Embeddings:
    vector = np.random.default_rng(seed).normal(size=(1, 128)).astype(np.float32)
    return Embeddings(vector / np.linalg.norm(vector), model_id=model_id)


@pytest.mark.timeout(60)
def test_cluster_wait_counts_the_replicas_of_the_gallery_slot_master(tmp_path: Path) -> None:
    """With min_replicas_acked = 1, an enrolment is refused while the master owning the
    gallery's slot has no replica, and acknowledged once it has one, which then holds it."""
    # the first write after a replica joins may wait for its once-a-second ACK (measured up to
    # 0.94 s here; later writes 1-2 ms): 2 s, so the test does not race that cycle
    config = GalleryConfig(
        socket_timeout_seconds=3.0, min_replicas_acked=1, replica_ack_timeout_seconds=2.0
    )
    with RedisClusterGroup(tmp_path / "cluster") as cluster:
        client = connect(cluster.url, config)
        try:
            gallery = Gallery(
                client, PipelineMetrics.create(), model_id="test-model", config=config
            )
            with pytest.raises(GalleryNotReplicatedError, match=r"0 replica\(s\) confirmed"):
                gallery.enroll(Enrollment("lone", _template(1), identity_id="lone"))
            owner = cluster.master_of_slot(key_slot(b"gallery"))
            replica = cluster.add_replica(owner)
            gallery.enroll(Enrollment("copied", _template(2), identity_id="copied"))
            with replica.client() as replica_client:
                replica_client.execute_command("READONLY")
                assert replica_client.hexists("fs:{gallery}:identities", "copied")
        finally:
            client.close()


# -- the service on a Cluster ------------------------------------------------------------------


class _Receiver(BaseHTTPRequestHandler):
    """Records the event id of every webhook POST (the server's ``received`` list)."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        cast(_ReceiverServer, self.server).received.append(json.loads(body)["event_id"])
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads ``received``."""


class _ReceiverServer(ThreadingHTTPServer):
    received: list[str]


@pytest.fixture(scope="module")
def receiver() -> Iterator[_ReceiverServer]:
    """A webhook receiver on 127.0.0.1 (port 0), stopped at teardown."""
    server = _ReceiverServer(("127.0.0.1", 0), _Receiver)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterGroup]:
    """Three masters, no replica, killed at teardown."""
    with RedisClusterGroup(tmp_path_factory.mktemp("cluster")) as group:
        yield group


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory,
    cluster: RedisClusterGroup,
    receiver: _ReceiverServer,
) -> Iterator[FaceStreamService]:
    """The whole service with its gallery, events and webhook outbox on the Cluster."""
    config = FaceStreamConfig(
        data_dir=tmp_path_factory.mktemp("data"),
        gallery=GalleryConfig(
            redis_url=cluster.url, socket_timeout_seconds=2.0, resync_interval_seconds=0.2
        ),
        events=EventsConfig(
            webhooks=(
                {
                    "url": f"http://127.0.0.1:{receiver.server_address[1]}/hook",
                    "secret": WEBHOOK_SECRET,
                },
            ),
            poll_interval_seconds=0.05,
        ),
        api=ApiConfig(analysis_per_minute=100_000, analysis_burst=1000),
        liveness=LivenessConfig(enabled=False),  # not about liveness: these are photos
    )
    with run_service(config) as running:
        yield running


@pytest.fixture(scope="module")
def http(service: FaceStreamService, serve_api: ServeApi) -> Iterator[httpx.Client]:
    with serve_api(service, TOKEN) as url, httpx.Client(base_url=url, timeout=30.0) as client:
        yield client


def _photo(shared_data: Path, relative: str) -> bytes:
    return (shared_data / TRAIN / relative).read_bytes()


def _enrol(http: httpx.Client, name: str, photo: bytes) -> httpx.Response:
    return http.post(
        "/v1/identities",
        data={"name": name, "identity_id": name},
        files=[("images", ("photo.jpg", photo, "image/jpeg"))],
        headers=AUTH,
    )


def _keys_of(master: RedisProcess) -> set[str]:
    """Every key one master holds (a keyspace-wide listing must scan each master)."""
    with master.client() as client:
        return {key.decode() for key in client.scan_iter(count=1000)}


def _keys_by_master(cluster: RedisClusterGroup) -> dict[int, set[str]]:
    """Every key of every master, by port."""
    return {master.port: _keys_of(master) for master in cluster.masters}


def _consume_once_per_group(
    client: redis.RedisCluster, stream: str, group: str, consumers: tuple[str, ...]
) -> list[str]:
    """Read ``stream`` through consumer ``group`` with several consumers taking turns (two
    entries each), acknowledging what each read; returns the event ids read, in order."""
    client.xgroup_create(stream, group, id="0")
    read: list[str] = []
    while True:
        got = 0
        for consumer in consumers:
            reply = client.xreadgroup(group, consumer, {stream: ">"}, count=2)
            for _, entries in cast(
                list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]], reply or []
            ):
                for entry_id, fields in entries:
                    read.append(Event.from_stream_fields(fields).event_id)
                    client.xack(stream, group, entry_id)
                    got += 1
        if got == 0:
            return read


@pytest.mark.timeout(90)
def test_cluster_service_enrols_identifies_and_publishes_across_masters(
    service: FaceStreamService,
    http: httpx.Client,
    cluster: RedisClusterGroup,
    receiver: _ReceiverServer,
    shared_data: Path,
) -> None:
    """Through the real service on a 3-master Cluster: real faces enrolled and identified,
    events published once (a retried publish writes nothing), read exactly once per consumer
    group, delivered to the webhook (the outbox's Lua scripts), a feedback written; the keys
    spread over more than one master, and each room's keys (one hash tag) share one slot."""
    ready = http.get("/readyz")
    assert ready.status_code == 200, ready.text
    for name, (enrol_photo, _) in PEOPLE.items():
        enrolled = _enrol(http, name, _photo(shared_data, enrol_photo))
        assert enrolled.status_code == 201, enrolled.text
    for name, (_, other_photo) in PEOPLE.items():
        found = http.post(
            "/v1/identify",
            files={"image": ("probe.jpg", _photo(shared_data, other_photo), "image/jpeg")},
            headers=AUTH,
        )
        assert found.status_code == 200, found.text
        matches = found.json()["matches"]
        assert matches, f"{name}'s other photo matched nobody"
        assert matches[0]["identity_id"] == name, matches

    # a second gallery process follows the first one's changes (SPUBLISH/SSUBSCRIBE)
    follower_client = connect(cluster.url, service.config.gallery)
    try:
        follower = Gallery(
            follower_client,
            PipelineMetrics.create(),
            model_id=service.services.gallery.model_id,
            config=service.config.gallery,
        )
        with follower:
            assert follower.identity_count == len(PEOPLE)
            extra = service.services.gallery.enroll(
                Enrollment("late", _template(9, follower.model_id), identity_id="late")
            )
            wait_until(
                lambda: follower.identity_count == len(PEOPLE) + 1,
                5.0,
                "the follower applies the change it was told of",
            )
            service.services.gallery.remove(extra.identity_id)
            wait_until(lambda: follower.identity_count == len(PEOPLE), 5.0, "the follower drops it")
    finally:
        follower_client.close()

    # events: published once, each read once by each consumer group, delivered by webhook
    published = [service.recorder.publish_checkpoint() for _ in range(EVENT_COUNT)]
    service.recorder.flush()
    assert service.bus.publish(published[0]) is None  # a retried publish writes nothing
    published_ids = [event.event_id for event in published]
    client = service.services.redis
    assert isinstance(client, redis.RedisCluster)
    stream = service.bus.stream_key
    for group in ("doors", "archive"):
        read = _consume_once_per_group(client, stream, group, ("one", "two"))
        counts = Counter(read)
        assert all(counts[event_id] == 1 for event_id in published_ids), (group, counts)
        assert max(counts.values()) == 1, (group, counts)
    wait_until(
        lambda: set(published_ids) <= set(receiver.received),
        10.0,
        "every event delivered to the webhook",
    )
    wait_until(lambda: service.bus.pending_deliveries() == 0, 10.0, "the outbox drained")

    # feedback: a decision's probe is kept and an operator's correction written (one slot)
    gallery = service.services.gallery
    stored = gallery.templates_of_model(gallery.model_id)["joe_biden"]
    template_id, vector = next(iter(stored.items()))
    probe = np.frombuffer(vector, dtype="<f4").astype(np.float32)
    decision = Decision(
        door_id="lab",
        camera_id="front",
        track_id=1,
        outcome="granted",
        identity_id="joe_biden",
        name="joe_biden",
        distance=0.0,
        votes=3,
        at=1.0,
        template_id=template_id,
        probe=probe,
    )
    assert service.feedback_store.remember(decision)
    answer = http.post(
        f"/v1/decisions/{decision.event_id}/feedback", json={"correct": False}, headers=AUTH
    )
    assert answer.status_code == 200, answer.text
    assert gallery.get("joe_biden").negatives == 1

    # where the keys are: more than one master; one slot (and master) per hash tag
    by_master = _keys_by_master(cluster)
    assert sum(1 for keys in by_master.values() if keys) > 1, by_master
    slots_by_tag: dict[str, set[int]] = {}
    masters_by_tag: dict[str, set[int]] = {}
    for port, keys in by_master.items():
        for key in keys:
            tag_match = re.match(r"fs:\{([^}]+)\}:", key)
            assert tag_match is not None, f"key without a hash tag: {key}"
            tag = tag_match.group(1)
            slots_by_tag.setdefault(tag, set()).add(key_slot(key.encode()))
            masters_by_tag.setdefault(tag, set()).add(port)
    assert {"gallery", "events"} <= set(slots_by_tag), slots_by_tag
    assert all(len(slots) == 1 for slots in slots_by_tag.values()), slots_by_tag
    assert all(len(ports) == 1 for ports in masters_by_tag.values()), masters_by_tag
    assert masters_by_tag["gallery"] != masters_by_tag["events"]


@pytest.mark.timeout(90)
def test_cluster_master_down_is_visible_and_refuses_enrolment_whole(
    service: FaceStreamService,
    http: httpx.Client,
    cluster: RedisClusterGroup,
    shared_data: Path,
) -> None:
    """kill -9 of the master owning the gallery's slot: /readyz is 503 and names that master;
    an enrolment is refused with 503 and a reason, never acknowledged; the other masters hold
    no part of it. Restarted (its append-only file), the master has every earlier identity and
    not the refused one, and the service is ready and enrols again."""
    owner = cluster.master_of_slot(key_slot(b"gallery"))
    if not service.services.gallery.identity_count:  # run alone: someone to keep
        name, (photo, _) = next(iter(PEOPLE.items()))
        assert _enrol(http, name, _photo(shared_data, photo)).status_code == 201
    with owner.client() as client:
        version_before = client.get("fs:{gallery}:version")
        identities_before = {key.decode() for key in client.hkeys("fs:{gallery}:identities")}
    assert identities_before
    others = [master for master in cluster.masters if master is not owner]

    owner.kill()
    ready = http.get("/readyz")
    assert ready.status_code == 503, ready.text
    assert ready.json()["redis"] is False
    assert f"127.0.0.1:{owner.port}" in (ready.json()["detail"] or ""), ready.json()

    refused = _enrol(http, "alex_lacamoire", _photo(shared_data, "alex_lacamoire/img1.jpg"))
    assert refused.status_code == 503, refused.text
    assert "Redis" in refused.json()["detail"], refused.json()
    # no half of the enrolment went elsewhere: the other masters hold no gallery key at all
    for master in others:
        assert not [key for key in _keys_of(master) if key.startswith("fs:{gallery}:")]

    owner.start()
    wait_until(cluster.state_ok, RECOVERY_TIMEOUT_SECONDS, "cluster_state:ok after the restart")
    with owner.client() as client:
        assert client.get("fs:{gallery}:version") == version_before
        identities_after = {key.decode() for key in client.hkeys("fs:{gallery}:identities")}
    assert identities_after == identities_before
    wait_until(
        lambda: http.get("/readyz").status_code == 200,
        RECOVERY_TIMEOUT_SECONDS,
        "/readyz ready again",
    )
    again = _enrol(http, "alex_lacamoire", _photo(shared_data, "alex_lacamoire/img1.jpg"))
    assert again.status_code == 201, again.text
