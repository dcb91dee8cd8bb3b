"""INT8 face encoder by ONNX Runtime static quantisation (QDQ), calibrated on real face chips.

``FaceChipDataset`` holds aligned chips (RGB uint8 (N, 150, 150, 3), as the aligner cuts them)
and yields the engine's input exactly as ``pipeline.recognition.encode.FaceEncoder`` builds it:
float32
(N, 3, 150, 150), channels first, 0..255, no scaling (the encoder graph normalises). The same
dataset feeds ONNX Runtime's calibration reader here and TensorRT's entropy calibrator
(``engines.runtime.tensorrt.calibrator``), so both see the pipeline's own preprocessing.

``quantize_encoder`` inserts QuantizeLinear/DequantizeLinear pairs (QDQ) with per-channel int8
weights and uint8 activations whose ranges come from the chips (entropy, percentile or min-max
calibration), and stores the result with a manifest (precision int8) under a new model id:
int8 descriptors differ slightly from fp32 ones, so they are another embedding space and
galleries must not mix them. ``quantize_style_model`` runs the same path on a style network,
calibrated on video frames fed as ``pipeline.style.engine.StyleNetwork`` feeds them (float32
(1, 3, H, W), BGR 0..255). ``onnxruntime`` is imported on use.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import numpy as np
import numpy.typing as npt
import onnx

from engines.base import ModelManifest
from engines.convert.dlib_resnet import CHIP_SIZE_PX
from engines.convert.parity import image_files, read_rgb
from engines.errors import BackendUnavailableError, CalibrationSetError, ConfigError, ModelFileError
from engines.store import ENCODER_NAME, ModelStore, StoredModel

__all__ = [
    "ENCODER_INT8_NAME",
    "MIN_CALIBRATION_CHIPS",
    "MIN_STYLE_FRAMES",
    "QUANT_METHODS",
    "ArrayCalibrationReader",
    "CalibrationReader",
    "FaceChipDataset",
    "OrtCalibrationReader",
    "QuantMethod",
    "QuantizeSettings",
    "StyleFrameDataset",
    "int8_model_id",
    "quantize_encoder",
    "quantize_onnx",
    "quantize_style_model",
]

_log = logging.getLogger(__name__)

ENCODER_INT8_NAME = f"{ENCODER_NAME}_int8"
# Fewer chips than this give activation ranges from a handful of faces: entropy histograms are
# too sparse and one odd photo sets a layer's range. 32 is also two TensorRT batches of 16.
MIN_CALIBRATION_CHIPS = 32
# a style network sees whole frames: a few frames of varied scenes cover its activation ranges
MIN_STYLE_FRAMES = 8
_ENTROPY_BINS = 2048  # histogram bins per activation (TensorRT's entropy calibrator uses 2048)
_ENTROPY_QUANTIZED_BINS = 128  # half of uint8's 256 levels: the clipping candidates are symmetric
QuantMethod = Literal["entropy", "percentile", "minmax"]
QUANT_METHODS: tuple[str, ...] = get_args(QuantMethod)


@dataclass(frozen=True, slots=True)
class QuantizeSettings:
    """How to quantise.

    method: activation range calibration (entropy: KL-optimal clipping; percentile: clip at
    ``percentile``; minmax: no clipping); per_channel: one weight scale per output channel;
    reduce_range: 7-bit weights, which avoids int16 saturation of the u8s8 kernels on x86 CPUs
    without VNNI (AVX2 only); batch_size: chips per calibration batch; min_chips: the smallest
    calibration set accepted.
    """

    method: QuantMethod = "percentile"
    per_channel: bool = True
    reduce_range: bool = True
    percentile: float = 99.999
    batch_size: int = 16
    min_chips: int = MIN_CALIBRATION_CHIPS

    def __post_init__(self) -> None:
        if self.method not in QUANT_METHODS:
            raise ConfigError(
                f"quantisation method {self.method!r}: expected one of {', '.join(QUANT_METHODS)}"
            )
        if not 90.0 <= self.percentile < 100.0:
            raise ConfigError(f"percentile must be in [90, 100), got {self.percentile}")
        if not 1 <= self.batch_size <= self.min_chips:
            raise ConfigError(
                f"need 1 <= batch_size ({self.batch_size}) <= min_chips ({self.min_chips}): "
                "calibration uses full batches only"
            )


def _fingerprint(array: npt.NDArray[np.uint8]) -> str:
    digest = hashlib.sha256(str(array.shape).encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


class CalibrationReader(Protocol):
    """ONNX Runtime's ``CalibrationDataReader`` interface, plus ``rewind`` (entropy ranges are
    computed in a first pass over the data, then the quantiser reads it again)."""

    def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
        """The next ``{input_name: batch}``, or None at the end."""
        ...  # pragma: no cover

    def rewind(self) -> None:
        """Start again from the first batch."""
        ...  # pragma: no cover


class FaceChipDataset:
    """Aligned face chips for calibration, served as the encoder's input batches.

    chips: RGB uint8 (N, 150, 150, 3), as ``FaceAligner`` cuts them.
    """

    def __init__(self, chips: npt.NDArray[np.uint8]) -> None:
        expected = (CHIP_SIZE_PX, CHIP_SIZE_PX, 3)
        if chips.dtype != np.uint8 or chips.ndim != 4 or chips.shape[1:] != expected:
            raise CalibrationSetError(
                f"calibration chips must be uint8 (N, {CHIP_SIZE_PX}, {CHIP_SIZE_PX}, 3), got "
                f"{chips.dtype} {chips.shape}"
            )
        self._chips = np.ascontiguousarray(chips)
        self._chips.setflags(write=False)

    @classmethod
    def from_folder(cls, folder: Path) -> FaceChipDataset:
        """Chips saved as 150x150 image files under ``folder`` (searched recursively)."""
        paths = image_files([folder])
        if not paths:
            raise CalibrationSetError(f"{folder}: no image files (.jpg, .png, ...) found")
        chips = [read_rgb(path) for path in paths]
        wrong = [
            str(path)
            for path, chip in zip(paths, chips, strict=True)
            if chip.shape[:2] != (CHIP_SIZE_PX, CHIP_SIZE_PX)
        ]
        if wrong:
            raise CalibrationSetError(
                f"{folder}: chips must be {CHIP_SIZE_PX}x{CHIP_SIZE_PX} aligned faces; "
                f"{len(wrong)} are not, e.g. {wrong[0]}"
            )
        return cls(np.stack(chips))

    def __len__(self) -> int:
        return int(self._chips.shape[0])

    @property
    def chips(self) -> npt.NDArray[np.uint8]:
        """The chips, RGB uint8 (N, 150, 150, 3), read-only."""
        return self._chips

    @property
    def fingerprint(self) -> str:
        """sha256 of the chips (shape and pixels): names what a calibration was made from."""
        return _fingerprint(self._chips)

    def require(self, minimum: int) -> None:
        """CalibrationSetError unless there are at least ``minimum`` chips."""
        if len(self) < minimum:
            raise CalibrationSetError(
                f"the calibration set has {len(self)} face chips; INT8 calibration needs at "
                f"least {minimum} (real aligned faces, ideally from the cameras it will serve)"
            )

    def batch(self, start: int, stop: int) -> npt.NDArray[np.float32]:
        """Chips ``start:stop`` as the encoder's input: float32 (n, 3, 150, 150), 0..255."""
        # the same conversion as pipeline.recognition.encode.FaceEncoder.encode: transpose, then
        # float32
        return np.ascontiguousarray(self._chips[start:stop].transpose(0, 3, 1, 2), dtype=np.float32)

    def batches(
        self, batch_size: int, *, full_only: bool = False
    ) -> Iterator[npt.NDArray[np.float32]]:
        """Every chip once, in order, ``batch_size`` at a time; the last batch may be short,
        or is left out with ``full_only`` (calibrators that need one fixed batch shape)."""
        stop = len(self) - len(self) % batch_size if full_only else len(self)
        for start in range(0, stop, batch_size):
            yield self.batch(start, min(start + batch_size, stop))


class OrtCalibrationReader:
    """ONNX Runtime's ``CalibrationDataReader`` interface over a ``FaceChipDataset``: each
    ``get_next`` returns ``{input_name: batch}`` until the chips are used up, then None.

    Only full batches are served: ONNX Runtime's histogram collectors stack the batches of a
    tensor into one array and fail on a short last batch (the remainder is left out).
    """

    def __init__(self, dataset: FaceChipDataset, input_name: str, *, batch_size: int) -> None:
        self._dataset = dataset
        self._input_name = input_name
        self._batch_size = batch_size
        self._batches = dataset.batches(batch_size, full_only=True)

    def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
        """The next batch, or None at the end."""
        batch = next(self._batches, None)
        return None if batch is None else {self._input_name: batch}

    def rewind(self) -> None:
        """Start again from the first chip."""
        self._batches = self._dataset.batches(self._batch_size, full_only=True)


class StyleFrameDataset:
    """Video frames for calibrating a style network: BGR uint8 (N, H, W, 3) at the network's
    input size, served as ``StyleNetwork.stylize`` feeds them: float32 (1, 3, H, W), 0..255."""

    def __init__(self, frames: npt.NDArray[np.uint8]) -> None:
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
            raise CalibrationSetError(
                f"calibration frames must be BGR uint8 (N, H, W, 3), got {frames.dtype} "
                f"{frames.shape}"
            )
        self._frames = np.ascontiguousarray(frames)
        self._frames.setflags(write=False)

    def __len__(self) -> int:
        return int(self._frames.shape[0])

    @property
    def frames(self) -> npt.NDArray[np.uint8]:
        """The frames, BGR uint8 (N, H, W, 3), read-only."""
        return self._frames

    @property
    def fingerprint(self) -> str:
        """sha256 of the frames (shape and pixels)."""
        return _fingerprint(self._frames)

    def require(self, minimum: int, size: tuple[int, int]) -> None:
        """CalibrationSetError unless there are ``minimum`` frames of ``size`` (height, width)."""
        if len(self) < minimum:
            raise CalibrationSetError(
                f"the calibration set has {len(self)} frames; INT8 calibration of a style "
                f"network needs at least {minimum}"
            )
        if self._frames.shape[1:3] != size:
            raise CalibrationSetError(
                f"calibration frames are {self._frames.shape[2]}x{self._frames.shape[1]}, the "
                f"style network takes {size[1]}x{size[0]}"
            )

    def batches(self) -> list[npt.NDArray[np.float32]]:
        """Every frame as the network's input, float32 (1, 3, H, W), BGR 0..255."""
        return [frame.transpose(2, 0, 1)[None].astype(np.float32) for frame in self._frames]


class ArrayCalibrationReader:
    """``CalibrationReader`` over a fixed list of input batches of one input."""

    def __init__(self, input_name: str, batches: Sequence[npt.NDArray[np.float32]]) -> None:
        self._input_name = input_name
        self._batches = list(batches)
        self._next = 0

    def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
        """The next batch, or None at the end."""
        if self._next >= len(self._batches):
            return None
        self._next += 1
        return {self._input_name: self._batches[self._next - 1]}

    def rewind(self) -> None:
        """Start again from the first batch."""
        self._next = 0


def int8_model_id(fp32_model_id: str, dataset: FaceChipDataset, settings: QuantizeSettings) -> str:
    """The int8 encoder's model id: the fp32 id, the method and the calibration set's hash."""
    return f"{fp32_model_id}-int8-{settings.method}-{dataset.fingerprint[:8]}"


def _quantization() -> Any:
    try:
        from onnxruntime import quantization  # noqa: PLC0415  (optional dependency)
    except ImportError as exc:
        raise BackendUnavailableError(
            "int8 quantisation needs onnxruntime: install facestream[cpu]"
        ) from exc
    return quantization


def _entropy_ranges(quantization: Any, model: Path, reader: CalibrationReader, out: Path) -> None:
    """Entropy (KL) activation ranges of ``model`` on ``reader``'s chips, written to ``out`` as
    ONNX Runtime's calibration cache.

    ``quantize_static`` cannot pass histogram sizes to its entropy calibrator, whose default of
    128 bins searched for 128 quantised bins leaves one candidate: the full min-max range. Here
    the calibrator gets TensorRT's sizes (2048 bins, 128 quantised), so it really clips.
    """
    from onnxruntime.quantization.registry import (  # noqa: PLC0415
        QDQRegistry,
        QLinearOpsRegistry,
    )

    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".entropy-") as work:
        calibrator = quantization.create_calibrator(
            model,
            sorted(set(QLinearOpsRegistry) | set(QDQRegistry)),
            augmented_model_path=str(Path(work) / "augmented.onnx"),
            calibrate_method=quantization.CalibrationMethod.Entropy,
            extra_options={
                "num_bins": _ENTROPY_BINS,
                "num_quantized_bins": _ENTROPY_QUANTIZED_BINS,
            },
        )
        calibrator.collect_data(reader)
        quantization.save_tensors_data(calibrator.compute_data(), out)
    reader.rewind()


def _build_record(
    fp32: StoredModel,
    dataset: FaceChipDataset | StyleFrameDataset,
    settings: QuantizeSettings,
) -> dict[str, str]:
    what = "chips" if isinstance(dataset, FaceChipDataset) else "frames"
    return {
        "quantizer": "onnxruntime.quantization.quantize_static",
        "format": "QDQ",
        "method": settings.method,
        "percentile": str(settings.percentile) if settings.method == "percentile" else "",
        "per_channel": str(settings.per_channel),
        "reduce_range": str(settings.reduce_range),
        "activations": "uint8",
        "weights": "int8",
        f"calibration_{what}": str(len(dataset)),
        "calibration_batch": str(settings.batch_size),
        "calibration_sha256": dataset.fingerprint,
        "fp32_model_id": fp32.manifest.model_id,
        "fp32_sha256": fp32.manifest.artifact_sha256,
    }


def _up_to_date(store: ModelStore, path: Path, record: dict[str, str]) -> StoredModel | None:
    if not path.exists():
        return None
    try:
        stored = store.open(path)
    except ModelFileError as exc:
        _log.warning("rebuilding %s: %s", path, exc)
        return None
    if stored.manifest.precision != "int8" or stored.manifest.build != record:
        return None
    return stored


def quantize_onnx(
    source: Path, reader: CalibrationReader, settings: QuantizeSettings, *, work_dir: Path
) -> bytes:
    """The QDQ int8 model (serialised) of the fp32 ONNX file ``source``: per-channel int8
    weights (7-bit with ``reduce_range``), uint8 activations whose ranges ``settings.method``
    computes on ``reader``'s batches. Temporary files go to a folder under ``work_dir``."""
    quantization = _quantization()
    methods = {
        "entropy": quantization.CalibrationMethod.Entropy,
        "percentile": quantization.CalibrationMethod.Percentile,
        "minmax": quantization.CalibrationMethod.MinMax,
    }
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix=".quantize-") as work:
        prepared = Path(work) / "prepared.onnx"
        quantized = Path(work) / "int8.onnx"
        # shape inference and graph folding first, as ONNX Runtime recommends for QDQ
        quantization.quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        ranges = None
        if settings.method == "entropy":
            ranges = Path(work) / "ranges.json"
            _entropy_ranges(quantization, prepared, reader, ranges)
        quantization.quantize_static(
            str(prepared),
            str(quantized),
            None if ranges is not None else reader,
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=methods[settings.method],
            calibration_cache_path=None if ranges is None else str(ranges),
            extra_options={"CalibPercentile": settings.percentile},
        )
        return quantized.read_bytes()


def _store_int8(
    store: ModelStore, path: Path, fp32: StoredModel, data: bytes, spec: tuple[str, dict[str, str]]
) -> StoredModel:
    """Save ``data`` at ``path`` with an int8 manifest; ``spec``: the model id and build record."""
    model_id, record = spec
    model = onnx.load_from_string(data)
    manifest = ModelManifest(
        model_id=model_id,
        format="onnx",
        precision="int8",
        source_sha256=fp32.manifest.source_sha256,
        artifact_sha256=hashlib.sha256(data).hexdigest(),
        inputs=fp32.manifest.inputs,
        outputs=fp32.manifest.outputs,
        library_versions={
            "onnx": onnx.__version__,
            "onnxruntime": str(_onnxruntime_version()),
            "opset": str(model.opset_import[0].version),
        },
        build=record,
    )
    return store.save(path, data, manifest)


def _require_fp32_onnx(fp32: StoredModel) -> None:
    if fp32.manifest.precision != "fp32" or fp32.manifest.format != "onnx":
        raise ModelFileError(f"{fp32.path}: quantisation needs an fp32 ONNX model")


def quantize_encoder(
    store: ModelStore,
    fp32: StoredModel,
    dataset: FaceChipDataset,
    settings: QuantizeSettings | None = None,
    *,
    force: bool = False,
) -> StoredModel:
    """Quantise the fp32 encoder ``fp32`` with ``dataset`` and store it as ``ENCODER_INT8_NAME``.

    An int8 model made from the same fp32 file, chips and settings is reused unless ``force``.
    CalibrationSetError when ``dataset`` has fewer than ``settings.min_chips`` chips.
    """
    settings = settings or QuantizeSettings()
    dataset.require(settings.min_chips)
    _require_fp32_onnx(fp32)
    path = store.model_path(ENCODER_INT8_NAME)
    record = _build_record(fp32, dataset, settings)
    current = None if force else _up_to_date(store, path, record)
    if current is not None:
        return current
    (input_spec,) = fp32.manifest.inputs
    reader = OrtCalibrationReader(dataset, input_spec.name, batch_size=settings.batch_size)
    data = quantize_onnx(fp32.path, reader, settings, work_dir=store.models_dir)
    model_id = int8_model_id(fp32.manifest.model_id, dataset, settings)
    stored = _store_int8(store, path, fp32, data, (model_id, record))
    _log.info(
        "quantised %s to %s (%s, %d chips, model id %s)",
        fp32.path,
        path,
        settings.method,
        len(dataset),
        model_id,
    )
    return stored


def quantize_style_model(
    store: ModelStore,
    fp32: StoredModel,
    frames: StyleFrameDataset,
    settings: QuantizeSettings | None = None,
) -> StoredModel:
    """Quantise the fp32 style network ``fp32`` (fixed input (1, 3, H, W)) on ``frames`` and
    store it in ``store`` as ``<fp32 name>_int8`` under the model id
    ``<fp32 id>-int8-<method>-<frames sha256[:8]>``; the style runtime loads it like any
    style model. Default settings: batch 1 (the network's fixed batch), at least
    ``MIN_STYLE_FRAMES`` frames. CalibrationSetError for too few frames or the wrong size.
    """
    settings = settings or QuantizeSettings(batch_size=1, min_chips=MIN_STYLE_FRAMES)
    _require_fp32_onnx(fp32)
    (input_spec,) = fp32.manifest.inputs
    shape = tuple(input_spec.shape)
    if len(shape) != 4 or shape[0] != 1 or not all(isinstance(dim, int) for dim in shape[2:]):
        raise ModelFileError(f"{fp32.path}: a style network takes (1, 3, H, W), not {shape}")
    frames.require(settings.min_chips, (int(shape[2] or 0), int(shape[3] or 0)))
    reader = ArrayCalibrationReader(input_spec.name, frames.batches())
    data = quantize_onnx(fp32.path, reader, settings, work_dir=store.models_dir)
    model_id = f"{fp32.manifest.model_id}-int8-{settings.method}-{frames.fingerprint[:8]}"
    path = store.model_path(f"{fp32.path.stem}_int8")
    stored = _store_int8(store, path, fp32, data, (model_id, _build_record(fp32, frames, settings)))
    _log.info("quantised %s to %s (%d frames, model id %s)", fp32.path, path, len(frames), model_id)
    return stored


def _onnxruntime_version() -> str:
    import onnxruntime  # noqa: PLC0415  (present: quantisation imported it already)

    return str(onnxruntime.__version__)
