"""BlazeFace: our .tflite -> ONNX converter against LiteRT, and the detector built on it.

The converter's parity oracle is Google's own TFLite interpreter (``ai-edge-litert``, a test-only
dependency); the detector is checked on real photos: scikit-image's astronaut (public domain),
dlib's dogs.jpg (no faces) and bald_guys.jpg (a group) from ../shared/data.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from pydantic import ValidationError

from engines.convert.blazeface import (
    BLAZEFACE_VARIANTS,
    INPUT_NAME,
    SCORES_NAME,
    VALUES_NAME,
    blazeface_source,
)
from engines.convert.parity import astronaut_rgb, read_rgb
from engines.convert.tflite_graph import read_tflite
from engines.errors import BackendUnavailableError, ConfigError, ModelFileError
from engines.models.detector import (
    DETECTOR_BACKENDS,
    DetectorBackendName,
    DetectorEngineSettings,
    build_detector_onnx,
    load_detector_engine,
)
from engines.runtime.onnxrt import OrtSettings
from engines.store import ModelStore, sha256_file
from pipeline.config.service import FaceStreamConfig
from pipeline.recognition.detect.blazeface import BlazeFaceConfig, BlazeFaceDetector
from pipeline.recognition.detect.blazeface_decode import (
    ANCHOR_SPECS,
    Detections,
    Letterbox,
    letterbox,
    weighted_nms,
)
from pipeline.recognition.detect.factory import DlibHogConfig, DlibHogDetector, load_detector
from pipeline.types import Faces

# float32 sums in another order: outputs reach ~300 (logits, pixel offsets), where one float32
# step is already 3e-5. LiteRT's own XNNPACK and reference kernels differ from each other by up
# to 1.3e-4 (regressors) and 8.5e-4 (logits near 290) on these models; ours differ from the
# reference kernels by at most 1.4e-4 on regressors (one element of 28672, back camera), so the
# bound is 2e-4 absolute plus 1e-5 relative.
PARITY_ATOL = 2e-4
PARITY_RTOL = 1e-5


@pytest.fixture(scope="module")
def detector_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """A store holding every converted BlazeFace variant."""
    store = ModelStore(tmp_path_factory.mktemp("detectors"))
    for variant in BLAZEFACE_VARIANTS:
        build_detector_onnx(store, variant)
    return store


@pytest.fixture(scope="module")
def full_range(detector_store: ModelStore) -> Iterator[BlazeFaceDetector]:
    """BlazeFace full range on ONNX Runtime CPU, as the service builds it."""
    config = BlazeFaceConfig(model="blazeface_full")
    engine = load_detector_engine(detector_store, config.model, OrtSettings(intra_op_threads=2))
    detector = BlazeFaceDetector(config, engine)
    yield detector
    detector.close()


def _litert(source: Path, images_nhwc: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[Any]]:
    """Run ``source`` image by image in LiteRT; outputs named as in our ONNX, batch stacked."""
    interpreter_module = pytest.importorskip(
        "ai_edge_litert.interpreter", reason="ai-edge-litert (test-only) is not installed"
    )
    interpreter = interpreter_module.Interpreter(
        model_path=str(source),  # reference kernels: XNNPACK itself differs from them by 1e-4
        experimental_op_resolver_type=interpreter_module.OpResolverType.BUILTIN_REF,
    )
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    results: dict[str, list[npt.NDArray[Any]]] = {VALUES_NAME: [], SCORES_NAME: []}
    for image in images_nhwc:
        interpreter.set_tensor(input_index, image[None])
        interpreter.invoke()
        for detail in interpreter.get_output_details():
            output = interpreter.get_tensor(detail["index"])
            results[VALUES_NAME if output.shape[2] == 16 else SCORES_NAME].append(output[0])
    return {name: np.stack(arrays) for name, arrays in results.items()}


@pytest.mark.parametrize("variant", sorted(BLAZEFACE_VARIANTS))
def test_converted_model_matches_litert(detector_store: ModelStore, variant: str) -> None:
    """A batch of 2 (astronaut, mirrored) through our ONNX on ONNX Runtime gives LiteRT's raw
    regressors and classificators within 2e-4 (+1e-5 relative)."""
    size = ANCHOR_SPECS[variant].input_size_px
    tensor, _ = letterbox(astronaut_rgb(), size)
    batch = np.concatenate([tensor, tensor[:, :, :, ::-1]]).astype(np.float32)
    expected = _litert(blazeface_source(variant), np.ascontiguousarray(batch.transpose(0, 2, 3, 1)))
    engine = load_detector_engine(detector_store, variant, OrtSettings(intra_op_threads=2))
    try:
        ours = engine.infer({INPUT_NAME: batch})
    finally:
        engine.close()
    for name in (VALUES_NAME, SCORES_NAME):
        assert ours[name].shape == expected[name].shape
        np.testing.assert_allclose(
            ours[name], expected[name], atol=PARITY_ATOL, rtol=PARITY_RTOL, err_msg=name
        )


def test_manifest_names_the_source_and_rebuild_is_skipped(detector_store: ModelStore) -> None:
    """The manifest records the .tflite's sha256 and shapes; building again keeps the file."""
    stored = build_detector_onnx(detector_store, "blazeface_full")
    manifest = stored.manifest
    assert manifest.source_sha256 == sha256_file(blazeface_source("blazeface_full"))
    assert manifest.input_specs()[INPUT_NAME].shape == (None, 3, 192, 192)
    assert manifest.output_specs()[VALUES_NAME].shape == (None, 2304, 16)
    assert manifest.build["source_file"] == "face_detection_full_range.tflite"
    modified = stored.path.stat().st_mtime_ns
    assert build_detector_onnx(detector_store, "blazeface_full").path.stat().st_mtime_ns == modified


def test_anchor_counts_match_the_models(detector_store: ModelStore) -> None:
    """The SSD anchor spec of each variant gives as many anchors as its model has outputs."""
    for variant, spec in ANCHOR_SPECS.items():
        shape = build_detector_onnx(detector_store, variant).manifest.output_specs()[SCORES_NAME]
        assert shape.shape == (None, spec.anchor_count, 1), variant


def test_astronaut_face_matches_dlib(full_range: BlazeFaceDetector) -> None:
    """One face on the astronaut, where dlib's HOG finds it, with landmarks within 3 px."""
    image = astronaut_rgb()
    faces = full_range.detect(image)
    hog = DlibHogDetector(DlibHogConfig(upsample=1)).detect(image)
    assert len(faces) == 1
    assert faces.landmark_scheme == "dlib5"
    assert faces.scores[0] > 0.8
    reference = hog.select([0])  # the largest HOG face is hers
    centre = (faces.boxes[0, :2] + faces.boxes[0, 2:]) / 2
    assert reference.boxes[0, 0] < centre[0] < reference.boxes[0, 2]
    assert reference.boxes[0, 1] < centre[1] < reference.boxes[0, 3]
    assert np.abs(faces.landmarks[0] - reference.landmarks[0]).max() <= 3.0


def test_no_face_in_dogs_photo(full_range: BlazeFaceDetector, shared_data: Path) -> None:
    """dlib's dogs.jpg holds no human face: BlazeFace full range reports none."""
    assert len(full_range.detect(read_rgb(shared_data / "faces/dlib_faces/dogs.jpg"))) == 0


def test_many_faces_in_group_photo(full_range: BlazeFaceDetector, shared_data: Path) -> None:
    """bald_guys.jpg: at least 10 faces, largest first, every box and landmark inside it."""
    image = read_rgb(shared_data / "faces/dlib_faces/bald_guys.jpg")
    faces = full_range.detect(image)
    assert len(faces) >= 10
    assert np.all(np.diff(faces.widths_px) <= 0)
    height, width = image.shape[:2]
    centres = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2
    assert np.all((centres >= 0) & (centres <= [width, height]))


def _pasted(size: tuple[int, int], offset: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """The astronaut (512x512) pasted at ``offset`` (x, y) into a grey frame of ``size`` (w, h)."""
    image = astronaut_rgb()
    canvas = np.full((size[1], size[0], 3), 127, np.uint8)
    canvas[offset[1] : offset[1] + 512, offset[0] : offset[0] + 512] = image
    return canvas


FRAMES = [((1024, 576), (400, 40)), ((576, 1024), (40, 400))]  # wide and tall: letterboxed


@pytest.mark.parametrize(("size", "offset"), FRAMES)
def test_boxes_follow_the_face(
    full_range: BlazeFaceDetector, size: tuple[int, int], offset: tuple[int, int]
) -> None:
    """The astronaut pasted into a wide and a tall frame (letterboxed, the face half as large
    in the network) is found where it was pasted: box centre and width within 15% of the face
    width (the network's own jitter at ~20 px faces: up to 12 px here, depending on where the
    face falls on the anchor grid; a wrong letterbox offset would be 200+ px), dlib landmarks
    within 3 px."""
    alone = full_range.detect(astronaut_rgb())
    pasted = full_range.detect(_pasted(size, offset))
    assert len(alone) == len(pasted) == 1
    width = float(alone.widths_px[0])
    shift = np.array(offset, np.float32)
    centre_alone = (alone.boxes[0, :2] + alone.boxes[0, 2:]) / 2 + shift
    centre_pasted = (pasted.boxes[0, :2] + pasted.boxes[0, 2:]) / 2
    np.testing.assert_allclose(centre_pasted, centre_alone, atol=0.15 * width)
    assert abs(float(pasted.widths_px[0]) - width) <= 0.15 * width
    np.testing.assert_allclose(pasted.landmarks[0], alone.landmarks[0] + shift, atol=3.0)


@pytest.mark.parametrize(("size", "offset"), FRAMES)
def test_boxes_scale_with_the_frame(
    full_range: BlazeFaceDetector, size: tuple[int, int], offset: tuple[int, int]
) -> None:
    """The same frame at 2.5x the size (the network sees the same pixels) gives boxes 2.5x as
    large and far, within 2% of the face width: boxes are in frame pixels."""
    frame = _pasted(size, offset)
    large = np.asarray(
        cv2.resize(frame, (size[0] * 5 // 2, size[1] * 5 // 2), interpolation=cv2.INTER_CUBIC),
        np.uint8,
    )
    small_faces, large_faces = full_range.detect(frame), full_range.detect(large)
    assert len(small_faces) == len(large_faces) == 1
    np.testing.assert_allclose(
        large_faces.boxes[0] / 2.5,
        small_faces.boxes[0],
        atol=0.02 * float(small_faces.widths_px[0]),
    )


def test_letterbox_round_trip() -> None:
    """A frame pixel mapped into the letterbox and back lands on itself (wide frame, 192 px)."""
    frame = np.zeros((360, 1280, 3), np.uint8)
    tensor, fit = letterbox(frame, 192)
    assert tensor.shape == (1, 3, 192, 192)
    assert tensor[0, :, 0, 0].tolist() == [-1.0, -1.0, -1.0]  # border rows are black
    point = np.array([[1000.0, 300.0]], np.float32)
    in_letterbox = (point * fit.scale + [fit.offset_x_px, fit.offset_y_px]) / fit.size_px
    np.testing.assert_allclose(fit.to_frame(in_letterbox.astype(np.float32)), point, atol=1e-3)
    assert Letterbox(1.0, 0.0, 0.0, 10).to_frame(np.array([[0.5, 0.5]], np.float32)).tolist() == [
        [5.0, 5.0]
    ]


def test_weighted_nms_merges_overlaps_by_score() -> None:
    """Two overlapping boxes merge into their score-weighted mean with the best score; a
    distant box stays apart."""
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    keypoints = np.repeat(boxes[:, None, :2], 6, axis=1).astype(np.float32)
    scores = np.array([0.9, 0.6, 0.7], np.float32)
    merged = weighted_nms(Detections(boxes, keypoints, scores), iou_threshold=0.3)
    assert merged.scores.tolist() == pytest.approx([0.9, 0.7])
    np.testing.assert_allclose(merged.boxes[0], [0.4, 0.4, 10.4, 10.4], atol=1e-5)
    np.testing.assert_allclose(merged.boxes[1], boxes[2])
    np.testing.assert_allclose(merged.keypoints[0, 0], [0.4, 0.4], atol=1e-5)


def test_empty_frame_gives_no_faces(full_range: BlazeFaceDetector) -> None:
    """A flat grey frame gives ``Faces.empty()``-shaped output, not an error."""
    faces = full_range.detect(np.full((360, 640, 3), 127, np.uint8))
    assert len(faces) == 0
    assert faces.landmarks.shape == Faces.empty().landmarks.shape


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: b"not a tflite model at all", id="not-tflite"),
        pytest.param(lambda data: data[:8] + bytes(4096), id="zeroed"),
    ],
)
def test_corrupt_tflite_is_a_model_file_error(
    tmp_path: Path, damage: Any, detector_store: ModelStore
) -> None:
    """A damaged .tflite raises ModelFileError naming the file, when read and when built."""
    source = tmp_path / "face_detection_full_range.tflite"
    source.write_bytes(damage(blazeface_source("blazeface_full").read_bytes()))
    with pytest.raises(ModelFileError, match=re.escape(str(source))):
        read_tflite(source)
    with pytest.raises(ModelFileError, match=re.escape(str(source))):
        build_detector_onnx(ModelStore(tmp_path / "store"), "blazeface_full", source=source)


def test_missing_tflite_is_a_model_file_error(tmp_path: Path) -> None:
    """A .tflite path that does not exist raises ModelFileError naming it."""
    with pytest.raises(ModelFileError, match=re.escape("absent.tflite")):
        read_tflite(tmp_path / "absent.tflite")


def test_unknown_variant_is_a_config_error(detector_store: ModelStore) -> None:
    """An unknown BlazeFace variant is a ConfigError listing the valid ones."""
    with pytest.raises(ConfigError, match="blazeface_full"):
        build_detector_onnx(detector_store, "blazeface_huge")


def test_detect_section_is_chosen_by_model() -> None:
    """``detect.model`` picks the settings class; no model means BlazeFace full range (the
    measured default); wrong keys are errors."""
    default = FaceStreamConfig().detect
    assert isinstance(default, BlazeFaceConfig)
    assert default.model == "blazeface_full"
    assert isinstance(FaceStreamConfig.model_validate({"detect": {}}).detect, BlazeFaceConfig)
    hog = FaceStreamConfig.model_validate({"detect": {"model": "dlib_hog", "upsample": 0}}).detect
    assert isinstance(hog, DlibHogConfig)
    assert hog.upsample == 0
    blaze = FaceStreamConfig.model_validate(
        {"detect": {"model": "blazeface_back", "score_threshold": 0.6}}
    ).detect
    assert isinstance(blaze, BlazeFaceConfig)
    assert blaze.score_threshold == 0.6
    for wrong in (
        {"model": "blazeface_huge"},
        {"model": "blazeface_full", "upsample": 1},
        {"model": "blazeface_full", "nms_iou": 1.5},
    ):
        with pytest.raises(ValidationError):
            FaceStreamConfig.model_validate({"detect": wrong})


def test_engine_of_another_variant_is_refused(detector_store: ModelStore) -> None:
    """A BlazeFace config given the engine of another variant fails at start, naming both."""
    engine = load_detector_engine(detector_store, "blazeface_short", OrtSettings())
    try:
        with pytest.raises(ModelFileError, match="blazeface_full"):
            BlazeFaceDetector(BlazeFaceConfig(model="blazeface_full"), engine)
    finally:
        engine.close()


def test_letterbox_uses_area_when_shrinking() -> None:
    """Shrinking averages pixels (no aliasing): a 1-px checkerboard becomes flat grey."""
    board = (np.indices((512, 512)).sum(axis=0) % 2 * 255).astype(np.uint8)
    image = cv2.merge([board, board, board])
    tensor, _ = letterbox(image, 128)
    assert np.abs(tensor).max() < 0.05


# ---------------------------------------------------------------------------------------------
# Backends: onnxruntime or tensorrt, chosen explicitly, never swapped


def test_config_backend_literal_is_the_table() -> None:
    """The config's backend choices are exactly the engines layer's hand-written table."""
    assert get_args(DetectorBackendName) == tuple(DETECTOR_BACKENDS)
    assert BlazeFaceConfig().backend == "onnxruntime"
    assert BlazeFaceConfig().precision == "fp32"


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"backend": "openvino"}, "backend"),
        ({"backend": "auto"}, "backend"),
        ({"backend": "tensorrt", "device": "cuda", "precision": "int8"}, "precision"),
        ({"backend": "tensorrt"}, "runs on device 'cuda'"),
        ({"backend": "onnxruntime", "precision": "fp16"}, "needs backend 'tensorrt'"),
        ({"backend": "tensorrt", "device": "cuda", "tensorrt_precision": "fp16"}, "extra"),
    ],
)
def test_config_refuses_bad_backend_or_precision(section: dict[str, Any], problem: str) -> None:
    """An unknown backend or precision, tensorrt on the CPU, fp16 on onnxruntime and unknown
    keys are validation errors of the ``detect`` section, before anything is loaded."""
    with pytest.raises(ValidationError, match=problem):
        FaceStreamConfig.model_validate({"detect": {"model": "blazeface_full", **section}})


def test_config_gives_the_engine_settings() -> None:
    """A valid tensorrt section becomes engine settings with the same backend and precision."""
    config = FaceStreamConfig.model_validate(
        {"detect": {"backend": "tensorrt", "device": "cuda", "precision": "fp16"}}
    ).detect
    assert isinstance(config, BlazeFaceConfig)
    assert config.engine_settings() == DetectorEngineSettings(
        backend="tensorrt", device="cuda", precision="fp16", threads=2
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"backend": "torch"}, "unknown detector backend 'torch'; valid: onnxruntime, tensorrt"),
        ({"backend": "tensorrt"}, "runs on device 'cuda', not 'cpu'"),
        ({"backend": "tensorrt", "device": "cuda", "precision": "int8"}, "expected one of fp32"),
        ({"precision": "fp16"}, "onnxruntime detector backend runs fp32, not fp16"),
        ({"threads": -1}, "must be >= 0"),
    ],
)
def test_engine_settings_refuse_bad_values(changes: dict[str, Any], message: str) -> None:
    """The engines-layer settings check the same rules with ConfigError, for direct callers."""
    with pytest.raises(ConfigError, match=message):
        DetectorEngineSettings(**changes)


def _has_real_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: PLC0415
    except ImportError:
        return False
    return hasattr(tensorrt, "Builder")  # tensorrt-stubs installs an empty package


def _gpu_count() -> int:
    try:
        runtime = importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        return 0
    error, count = runtime.cudaGetDeviceCount()
    return int(count) if error == runtime.cudaError_t.cudaSuccess else 0


def _loaded_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.getMessage().startswith("face detector loaded")
    ]


TENSORRT_CONFIG = BlazeFaceConfig(backend="tensorrt", device="cuda", precision="fp16")


def test_tensorrt_on_this_machine_raises_instead_of_falling_back(
    detector_store: ModelStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Asking for tensorrt where TensorRT or a GPU is missing raises BackendUnavailableError
    naming what to install; no detector is loaded (no ONNX Runtime in its place)."""
    if _has_real_tensorrt() and _gpu_count():
        pytest.skip("this machine has TensorRT and a GPU; the missing-backend error cannot show")
    caplog.set_level(logging.INFO, logger="engines.models.detector")
    with pytest.raises(BackendUnavailableError, match=r"\[tensorrt\]|\[gpu\]|GPU"):
        load_detector(TENSORRT_CONFIG, detector_store)
    assert _loaded_lines(caplog) == []


def test_tensorrt_without_tensorrt_names_the_extra(
    detector_store: ModelStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With TensorRT not importable (on any machine), the tensorrt detector raises
    BackendUnavailableError saying to install facestream[tensorrt], and builds no plan."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    caplog.set_level(logging.INFO, logger="engines.models.detector")
    with pytest.raises(BackendUnavailableError, match=r"TensorRT is not installed.*\[tensorrt\]"):
        load_detector(TENSORRT_CONFIG, detector_store)
    assert _loaded_lines(caplog) == []
    assert not list(detector_store.plans_dir.rglob("*.plan"))


def test_onnxruntime_backend_is_used_and_logged_once(
    detector_store: ModelStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The default section runs on ONNX Runtime CPU as before: engine.backend says so, one log
    line names it, and the OrtSettings form of load_detector_engine gives the same engine."""
    caplog.set_level(logging.INFO, logger="engines.models.detector")
    detector = load_detector(BlazeFaceConfig(), detector_store)
    try:
        assert isinstance(detector, BlazeFaceDetector)
        assert detector.engine.backend == "onnxruntime-cpu"
        model_id = detector.engine.model_id
    finally:
        detector.close()
    assert _loaded_lines(caplog) == [
        f"face detector loaded: backend onnxruntime-cpu, model {model_id}"
    ]
    engine = load_detector_engine(detector_store, "blazeface_full", OrtSettings())
    try:
        assert engine.backend == "onnxruntime-cpu"
        assert engine.model_id == model_id
    finally:
        engine.close()


@pytest.fixture(scope="module")
def tensorrt_gpu() -> None:
    """Skip unless NVIDIA TensorRT (with Builder) and a GPU seen by cuda-bindings are here."""
    if not _has_real_tensorrt():
        pytest.skip("NVIDIA TensorRT is not installed (tensorrt.Builder is unavailable)")
    if not _gpu_count():
        pytest.skip("no GPU visible to cuda-bindings (or cuda-bindings is not installed)")


@pytest.mark.usefixtures("tensorrt_gpu")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_detector_matches_onnxruntime(
    detector_store: ModelStore, full_range: BlazeFaceDetector, precision: str
) -> None:
    """On a GPU with TensorRT: the plan is built into the store and reused on the next load;
    it finds the astronaut's one face where ONNX Runtime does (box within 2% of the face
    width, score within 0.02), for a frame alone and inside a batch of 3."""
    config = BlazeFaceConfig(backend="tensorrt", device="cuda", precision=precision)
    detector = load_detector(config, detector_store)
    try:
        assert isinstance(detector, BlazeFaceDetector)
        assert detector.engine.backend == f"tensorrt-{precision}"
        plans = list(detector_store.plans_dir.rglob(f"{precision}-*.plan"))
        assert len(plans) == 1
        built_ns = plans[0].stat().st_mtime_ns
        image = astronaut_rgb()
        expected = full_range.detect(image)
        found = detector.detect(image)
        tensor, _ = letterbox(image, ANCHOR_SPECS["blazeface_full"].input_size_px)
        batch = np.concatenate([tensor, tensor[:, :, :, ::-1], tensor]).astype(np.float32)
        alone = detector.engine.infer({INPUT_NAME: tensor})
        together = detector.engine.infer({INPUT_NAME: batch})
    finally:
        detector.close()
    assert len(found) == len(expected) == 1
    width = float(expected.widths_px[0])
    np.testing.assert_allclose(found.boxes[0], expected.boxes[0], atol=0.02 * width)
    assert abs(float(found.scores[0]) - float(expected.scores[0])) <= 0.02
    # padding to a bucket does not leak into real rows; kernels picked per batch size round
    # differently (fp16, or TF32 in fp32 plans), hence 1% (outputs reach ~300), not bit-equality
    for name in (VALUES_NAME, SCORES_NAME):
        np.testing.assert_allclose(together[name][2], alone[name][0], rtol=1e-2, atol=5e-2)
    again = load_detector(config, detector_store)
    again.close()
    assert plans[0].stat().st_mtime_ns == built_ns  # reused, not rebuilt
