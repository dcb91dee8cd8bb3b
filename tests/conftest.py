"""Shared fixtures: the real encoder built into a temporary store, dlib as the oracle, and
real face chips (from ../shared/data when present, plus scikit-image's public-domain astronaut)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import redis
import uvicorn

from engines.convert.parity import DlibOracle, astronaut_rgb, image_files, read_rgb
from engines.models.encoder import build_encoder_onnx
from engines.runtime.onnxrt import OrtEngine, OrtSettings
from engines.store import ModelStore, StoredModel, default_encoder_source, installed_dlib_model
from pipeline.config.service import GalleryConfig
from pipeline.gallery.store import connect
from pipeline.metrics import PipelineMetrics
from pipeline.redis.server import EmbeddedRedis
from pipeline.service.http.app import create_app, uvicorn_config
from pipeline.service.service import FaceStreamService

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
API_START_TIMEOUT_SECONDS = 10.0


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or a skip when this machine does not have it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def session_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """A model store holding the converted encoder, shared by the whole session."""
    store = ModelStore(tmp_path_factory.mktemp("store"))
    build_encoder_onnx(store)
    return store


@pytest.fixture(scope="session")
def encoder_model(session_store: ModelStore) -> StoredModel:
    """The converted encoder ONNX with its manifest."""
    return build_encoder_onnx(session_store)


@pytest.fixture
def ort_engine(session_store: ModelStore, encoder_model: StoredModel) -> Iterator[OrtEngine]:
    """A fresh ONNX Runtime CPU engine on the converted encoder."""
    with OrtEngine(encoder_model.path, session_store, OrtSettings(intra_op_threads=2)) as engine:
        yield engine


@pytest.fixture(scope="session")
def oracle() -> DlibOracle:
    """dlib's detector, aligner and encoder (the reference implementation)."""
    return DlibOracle(
        encoder_path=default_encoder_source(),
        predictor_path=installed_dlib_model("shape_predictor_5_face_landmarks.dat"),
    )


@pytest.fixture(scope="session")
def astronaut_chips(oracle: DlibOracle) -> list[npt.NDArray[np.uint8]]:
    """Chips cut from scikit-image's astronaut photo (public domain, ships with the package)."""
    chips = oracle.chips(astronaut_rgb())
    assert chips, "dlib found no face in the astronaut photo"
    return chips


@pytest.fixture(scope="session")
def face_chips(
    oracle: DlibOracle, shared_data: Path, astronaut_chips: list[npt.NDArray[np.uint8]]
) -> list[npt.NDArray[np.uint8]]:
    """At least 30 real face chips: every face dlib finds in ../shared/data/faces, + astronaut."""
    chips = list(astronaut_chips)
    for path in image_files([shared_data / "faces"]):
        chips.extend(oracle.chips(read_rgb(path), upsample=0))
        if len(chips) >= 64:
            break
    assert len(chips) >= 30, f"only {len(chips)} chips found in {shared_data / 'faces'}"
    return chips


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A ready embedded redis-server (AOF on) under tmp_path, stopped at teardown: the
    service's own launcher, as the service uses it."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with EmbeddedRedis(tmp_path / "redis") as embedded:
        embedded.wait_ready(timeout_seconds=10.0)
        yield embedded


@pytest.fixture
def clients(server: EmbeddedRedis) -> Iterator[Callable[[], redis.Redis]]:
    """A factory of fresh Redis clients (one per simulated process), all closed at teardown."""
    made: list[redis.Redis] = []

    def make() -> redis.Redis:
        client = connect(server.url, GalleryConfig(socket_timeout_seconds=2.0))
        assert isinstance(client, redis.Redis)  # a unix:// URL: one Redis, never a Cluster
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@contextmanager
def _serving(service: FaceStreamService, token: str) -> Iterator[str]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    # the service's own uvicorn settings (proxy headers believed only from api.trusted_proxies)
    app = create_app(service, token=token)
    server = uvicorn.Server(uvicorn_config(app, service.config.api, graceful_shutdown_seconds=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + API_START_TIMEOUT_SECONDS
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10.0)
        listener.close()


ServeApi = Callable[[FaceStreamService, str], AbstractContextManager[str]]


@pytest.fixture(scope="session")
def serve_api() -> ServeApi:
    """``with serve_api(service, token) as base_url:`` serves the real HTTP API of ``service``
    with uvicorn on 127.0.0.1 (an ephemeral port) from a thread until the block ends."""
    return _serving


@pytest.fixture
def metrics() -> PipelineMetrics:
    """Fresh metrics on their own registry."""
    return PipelineMetrics.create()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections (kernel backlog) but never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()


# ---- markers from what a test uses ----------------------------------------------------------
# Each test module is marked by the real parts it uses, read from its source, so a new test is
# marked without anyone remembering to: `make test-fast` deselects them all and runs the unit
# tests only (pure logic, no server, no model).
_PART_MARKERS = {
    "redis": ("run_service(", "open_services(", "EmbeddedRedis", "redis-server", "server: "),
    "rtsp": ("RtspServer", "rtsp_server", "rtsp://127.0.0.1"),
    "browser": ("selenium", "chromium"),
    "gpu": ("cuda_runtime", "CudaRuntime(", "nvidia"),
    # the real networks (encoder, detector, anti-spoof CNN, style nets) or dlib's models
    "models": (
        "session_store",
        "ort_engine",
        "encoder_model",
        "oracle",
        "face_chips",
        "load_encoder",
        "open_analyzer",
        "load_detector",
        "_detector(",
        "BlazeFace",
        "build_",
        "import torch",
        "shared_data",
        "StyleStream",
        "Stylizer",
    ),
}


def _part_markers(source: str) -> list[str]:
    return [name for name, needles in _PART_MARKERS.items() if any(n in source for n in needles)]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    by_file: dict[Path, list[str]] = {}
    for item in items:
        path = Path(str(item.path))
        if path not in by_file:
            by_file[path] = _part_markers(path.read_text(encoding="utf-8"))
        for name in by_file[path]:
            item.add_marker(getattr(pytest.mark, name))
