"""TensorRT backend: settings, batch planning, plan manifests and the no-GPU error paths.

TensorRT cannot be installed on the machines these tests usually run on, so everything that does
not need the library is tested directly; what needs TensorRT and a GPU is tested at the end and
skips, saying why, where they are missing.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import itertools
import logging
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt
import pytest

from engines.base import ModelManifest, TensorSpecModel
from engines.errors import (
    BackendUnavailableError,
    ConfigError,
    InputSpecError,
    ManifestMismatchError,
    ModelFileError,
)
from engines.models.detector import DetectorEngineSettings, build_detector_onnx
from engines.models.encoder import load_or_build_encoder_plan
from engines.runtime.tensorrt.build import build_engine
from engines.runtime.tensorrt.cuda import (
    CudaRuntime,
    DeviceBuffer,
    GpuDevice,
    PinnedHostBuffer,
    cuda_failure_message,
)
from engines.runtime.tensorrt.engine import TrtEngine, load_or_build_plan
from engines.runtime.tensorrt.library import python_log_level, tensorrt_version
from engines.runtime.tensorrt.plans import (
    EngineTensor,
    check_engine_io,
    check_plan_manifest,
    device_key,
    device_label,
    plan_manifest,
    plan_path_for,
)
from engines.runtime.tensorrt.profile import (
    BatchChunk,
    BatchProfile,
    TrtBuildSettings,
    fill_padded,
    plan_chunks,
    profile_shapes,
)
from engines.store import ModelStore, StoredModel

if TYPE_CHECKING:
    import tensorrt

H100 = GpuDevice(index=0, name="NVIDIA H100 80GB HBM3", major=9, minor=0)
A100 = GpuDevice(index=0, name="NVIDIA A100-SXM4-80GB", major=8, minor=0)
TRT_VERSION = "10.13.0.35"
ONNX_BYTES = b"stand-in for an ONNX file: these tests never parse it"
PLAN_BYTES = b"stand-in for a serialized TensorRT plan"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _onnx_manifest(data: bytes = ONNX_BYTES) -> ModelManifest:
    return ModelManifest(
        model_id="dlib_resnet_v1-0123456789ab",
        format="onnx",
        precision="fp32",
        source_sha256=_sha(b"dlib weights"),
        artifact_sha256=_sha(data),
        inputs=(TensorSpecModel(name="chips", dtype="float32", shape=(None, 3, 150, 150)),),
        outputs=(TensorSpecModel(name="descriptors", dtype="float32", shape=(None, 128)),),
        library_versions={"onnx": "1.23.2"},
    )


def _plan(store: ModelStore, settings: TrtBuildSettings, device: GpuDevice = H100) -> StoredModel:
    onnx_manifest = _onnx_manifest()
    manifest = plan_manifest(
        onnx_manifest,
        settings,
        plan_sha256=_sha(PLAN_BYTES),
        tensorrt_version=TRT_VERSION,
        device=device,
    )
    path = plan_path_for(
        store, onnx_manifest, settings.precision, tensorrt_version=TRT_VERSION, device=device
    )
    return StoredModel(path, manifest)


@pytest.fixture
def stored_pair(tmp_path: Path) -> tuple[ModelStore, StoredModel, StoredModel]:
    """A store holding a stand-in ONNX file and a plan "built" from it, both with manifests."""
    store = ModelStore(tmp_path)
    onnx = store.save(store.model_path("dlib_resnet_v1"), ONNX_BYTES, _onnx_manifest())
    plan = _plan(store, TrtBuildSettings())
    return store, onnx, store.save(plan.path, PLAN_BYTES, plan.manifest)


@pytest.fixture
def without_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import tensorrt`` fail, as on a machine where it is not installed."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


@pytest.fixture
def empty_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import tensorrt`` give an empty package, as tensorrt-stubs installs."""
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))


# ---------------------------------------------------------------------------------------------
# Settings


def test_default_settings_are_fp16_with_a_valid_profile() -> None:
    """Defaults build fp16 with batch 1..64 tuned for 16, the sizes EngineSettings defaults to."""
    settings = TrtBuildSettings()
    assert settings.precision == "fp16"
    assert settings.batch_profile == BatchProfile(1, 16, 64)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"precision": "fp8"}, "precision 'fp8': expected one of fp32, fp16, int8"),
        ({"min_batch": 0}, r"1 <= min_batch \(0\)"),
        ({"min_batch": 8, "opt_batch": 4}, r"min_batch \(8\) <= opt_batch \(4\)"),
        ({"opt_batch": 128}, r"opt_batch \(128\) <= max_batch \(64\)"),
        ({"max_batch": 4096, "opt_batch": 16}, r"max_batch \(4096\) <= 1024"),
        ({"max_batch": 8.0}, "max_batch must be an integer, got 8.0"),
        ({"opt_batch": True}, "opt_batch must be an integer, got True"),
        ({"workspace_bytes": 1024}, "workspace_bytes must be in"),
    ],
)
def test_bad_settings_are_config_errors(changes: dict[str, Any], message: str) -> None:
    """Each out-of-range or mistyped setting raises ConfigError saying which and why."""
    with pytest.raises(ConfigError, match=message):
        TrtBuildSettings(**changes)


def test_int8_without_calibrator_is_refused_before_any_work(tmp_path: Path) -> None:
    """int8 needs calibration data: build_engine says so before opening files or TensorRT."""
    with pytest.raises(ConfigError, match="int8 needs a calibrator"):
        build_engine(tmp_path / "absent.onnx", ModelStore(tmp_path), TrtBuildSettings("int8"))


def test_calibrator_outside_int8_is_refused(tmp_path: Path) -> None:
    """A calibrator given for an fp16 build is a mistake, reported rather than ignored."""
    calibrator = cast("tensorrt.IInt8Calibrator", object())
    with pytest.raises(ConfigError, match="only for int8 plans, not fp16"):
        build_engine(
            tmp_path / "absent.onnx",
            ModelStore(tmp_path),
            TrtBuildSettings(),
            calibrator=calibrator,
        )


# ---------------------------------------------------------------------------------------------
# Profiles, buckets, chunks and padding


def test_profile_covers_the_batch_axis_only() -> None:
    """A (-1, 3, 150, 150) input gets min/opt/max on axis 0 and its other axes unchanged."""
    shapes = profile_shapes("chips", (-1, 3, 150, 150), BatchProfile(1, 16, 64))
    assert shapes is not None
    assert shapes.minimum == (1, 3, 150, 150)
    assert shapes.optimum == (16, 3, 150, 150)
    assert shapes.maximum == (64, 3, 150, 150)


def test_static_input_needs_no_profile() -> None:
    """An input without dynamic axes is left to TensorRT (no profile entry)."""
    assert profile_shapes("scale", (1,), BatchProfile(1, 16, 64)) is None


@pytest.mark.parametrize("shape", [(-1, 3, -1, -1), (1, 3, -1, 150)])
def test_dynamic_axis_besides_batch_is_refused(shape: tuple[int, ...]) -> None:
    """Only the batch axis may vary: anything else is a ModelFileError naming the input."""
    with pytest.raises(ModelFileError, match=r"input 'chips' has shape .* only the batch axis"):
        profile_shapes("chips", shape, BatchProfile(1, 16, 64))


@pytest.mark.parametrize(
    ("profile", "buckets"),
    [
        (BatchProfile(1, 16, 64), (1, 2, 4, 8, 16, 32, 64)),
        (BatchProfile(3, 5, 20), (3, 4, 5, 8, 16, 20)),
        (BatchProfile(4, 4, 4), (4,)),
    ],
)
def test_buckets_are_powers_of_two_between_min_and_max(
    profile: BatchProfile, buckets: tuple[int, ...]
) -> None:
    """Buckets are min, opt, max and the powers of two strictly between min and max."""
    assert profile.buckets == buckets


def test_bucket_for_picks_the_smallest_that_fits() -> None:
    """A chunk pads to the smallest bucket holding it; 0 or more than max rows is an error."""
    profile = BatchProfile(3, 5, 20)
    assert [profile.bucket_for(rows) for rows in (1, 3, 4, 5, 6, 9, 17, 20)] == [
        3,
        3,
        4,
        5,
        8,
        16,
        20,
        20,
    ]
    for rows in (0, 21):
        with pytest.raises(InputSpecError, match=f"{rows} rows is outside 1..20"):
            profile.bucket_for(rows)


def test_large_batch_is_split_at_max_batch_and_the_rest_padded() -> None:
    """70 rows with max 32 run as 32 + 32 + 6 rows, the last padded to the 8-row bucket."""
    assert plan_chunks(70, BatchProfile(1, 8, 32)) == [
        BatchChunk(0, 32, 32),
        BatchChunk(32, 64, 32),
        BatchChunk(64, 70, 8),
    ]


def test_small_batch_is_padded_up_to_min_batch() -> None:
    """A batch smaller than the profile's minimum is padded to it, since TensorRT rejects less."""
    assert plan_chunks(2, BatchProfile(4, 8, 16)) == [BatchChunk(0, 2, 4)]


@pytest.mark.parametrize(
    "profile", [BatchProfile(1, 8, 32), BatchProfile(3, 5, 20), BatchProfile(7, 7, 7)]
)
def test_chunks_cover_every_row_once_within_the_profile(profile: BatchProfile) -> None:
    """For 0..150 rows: chunks are in order, contiguous, cover all rows, and each is padded to a
    bucket between its row count and max_batch."""
    for total in range(151):
        chunks = plan_chunks(total, profile)
        assert [chunk.start for chunk in chunks] == list(range(0, total, profile.max_batch))
        assert sum(chunk.row_count for chunk in chunks) == total
        for chunk, following in itertools.pairwise(chunks):
            assert chunk.stop == following.start
        for chunk in chunks:
            assert chunk.padded_rows in profile.buckets
            assert chunk.row_count <= chunk.padded_rows <= profile.max_batch


def test_negative_batch_is_refused() -> None:
    """A negative row count is an InputSpecError, not an empty plan."""
    with pytest.raises(InputSpecError, match="cannot have -1 rows"):
        plan_chunks(-1, BatchProfile(1, 8, 32))


def test_pad_then_slice_gives_the_same_rows() -> None:
    """fill_padded keeps the real rows bit-for-bit and zeroes the padding after them."""
    rows = np.random.default_rng(1).normal(size=(5, 3, 4)).astype(np.float32)
    staging = np.full((8, 3, 4), np.nan, dtype=np.float32)  # stale data from a previous call
    fill_padded(staging, rows)
    np.testing.assert_array_equal(staging[:5], rows)
    assert not staging[5:].any()


@pytest.mark.parametrize(("staging_shape", "rows_shape"), [((4, 3), (5, 3)), ((8, 3), (2, 4))])
def test_padding_into_a_wrong_buffer_is_refused(
    staging_shape: tuple[int, ...], rows_shape: tuple[int, ...]
) -> None:
    """Too many rows, or rows of another shape, are an InputSpecError, never a partial copy."""
    with pytest.raises(InputSpecError, match="cannot pad rows of shape"):
        fill_padded(np.zeros(staging_shape), np.ones(rows_shape))


def test_chunked_padded_run_equals_one_unpadded_run() -> None:
    """Running a batch as padded chunks through one max_batch staging buffer, as TrtEngine
    does, and keeping each chunk's real rows reproduces a single run of the whole batch."""
    profile = BatchProfile(2, 8, 16)
    chips = np.random.default_rng(2).uniform(0, 255, (45, 3, 6, 6)).astype(np.float32)

    def row_wise_model(batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.stack([batch.mean(axis=(1, 2, 3)), batch.max(axis=(1, 2, 3))], axis=1)

    staging = np.empty((profile.max_batch, 3, 6, 6), dtype=np.float32)
    descriptors = np.full((45, 2), np.nan, dtype=np.float32)
    for chunk in plan_chunks(len(chips), profile):
        fill_padded(staging[: chunk.padded_rows], chips[chunk.rows])
        outputs = row_wise_model(staging[: chunk.padded_rows])
        descriptors[chunk.rows] = outputs[: chunk.row_count]
    np.testing.assert_array_equal(descriptors, row_wise_model(chips))


# ---------------------------------------------------------------------------------------------
# Devices, plan paths and manifests


def test_device_label_and_key() -> None:
    """Manifests record the GPU name and compute capability; file names use sm<major><minor>."""
    assert device_label(H100) == "NVIDIA H100 80GB HBM3 (compute 9.0)"
    assert device_key(A100) == "NVIDIA A100-SXM4-80GB sm80"


def test_plan_path_names_model_precision_gpu_and_version(tmp_path: Path) -> None:
    """A plan's path holds the model id, precision, GPU and TensorRT version, file-name safe."""
    store = ModelStore(tmp_path)
    path = plan_path_for(store, _onnx_manifest(), "int8", tensorrt_version=TRT_VERSION, device=H100)
    assert path == (
        tmp_path
        / "plans"
        / "dlib_resnet_v1-0123456789ab"
        / "int8-NVIDIA_H100_80GB_HBM3_sm90-trt10.13.0.35.plan"
    )
    other_gpu = plan_path_for(
        store, _onnx_manifest(), "int8", tensorrt_version=TRT_VERSION, device=A100
    )
    assert other_gpu != path


def test_plan_manifest_records_where_the_plan_came_from() -> None:
    """The plan's manifest copies model id and source hash from the ONNX manifest and records
    the ONNX sha256, batch profile (strings), TensorRT version and GPU."""
    onnx_manifest = _onnx_manifest()
    settings = TrtBuildSettings(precision="int8", min_batch=2, opt_batch=8, max_batch=32)
    manifest = plan_manifest(
        onnx_manifest,
        settings,
        plan_sha256=_sha(PLAN_BYTES),
        tensorrt_version="10.9.0",
        device=A100,
    )
    assert manifest.format == "tensorrt-plan"
    assert manifest.precision == "int8"
    assert manifest.model_id == onnx_manifest.model_id
    assert manifest.source_sha256 == onnx_manifest.source_sha256
    assert manifest.artifact_sha256 == _sha(PLAN_BYTES)
    assert manifest.library_versions == {"tensorrt": "10.9.0"}
    assert manifest.device == "NVIDIA A100-SXM4-80GB (compute 8.0)"
    assert manifest.build == {
        "onnx_sha256": onnx_manifest.artifact_sha256,
        "min_batch": "2",
        "opt_batch": "8",
        "max_batch": "32",
    }
    assert manifest.input_specs() == onnx_manifest.input_specs()
    assert BatchProfile.from_manifest(manifest, Path("x.plan")) == BatchProfile(2, 8, 32)


def test_stored_plan_matches_its_onnx_version_and_gpu(
    stored_pair: tuple[ModelStore, StoredModel, StoredModel],
) -> None:
    """A plan saved through the store reopens (sha256 checked) and passes the load check."""
    store, onnx, plan = stored_pair
    reopened = store.open(plan.path)
    check_plan_manifest(reopened, onnx.manifest, tensorrt_version=TRT_VERSION, device=H100)


@pytest.mark.parametrize(
    ("onnx_data", "version", "device", "difference"),
    [
        (ONNX_BYTES, "10.14.1.48", H100, r"library_versions\[tensorrt\] is '10.13.0.35', need "),
        (ONNX_BYTES, TRT_VERSION, A100, r"device is 'NVIDIA H100 80GB HBM3 \(compute 9.0\)', need"),
        (b"another ONNX model", TRT_VERSION, H100, r"build\[onnx_sha256\] is '[0-9a-f]{64}', need"),
    ],
    ids=["wrong-tensorrt-version", "wrong-gpu", "wrong-onnx"],
)
def test_plan_that_does_not_match_is_refused(
    tmp_path: Path, onnx_data: bytes, version: str, device: GpuDevice, difference: str
) -> None:
    """A plan from another TensorRT version, GPU or ONNX file raises ManifestMismatchError
    naming the plan file and the field that differs."""
    plan = _plan(ModelStore(tmp_path), TrtBuildSettings())
    with pytest.raises(ManifestMismatchError, match=difference) as raised:
        check_plan_manifest(
            plan, _onnx_manifest(onnx_data), tensorrt_version=version, device=device
        )
    assert str(plan.path) in str(raised.value)
    assert "rebuild it" in str(raised.value)


def test_manifest_without_batch_profile_is_a_model_file_error() -> None:
    """A plan manifest missing its batch sizes cannot be run and says which file is at fault."""
    manifest = _onnx_manifest()
    with pytest.raises(ModelFileError, match=r"broken\.plan: manifest has no valid batch profile"):
        BatchProfile.from_manifest(manifest, Path("broken.plan"))


def _engine_tensors(output_type: str = "FLOAT") -> list[EngineTensor]:
    return [
        EngineTensor("chips", is_input=True, type_name="FLOAT", shape=(-1, 3, 150, 150)),
        EngineTensor("descriptors", is_input=False, type_name=output_type, shape=(-1, 128)),
    ]


def test_engine_tensors_matching_the_manifest_pass() -> None:
    """An engine with the manifest's names, float32 types and dynamic batch axes is accepted."""
    check_engine_io(Path("p.plan"), _onnx_manifest(), _engine_tensors())


_CHIPS, _DESCRIPTORS = _engine_tensors()
_EXTRA = EngineTensor("extra", is_input=False, type_name="FLOAT", shape=(4,))
_STATIC_CHIPS = EngineTensor("chips", is_input=True, type_name="FLOAT", shape=(8, 3, 150, 150))
_BF16_CHIPS = EngineTensor("chips", is_input=True, type_name="BF16", shape=(-1, 3, 150, 150))
_INPUT_DESCRIPTORS = EngineTensor("descriptors", is_input=True, type_name="FLOAT", shape=(-1, 128))


@pytest.mark.parametrize(
    ("tensors", "problem"),
    [
        ([_CHIPS, _engine_tensors("HALF")[1]], "'descriptors' has type float16, need float32"),
        ([_CHIPS], "'descriptors' is missing from the plan"),
        ([_CHIPS, _DESCRIPTORS, _EXTRA], "the plan has a tensor 'extra' the manifest does not"),
        ([_STATIC_CHIPS, _DESCRIPTORS], r"'chips' has shape \(8, 3, 150, 150\), need \(-1, 3"),
        ([_CHIPS, _INPUT_DESCRIPTORS], "'descriptors' is an input in the plan"),
        ([_BF16_CHIPS, _DESCRIPTORS], "'chips' has type BF16, need float32"),
    ],
)
def test_engine_tensors_that_differ_are_refused(tensors: list[EngineTensor], problem: str) -> None:
    """A deserialized engine whose I/O differs from the manifest raises ModelFileError naming
    the plan file and the tensor."""
    with pytest.raises(ModelFileError, match=rf"p\.plan: the engine does not match .*{problem}"):
        check_engine_io(Path("p.plan"), _onnx_manifest(), tensors)


def test_tensorrt_severities_map_to_logging_levels() -> None:
    """TensorRT errors log as errors, warnings as warnings, its chatty INFO as DEBUG."""
    assert [python_log_level(severity) for severity in range(5)] == [
        logging.CRITICAL,
        logging.ERROR,
        logging.WARNING,
        logging.DEBUG,
        logging.DEBUG,
    ]


# ---------------------------------------------------------------------------------------------
# Without TensorRT


@pytest.mark.usefixtures("without_tensorrt")
def test_build_without_tensorrt_names_the_extra(
    stored_pair: tuple[ModelStore, StoredModel, StoredModel],
) -> None:
    """Building a plan where TensorRT is not installed raises BackendUnavailableError that says
    what to install."""
    store, onnx, _ = stored_pair
    with pytest.raises(BackendUnavailableError, match=r"TensorRT is not installed.*\[tensorrt\]"):
        build_engine(onnx.path, store, TrtBuildSettings())


@pytest.mark.usefixtures("without_tensorrt")
def test_load_without_tensorrt_names_the_extra(
    stored_pair: tuple[ModelStore, StoredModel, StoredModel],
) -> None:
    """Loading a plan where TensorRT is not installed raises BackendUnavailableError."""
    store, onnx, plan = stored_pair
    with pytest.raises(BackendUnavailableError, match=r"TensorRT is not installed.*\[tensorrt\]"):
        TrtEngine(plan.path, store, onnx_path=onnx.path)
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed"):
        tensorrt_version()


@pytest.mark.usefixtures("empty_tensorrt")
def test_empty_tensorrt_package_counts_as_missing(
    stored_pair: tuple[ModelStore, StoredModel, StoredModel],
) -> None:
    """An importable 'tensorrt' without Builder (what tensorrt-stubs installs) is not taken for
    TensorRT: building, loading and asking the version all raise BackendUnavailableError."""
    store, onnx, plan = stored_pair
    message = r"is not NVIDIA TensorRT \(it has no Builder; tensorrt-stubs"
    with pytest.raises(BackendUnavailableError, match=message):
        build_engine(onnx.path, store, TrtBuildSettings())
    with pytest.raises(BackendUnavailableError, match=message):
        TrtEngine(plan.path, store, onnx_path=onnx.path)
    with pytest.raises(BackendUnavailableError, match=message):
        tensorrt_version()


def test_plan_file_is_checked_before_tensorrt(
    stored_pair: tuple[ModelStore, StoredModel, StoredModel],
) -> None:
    """A truncated plan is a ManifestMismatchError on every machine, TensorRT or not."""
    store, onnx, plan = stored_pair
    plan.path.write_bytes(PLAN_BYTES[:10])
    with pytest.raises(ManifestMismatchError, match="sha256 is"):
        TrtEngine(plan.path, store, onnx_path=onnx.path)


def test_tensorrt_backend_on_cpu_is_a_config_error(
    stored_pair: tuple[ModelStore, StoredModel, StoredModel],
) -> None:
    """Choosing the tensorrt backend with device 'cpu' is refused rather than run elsewhere."""
    from engines.models.encoder import EngineSettings  # noqa: PLC0415

    store, onnx, _ = stored_pair
    with pytest.raises(ConfigError, match="runs on device 'cuda', not 'cpu'"):
        load_or_build_encoder_plan(onnx.path, store, EngineSettings(backend="tensorrt"))


@pytest.mark.usefixtures("without_tensorrt")
def test_load_or_build_plan_without_tensorrt_names_the_extra(
    stored_pair: tuple[ModelStore, StoredModel, StoredModel],
) -> None:
    """The model-agnostic plan loader raises BackendUnavailableError naming the extra when
    TensorRT is missing, and builds nothing into the store."""
    store, onnx, plan = stored_pair
    plan.path.unlink()
    with pytest.raises(BackendUnavailableError, match=r"TensorRT is not installed.*\[tensorrt\]"):
        load_or_build_plan(onnx.path, store, TrtBuildSettings())
    assert not list(store.plans_dir.rglob("*.plan"))


# ---------------------------------------------------------------------------------------------
# A detector model's plan (pure: its real ONNX manifest, a stand-in plan)


@pytest.fixture(scope="module")
def detector_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelStore, StoredModel]:
    """A store holding the converted BlazeFace full-range ONNX (192 px input, 2304 anchors)."""
    store = ModelStore(tmp_path_factory.mktemp("detector"))
    return store, build_detector_onnx(store, "blazeface_full")


def test_detector_plan_settings_are_tuned_for_one_frame() -> None:
    """A tensorrt detector builds a plan of the configured precision, batch 1..8 tuned for 1
    (the detector runs one frame per call)."""
    settings = DetectorEngineSettings(backend="tensorrt", device="cuda", precision="fp16")
    build = settings.tensorrt_build()
    assert build.precision == "fp16"
    assert build.batch_profile == BatchProfile(1, 1, 8)
    assert build.batch_profile.buckets == (1, 2, 4, 8)


def test_detector_plan_path_is_apart_from_the_encoders(
    detector_model: tuple[ModelStore, StoredModel],
) -> None:
    """The detector's plan lives under its own model id, named by precision, GPU and TensorRT
    version, so it never overwrites the encoder's plan in the same store."""
    store, onnx = detector_model
    manifest = onnx.manifest
    assert manifest.model_id.startswith("blazeface_full-")
    path = plan_path_for(store, manifest, "fp16", tensorrt_version=TRT_VERSION, device=H100)
    assert path == (
        store.plans_dir / manifest.model_id / "fp16-NVIDIA_H100_80GB_HBM3_sm90-trt10.13.0.35.plan"
    )
    encoder = plan_path_for(
        store, _onnx_manifest(), "fp16", tensorrt_version=TRT_VERSION, device=H100
    )
    assert path.parent != encoder.parent


def test_detector_plan_manifest_and_profile(
    detector_model: tuple[ModelStore, StoredModel],
) -> None:
    """A plan "built" from the detector's ONNX records its ONNX sha256 and batch profile, keeps
    its tensors (all with a dynamic batch axis), gets a batch-only profile on ``images``, is
    accepted by the load check, and is refused for another TensorRT version."""
    store, onnx = detector_model
    build = DetectorEngineSettings(backend="tensorrt", device="cuda").tensorrt_build()
    manifest = plan_manifest(
        onnx.manifest,
        build,
        plan_sha256=_sha(PLAN_BYTES),
        tensorrt_version=TRT_VERSION,
        device=H100,
    )
    assert manifest.format == "tensorrt-plan"
    assert manifest.precision == "fp32"
    assert manifest.model_id == onnx.manifest.model_id
    assert manifest.build == {
        "onnx_sha256": onnx.manifest.artifact_sha256,
        "min_batch": "1",
        "opt_batch": "1",
        "max_batch": "8",
    }
    assert {name: spec.shape for name, spec in manifest.input_specs().items()} == {
        "images": (None, 3, 192, 192)
    }
    assert {name: spec.shape for name, spec in manifest.output_specs().items()} == {
        "regressors": (None, 2304, 16),
        "classificators": (None, 2304, 1),
    }
    shapes = profile_shapes("images", (-1, 3, 192, 192), build.batch_profile)
    assert shapes is not None
    assert (shapes.minimum, shapes.optimum, shapes.maximum) == (
        (1, 3, 192, 192),
        (1, 3, 192, 192),
        (8, 3, 192, 192),
    )
    tensors = [
        EngineTensor("images", is_input=True, type_name="FLOAT", shape=(-1, 3, 192, 192)),
        EngineTensor("regressors", is_input=False, type_name="FLOAT", shape=(-1, 2304, 16)),
        EngineTensor("classificators", is_input=False, type_name="FLOAT", shape=(-1, 2304, 1)),
    ]
    path = plan_path_for(store, onnx.manifest, "fp32", tensorrt_version=TRT_VERSION, device=H100)
    check_engine_io(path, manifest, tensors)
    plan = store.save(path, PLAN_BYTES, manifest)
    check_plan_manifest(
        store.open(plan.path), onnx.manifest, tensorrt_version=TRT_VERSION, device=H100
    )
    with pytest.raises(ManifestMismatchError, match=r"library_versions\[tensorrt\]"):
        check_plan_manifest(plan, onnx.manifest, tensorrt_version="10.14.1.48", device=H100)


# ---------------------------------------------------------------------------------------------
# CUDA runtime wrapper


def _gpu_count() -> int | None:
    """GPUs cuda-python sees; None when cuda-bindings is not installed."""
    try:
        runtime = importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        return None
    error, count = runtime.cudaGetDeviceCount()
    return int(count) if error == runtime.cudaError_t.cudaSuccess else 0


@pytest.fixture
def cuda_without_gpu() -> CudaRuntime:
    """The wrapper over the real cuda-bindings, on a machine that has no GPU."""
    count = _gpu_count()
    if count is None:
        pytest.skip("cuda-bindings is not installed (facestream[gpu]); its failure path needs it")
    if count > 0:
        pytest.skip(f"this machine has {count} GPU(s); the no-GPU errors cannot be shown here")
    return CudaRuntime()


def test_cuda_failure_messages_say_what_is_missing() -> None:
    """Driver/GPU errors read as a missing GPU; other errors name the call and the error."""
    no_driver = cuda_failure_message(
        "cudaMalloc(64)", "cudaErrorInsufficientDriver", "driver too old"
    )
    assert no_driver.startswith("cudaMalloc(64): no usable NVIDIA GPU or driver on this machine")
    assert "cudaErrorInsufficientDriver" in no_driver
    other = cuda_failure_message("cudaMalloc(64)", "cudaErrorMemoryAllocation", "out of memory")
    assert other == "cudaMalloc(64) failed: cudaErrorMemoryAllocation: out of memory"


def test_missing_cuda_bindings_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without cuda-bindings, making the runtime raises BackendUnavailableError naming the
    extra that installs it."""
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    with pytest.raises(BackendUnavailableError, match=r"cuda-python is not installed.*\[gpu\]"):
        CudaRuntime()


CUDA_CALLS: dict[str, Callable[[CudaRuntime], object]] = {
    "set_device": lambda cuda: cuda.set_device(0),
    "select_device": lambda cuda: cuda.select_device(0),
    "create_stream": lambda cuda: cuda.create_stream(),
    "allocate_device": lambda cuda: cuda.allocate_device(1024),
    "allocate_pinned": lambda cuda: cuda.allocate_pinned((4, 128), np.float32),
    "copy_to_device": lambda cuda: cuda.copy_to_device_async(
        DeviceBuffer(0, 64), np.zeros(16, np.float32), cuda.default_stream()
    ),
    "copy_to_host": lambda cuda: cuda.copy_to_host_async(
        np.zeros(16, np.float32), DeviceBuffer(0, 64), cuda.default_stream()
    ),
    "synchronize": lambda cuda: cuda.synchronize(cuda.default_stream()),
    "free": lambda cuda: cuda.free(DeviceBuffer(0, 64)),
}


@pytest.mark.parametrize("call", sorted(CUDA_CALLS))
def test_every_cuda_call_without_gpu_is_backend_unavailable(
    cuda_without_gpu: CudaRuntime, call: str
) -> None:
    """Each wrapped CUDA call, on a machine without a driver or GPU, raises
    BackendUnavailableError naming the CUDA call and error, never returns an error tuple."""
    with pytest.raises(BackendUnavailableError, match=r"no usable NVIDIA GPU or driver.*cudaError"):
        CUDA_CALLS[call](cuda_without_gpu)


def test_copy_larger_than_the_device_buffer_is_refused(cuda_without_gpu: CudaRuntime) -> None:
    """A copy that would overrun its device buffer is an InputSpecError before CUDA is called."""
    too_big = np.zeros(32, np.float32)  # 128 bytes into 64
    with pytest.raises(InputSpecError, match="cannot copy 128 bytes into a device buffer of 64"):
        cuda_without_gpu.copy_to_device_async(
            DeviceBuffer(0, 64), too_big, cuda_without_gpu.default_stream()
        )
    with pytest.raises(InputSpecError, match="cannot copy 128 bytes out of a device buffer of 64"):
        cuda_without_gpu.copy_to_host_async(
            too_big, DeviceBuffer(0, 64), cuda_without_gpu.default_stream()
        )


def test_pinned_buffer_is_a_numpy_view_of_its_memory() -> None:
    """A PinnedHostBuffer's array reads and writes the memory at its address, in its shape."""
    backing = (ctypes.c_ubyte * 24)()
    buffer = PinnedHostBuffer(ctypes.addressof(backing), (3, 2), np.float32)
    buffer.array[:] = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert buffer.nbytes == 24
    np.testing.assert_array_equal(np.frombuffer(bytes(backing), np.float32), np.arange(6))


# ---------------------------------------------------------------------------------------------
# With TensorRT and a GPU


def _has_real_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: PLC0415
    except ImportError:
        return False
    return hasattr(tensorrt, "Builder")


@pytest.fixture(scope="session")
def tensorrt_gpu() -> None:
    """Skip unless NVIDIA TensorRT (with Builder) and a GPU seen by cuda-bindings are here."""
    if not _has_real_tensorrt():
        pytest.skip("NVIDIA TensorRT is not installed (tensorrt.Builder is unavailable)")
    if not _gpu_count():
        pytest.skip("no GPU visible to cuda-bindings")


@pytest.fixture
def cuda_with_gpu() -> CudaRuntime:
    """The CUDA runtime wrapper on a machine with a GPU."""
    if not _gpu_count():
        pytest.skip("no GPU visible to cuda-bindings (or cuda-bindings is not installed)")
    return CudaRuntime()


def test_pinned_round_trip_through_the_gpu(cuda_with_gpu: CudaRuntime) -> None:
    """Host -> device -> host through pinned buffers on a stream returns the same bytes."""
    cuda = cuda_with_gpu
    device = cuda.select_device(0)
    assert device.major >= 1
    assert device.name
    stream = cuda.create_stream()
    source = cuda.allocate_pinned((8, 128), np.float32)
    target = cuda.allocate_pinned((8, 128), np.float32)
    memory = cuda.allocate_device(source.nbytes)
    try:
        source.array[:] = np.random.default_rng(3).normal(size=(8, 128))
        target.array[:] = 0
        cuda.copy_to_device_async(memory, source.array, stream)
        cuda.copy_to_host_async(target.array[:5], memory, stream)
        cuda.synchronize(stream)
        np.testing.assert_array_equal(target.array[:5], source.array[:5])
        assert not target.array[5:].any()
    finally:
        for resource in (memory, target, source, stream):
            cuda.free(resource)


def test_fp16_plan_matches_onnxruntime_across_chunks(
    tensorrt_gpu: None, session_store: ModelStore, encoder_model: StoredModel
) -> None:
    """The encoder built as an fp16 plan gives ONNX Runtime's descriptors (within fp16 noise)
    for 37 chips run as 16 + 16 + 5-padded-to-8 rows, and a chip alone gives what it gives
    inside the batch (padding does not leak into real rows)."""
    from engines.runtime.onnxrt import OrtEngine, OrtSettings  # noqa: PLC0415

    settings = TrtBuildSettings(precision="fp16", min_batch=1, opt_batch=8, max_batch=16)
    plan = build_engine(encoder_model.path, session_store, settings)
    assert session_store.timing_cache_path.is_file()
    chips = np.random.default_rng(4).uniform(0, 255, (37, 3, 150, 150)).astype(np.float32)
    with OrtEngine(encoder_model.path, session_store, OrtSettings()) as reference:
        expected = reference.infer({"chips": chips})["descriptors"]
    with TrtEngine(plan.path, session_store, onnx_path=encoder_model.path) as engine:
        assert engine.backend == "tensorrt-fp16"
        assert engine.model_id == encoder_model.manifest.model_id
        together = engine.infer({"chips": chips})["descriptors"]
        alone = engine.infer({"chips": chips[36:37]})["descriptors"]
    assert together.shape == (37, 128)
    assert together.dtype == np.float32
    np.testing.assert_allclose(together, expected, atol=2e-2)
    np.testing.assert_allclose(alone[0], together[36], atol=2e-3)
