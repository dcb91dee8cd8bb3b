"""Style-model backends besides ONNX Runtime: torch (run here on the CPU) and the parts of the
TensorRT path that do not need TensorRT (the batch-axis copy its plans are built from, the
settings, and the error without TensorRT)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime
import pytest
from prometheus_client import CollectorRegistry
from style_models import SHIPPED_STYLES

from engines.convert.parity import astronaut_rgb
from engines.errors import BackendUnavailableError, ConfigError, ModelFileError
from engines.models.style import batch_axis_copy, store_batch_axis_copy
from engines.store import ModelStore
from pipeline.metrics import PipelineMetrics, StyleMetrics
from pipeline.style.config import StyleStreamConfig
from pipeline.style.engine import (
    SHIPPED_STORE,
    StyleCatalog,
    StyleEngineSettings,
    load_style_network,
)
from pipeline.style.stream import StyleStream

torch = pytest.importorskip("torch", reason="the torch backend needs the [torch] extra")

# measured: at most 3e-4 grey levels apart in float, at most 1 level after rounding to uint8
FLOAT_TOLERANCE = 0.01


def _frame() -> npt.NDArray[np.uint8]:
    """The astronaut photo (a real photograph) as a 640x360 BGR frame."""
    rgb = cv2.resize(astronaut_rgb()[:, :384], (640, 360), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb[:, :, ::-1])


@pytest.mark.parametrize("name", SHIPPED_STYLES)
def test_torch_backend_matches_onnxruntime_on_a_shipped_model(name: str) -> None:
    """The torch engine runs the weights of the stored ONNX file: on a real frame its output is
    within FLOAT_TOLERANCE grey levels (of 255) of ONNX Runtime's, and the uint8 images within
    one level; both report their backend and the same model id."""
    path = StyleCatalog().path(name)
    reference = load_style_network(path, StyleEngineSettings(threads=2))
    candidate = load_style_network(path, StyleEngineSettings(backend="torch", threads=2))
    try:
        assert reference.engine.backend == "onnxruntime-cpu"
        assert candidate.engine.backend == "torch-cpu-fp32"
        assert candidate.model_id == reference.model_id
        frame = _frame()
        batch = {"frames": frame.transpose(2, 0, 1)[None].astype(np.float32)}
        expected = reference.engine.infer(batch)["stylized"]
        got = candidate.engine.infer(batch)["stylized"]
        assert got.shape == expected.shape == (1, 3, 360, 640)
        assert got.dtype == np.float32
        assert float(np.abs(got - expected).max()) <= FLOAT_TOLERANCE
        images = candidate.stylize(frame).astype(np.int16) - reference.stylize(frame)
        assert int(np.abs(images).max()) <= 1
        assert float(np.abs(expected - batch["frames"]).mean()) > 10  # the style did something
    finally:
        reference.close()
        candidate.close()


def test_style_stream_runs_on_the_torch_backend(tmp_path: Path) -> None:
    """`backend = "torch"` in the stream config: frames go through torch, and the inference
    metric is labelled torch-cpu-fp32."""
    source = tmp_path / "in.mp4"
    writer = cv2.VideoWriter(str(source), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (320, 180))
    for shift in range(4):
        writer.write(np.roll(cv2.resize(_frame(), (320, 180)), shift * 8, axis=1))
    writer.release()
    config = StyleStreamConfig(
        source=str(source),
        style="udnie",
        out_file=tmp_path / "out.mp4",
        out_codec="mpeg4",
        out_audio="none",
        backend="torch",
        threads=1,
    )
    metrics = StyleMetrics.create(CollectorRegistry())
    with StyleStream(config, metrics, PipelineMetrics.create(CollectorRegistry())) as stream:
        report = stream.run()
    assert report.frames_out == 4
    count = metrics.registry.get_sample_value(
        "facestream_style_inference_seconds_count",
        {"backend": "torch-cpu-fp32", "model_id": stream.stylizer.network.model_id},
    )
    assert count == 4


def test_backend_settings_are_explicit_and_checked() -> None:
    """Unknown backends, fp16 off CUDA, and TensorRT without CUDA or a plan folder are refused
    before anything loads; torch on CUDA without a GPU is BackendUnavailableError, not CPU."""
    with pytest.raises(ConfigError, match="expected one of"):
        StyleEngineSettings(backend="openvino")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="fp16"):
        StyleEngineSettings(backend="torch", precision="fp16")
    with pytest.raises(ConfigError, match="fp16"):
        StyleEngineSettings(precision="fp16", device="cuda")
    with pytest.raises(ConfigError, match="plan_dir"):
        StyleEngineSettings(backend="tensorrt", device="cuda")
    with pytest.raises(ConfigError, match="cuda"):
        StyleEngineSettings(backend="tensorrt", plan_dir=Path("plans"))
    with pytest.raises(ValueError, match="fp16"):
        StyleStreamConfig(
            source="in.mp4", style="udnie", mjpeg_port=0, backend="torch", precision="fp16"
        )
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the no-GPU error cannot be shown")
    settings = StyleEngineSettings(backend="torch", device="cuda")
    with pytest.raises(BackendUnavailableError, match="no CUDA"):
        load_style_network(StyleCatalog().path("udnie"), settings)


def _copy_shipped(name: str, tmp_path: Path) -> Path:
    target = tmp_path / "store" / "models"
    target.mkdir(parents=True)
    source = SHIPPED_STORE / "models"
    for file_name in (f"{name}.onnx", f"{name}.onnx.manifest.json"):
        shutil.copy(source / file_name, target / file_name)
    return target / f"{name}.onnx"


def test_torch_backend_refuses_weights_that_do_not_fit_its_net(tmp_path: Path) -> None:
    """A manifest naming another net than the file holds, or no net, is a ModelFileError
    naming the file (the weights are loaded strictly, by name and shape)."""
    path = _copy_shipped("udnie", tmp_path)
    manifest_path = ModelStore.manifest_path(path)
    manifest = json.loads(manifest_path.read_text())
    settings = StyleEngineSettings(backend="torch")
    for net, message in (("full", "do not fit"), ("huge", "build\\['net'\\]")):
        manifest["build"]["net"] = net
        manifest_path.write_text(json.dumps(manifest))
        with pytest.raises(ModelFileError, match=message):
            load_style_network(path, settings)


def test_batch_axis_copy_computes_the_same_as_the_fixed_model(tmp_path: Path) -> None:
    """The copy TensorRT plans are built from has a symbolic batch axis and otherwise the same
    graph: ONNX Runtime gives the same output for 1 and for 2 frames; the stored copy keeps
    the model id, is reused while intact and rewritten when damaged."""
    path = StyleCatalog().path("the_scream")
    store = ModelStore(tmp_path / "plans")
    copy = store_batch_axis_copy(path, store)
    assert copy.manifest.inputs[0].shape == (None, 3, 360, 640)
    assert copy.manifest.outputs[0].shape == (None, 3, 360, 640)
    assert copy.manifest.model_id == ModelStore(SHIPPED_STORE).open(path).manifest.model_id
    fixed = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batched = onnxruntime.InferenceSession(str(copy.path), providers=["CPUExecutionProvider"])
    frames = np.stack([_frame(), _frame()[:, ::-1]]).transpose(0, 3, 1, 2).astype(np.float32)
    expected = np.concatenate([fixed.run(None, {"frames": frames[i : i + 1]})[0] for i in (0, 1)])
    np.testing.assert_allclose(batched.run(None, {"frames": frames})[0], expected, atol=1e-3)
    np.testing.assert_allclose(
        batched.run(None, {"frames": frames[:1]})[0], expected[:1], atol=1e-3
    )

    written = copy.path.stat().st_mtime_ns
    assert store_batch_axis_copy(path, store).path.stat().st_mtime_ns == written  # reused
    copy.path.write_bytes(b"damaged")
    again = store_batch_axis_copy(path, store)
    assert store.open(again.path).manifest.artifact_sha256 == copy.manifest.artifact_sha256
    with pytest.raises(ModelFileError, match="another store"):
        store_batch_axis_copy(path, ModelStore(SHIPPED_STORE))
    dynamic = onnx.load(str(copy.path))
    with pytest.raises(ModelFileError, match="fixed"):
        batch_axis_copy(dynamic)


def test_tensorrt_backend_without_tensorrt_is_backend_unavailable(tmp_path: Path) -> None:
    """Asking for TensorRT where it is not installed fails with BackendUnavailableError; no
    other backend is used in its place."""
    try:
        import tensorrt  # noqa: PLC0415

        if hasattr(tensorrt, "Builder"):
            pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    settings = StyleEngineSettings(backend="tensorrt", device="cuda", plan_dir=tmp_path / "p")
    with pytest.raises(BackendUnavailableError):
        load_style_network(StyleCatalog().path("udnie"), settings)


def test_the_copy_passes_the_plan_checks_the_fixed_model_fails(tmp_path: Path) -> None:
    """Why the copy exists: ``engines.runtime.tensorrt`` accepts an engine only when every
    tensor has a dynamic batch axis in the manifest. An engine built from the copy with the
    1..1..1 profile (tensors (-1, 3, 360, 640)) passes its checks; the fixed-shape manifest of
    the shipped model does not. The profile for the copy's input is the fixed frame shape."""
    from engines.runtime.tensorrt.plans import EngineTensor, check_engine_io  # noqa: PLC0415
    from engines.runtime.tensorrt.profile import BatchProfile, profile_shapes  # noqa: PLC0415

    path = StyleCatalog().path("udnie")
    copy = store_batch_axis_copy(path, ModelStore(tmp_path / "plans"))
    tensors = [
        EngineTensor("frames", is_input=True, type_name="FLOAT", shape=(-1, 3, 360, 640)),
        EngineTensor("stylized", is_input=False, type_name="FLOAT", shape=(-1, 3, 360, 640)),
    ]
    check_engine_io(tmp_path / "x.plan", copy.manifest, tensors)
    fixed = ModelStore(SHIPPED_STORE).open(path).manifest
    with pytest.raises(ModelFileError, match="no dynamic batch axis"):
        check_engine_io(tmp_path / "x.plan", fixed, tensors)
    shapes = profile_shapes("frames", (-1, 3, 360, 640), BatchProfile(1, 1, 1))
    assert shapes is not None
    assert shapes.minimum == shapes.optimum == shapes.maximum == (1, 3, 360, 640)
