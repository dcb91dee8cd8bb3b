"""Redis high availability on real processes: a gallery behind Sentinel keeps every
acknowledged enrolment through a kill -9 of the master and follows the promoted replica; a
write no replica confirmed in time is refused, never acknowledged; Sentinel URLs that are
malformed, name an unknown master or reach the network without a password are clear errors."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from ports import free_port
from sentinel_support import RedisProcess, SentinelGroup
from waiting import wait_until

from engines.errors import ConfigError
from pipeline.config.service import GalleryConfig
from pipeline.errors import (
    GalleryNotReplicatedError,
    GalleryUnavailableError,
    IdentityExistsError,
)
from pipeline.gallery.model import Enrollment
from pipeline.gallery.store import Gallery, connect
from pipeline.metrics import PipelineMetrics
from pipeline.redis.ha import parse_sentinel_url
from pipeline.redis.server import EmbeddedRedis
from pipeline.types import Embeddings

MODEL_ID = "test-model"
FAILOVER_TIMEOUT_SECONDS = 30.0
REJOIN_TIMEOUT_SECONDS = 30.0


def _template(seed: int) -> Embeddings:
    vector = np.random.default_rng(seed).normal(size=(1, 128)).astype(np.float32)
    return Embeddings(vector / np.linalg.norm(vector), model_id=MODEL_ID)


def _enrolment(number: int) -> Enrollment:
    return Enrollment(
        name=f"person {number}", embeddings=_template(number), identity_id=f"p{number}"
    )


def _ha_config() -> GalleryConfig:
    return GalleryConfig(
        socket_timeout_seconds=2.0,
        resync_interval_seconds=0.2,
        min_replicas_acked=1,
        replica_ack_timeout_seconds=0.5,
    )


# -- the URL ----------------------------------------------------------------------------------


def test_sentinel_url_names_its_sentinels_master_and_credentials() -> None:
    parsed = parse_sentinel_url(
        "redis+sentinel://facestream:s%40cret@10.0.0.1:26379,sen-b:26380/gallery"
    )
    assert parsed.sentinels == (("10.0.0.1", 26379), ("sen-b", 26380))
    assert parsed.master_name == "gallery"
    assert (parsed.username, parsed.password) == ("facestream", "s@cret")
    assert "s@cret" not in parsed.describe()
    assert "s@cret" not in repr(parsed)


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://127.0.0.1:26379",  # no master name
        "redis+sentinel://127.0.0.1:26379/",  # empty master name
        "redis+sentinel:///facestream",  # no sentinel
        "redis+sentinel://127.0.0.1/facestream",  # no port
        "redis+sentinel://127.0.0.1:0/facestream",  # port out of range
        "redis+sentinel://127.0.0.1:26379,:26380/facestream",  # a sentinel without host
    ],
)
def test_sentinel_url_malformed_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="redis\\+sentinel://"):
        parse_sentinel_url(url)


def test_sentinel_url_over_the_network_without_password_is_refused() -> None:
    with pytest.raises(ConfigError, match="no password"):
        connect("redis+sentinel://127.0.0.1:26379,10.9.8.7:26379/facestream", GalleryConfig())


def test_sentinel_url_naming_an_unknown_master_is_a_config_error(tmp_path: Path) -> None:
    conf = tmp_path / "sentinel.conf"
    port = free_port()
    conf.write_text(
        f"bind 127.0.0.1\nport {port}\ndir {tmp_path}\n"
        f"sentinel monitor facestream 127.0.0.1 {free_port()} 1\n"
    )
    sentinel = RedisProcess(port, conf, sentinel=True)
    try:
        sentinel.start()
        with pytest.raises(ConfigError, match=r"no sentinel .* monitors a master named 'nosuch'"):
            connect(f"redis+sentinel://127.0.0.1:{port}/nosuch", GalleryConfig())
        # the right name connects (the master itself being down is another matter)
        connect(f"redis+sentinel://127.0.0.1:{port}/facestream", GalleryConfig()).close()
    finally:
        sentinel.kill()


def test_sentinel_url_with_no_sentinel_answering_is_unavailable() -> None:
    with pytest.raises(GalleryUnavailableError, match="no sentinel answered"):
        connect(
            f"redis+sentinel://127.0.0.1:{free_port()}/facestream",
            GalleryConfig(socket_timeout_seconds=1.0),
        )


def test_failover_config_wait_must_fit_in_the_socket_timeout() -> None:
    with pytest.raises(ValueError, match="replica_ack_timeout_seconds"):
        GalleryConfig(
            min_replicas_acked=1, socket_timeout_seconds=1.0, replica_ack_timeout_seconds=2.0
        )


# -- WAIT -------------------------------------------------------------------------------------


def test_failover_wait_without_replica_refuses_the_enrolment(server: EmbeddedRedis) -> None:
    """A lone Redis has no replica: with min_replicas_acked = 1 an enrolment is refused with
    GalleryNotReplicatedError (a GalleryUnavailableError: the API's 503), naming the reason."""
    config = GalleryConfig(
        socket_timeout_seconds=2.0, min_replicas_acked=1, replica_ack_timeout_seconds=0.2
    )
    client = connect(server.url, config)
    try:
        gallery = Gallery(client, PipelineMetrics.create(), model_id=MODEL_ID, config=config)
        with pytest.raises(GalleryNotReplicatedError, match=r"0 replica.*min_replicas_acked = 1"):
            gallery.enroll(_enrolment(1))
        assert issubclass(GalleryNotReplicatedError, GalleryUnavailableError)
        # without the requirement the same Redis acknowledges at once
        plain = Gallery(client, PipelineMetrics.create(), model_id=MODEL_ID)
        assert plain.enroll(_enrolment(2)).identity_id == "p2"
    finally:
        client.close()


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A master, one replica and three sentinels on 127.0.0.1, killed at teardown."""
    with SentinelGroup(tmp_path / "ha") as group:
        yield group


def test_sentinel_enrolment_is_acknowledged_once_the_replica_has_it(
    sentinel_group: SentinelGroup,
) -> None:
    client = connect(sentinel_group.url, _ha_config())
    try:
        gallery = Gallery(client, PipelineMetrics.create(), model_id=MODEL_ID, config=_ha_config())
        gallery.enroll(_enrolment(7))
        with sentinel_group.replicas[0].client() as replica:
            assert replica.hexists("fs:{gallery}:identities", "p7")
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sentinel_failover_keeps_every_acknowledged_enrolment(
    sentinel_group: SentinelGroup,
) -> None:
    """Enrolments run while the master is killed with SIGKILL: every one the gallery
    acknowledged is on the promoted replica; the gallery follows the new master, refuses
    writes while no replica confirms them, and enrols and identifies again once the old master
    is back as a replica."""
    config = _ha_config()
    client = connect(sentinel_group.url, config)
    acknowledged: list[str] = []
    refused: list[str] = []
    crashed: list[str] = []
    stop = threading.Event()

    def enrol_continuously(gallery: Gallery) -> None:
        number = 0
        while not stop.is_set():
            number += 1
            try:
                gallery.enroll(_enrolment(number))
                acknowledged.append(f"p{number}")
            except GalleryUnavailableError:  # includes GalleryNotReplicatedError
                refused.append(f"p{number}")
                stop.wait(0.05)
            except IdentityExistsError:
                # the EXEC reached the dying master's replica but its answer was lost; the
                # retry (on the new master) finds the identity there: not acknowledged, kept
                refused.append(f"p{number}")
            except Exception as exc:  # reported by the test, not lost in a dead thread
                crashed.append(repr(exc))
                return

    try:
        with Gallery(client, PipelineMetrics.create(), model_id=MODEL_ID, config=config) as gallery:
            writer = threading.Thread(target=enrol_continuously, args=(gallery,), daemon=True)
            writer.start()
            wait_until(
                lambda: len(acknowledged) >= 20 or bool(crashed), 20.0, "20 enrolments acked"
            )
            assert not crashed
            old_master = sentinel_group.master
            old_master.kill()
            wait_until(
                lambda: (
                    sentinel_group.master_port_by_sentinels() == sentinel_group.replicas[0].port
                ),
                FAILOVER_TIMEOUT_SECONDS,
                "the sentinels promote the replica",
            )
            # the promoted replica has no replica of its own: writes are refused, not acked
            wait_until(
                lambda: len(refused) >= 3 or bool(crashed),
                20.0,
                "writes refused after the failover",
            )
            assert not crashed
            acked_before_rejoin = len(acknowledged)
            # it comes back empty, as a replica of the master the sentinels name (what a
            # Redis pod's start script does; the sentinels' own conversion waits for their
            # timers, and longer when a busy machine puts them in TILT mode)
            new_port = sentinel_group.replicas[0].port
            old_master.start("--replicaof", "127.0.0.1", str(new_port))
            with sentinel_group.replicas[0].client() as new_master:
                wait_until(
                    lambda: new_master.info("replication").get("connected_slaves", 0) >= 1,
                    REJOIN_TIMEOUT_SECONDS,
                    "the old master rejoins as a replica",
                )
            wait_until(
                lambda: len(acknowledged) >= acked_before_rejoin + 5 or bool(crashed),
                20.0,
                "enrolments acknowledged again after the rejoin",
            )
            stop.set()
            writer.join(10)
            assert not writer.is_alive()
            assert not crashed, f"the enrolling thread failed: {crashed}"

            with sentinel_group.replicas[0].client() as new_master:
                stored = {key.decode() for key in new_master.hkeys("fs:{gallery}:identities")}
            lost = [identity for identity in acknowledged if identity not in stored]
            assert not lost, f"acknowledged enrolments lost in the failover: {lost}"
            assert refused, "no write was refused while no replica could confirm it"

            # the index (its sync thread follows the new master) holds every one of them
            wait_until(
                lambda: gallery.version == int(new_master_version(sentinel_group)),
                20.0,
                "the index catches up with the new master",
            )
            for identity in acknowledged[-3:] + acknowledged[:3]:
                number = int(identity[1:])
                best = gallery.identify(_template(number), top_k=1, max_distance=0.01).best()[0]
                assert best is not None
                assert best.identity_id == identity
            # and a fresh gallery through the same URL finds them too
            fresh_client = connect(sentinel_group.url, config)
            try:
                fresh = Gallery(fresh_client, PipelineMetrics.create(), model_id=MODEL_ID)
                assert {item.identity_id for item in fresh.list_identities()} >= set(acknowledged)
            finally:
                fresh_client.close()
    finally:
        stop.set()
        client.close()


def new_master_version(group: SentinelGroup) -> int:
    """The gallery version stored on the promoted replica."""
    with group.replicas[0].client() as promoted:
        value = promoted.get("fs:{gallery}:version")
    return int(value or 0)


def test_sentinel_client_reports_a_dead_master_as_unavailable(
    sentinel_group: SentinelGroup,
) -> None:
    """Before a failover completes, a gallery read is a GalleryUnavailableError, not a hang."""
    config = _ha_config()
    client = connect(sentinel_group.url, config)
    try:
        gallery = Gallery(client, PipelineMetrics.create(), model_id=MODEL_ID, config=config)
        sentinel_group.master.kill()
        sentinel_group.replicas[0].kill()
        with pytest.raises(GalleryUnavailableError):
            gallery.list_identities()
    except redis.RedisError as exc:  # pragma: no cover - a raw redis-py error is the bug
        pytest.fail(f"redis-py error escaped the gallery: {exc!r}")
    finally:
        client.close()
