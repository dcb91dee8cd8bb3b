"""Engine settings shared by the small networks beside the encoder (face detector,
anti-spoofing CNN): which backend runs one, on which device, in which precision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from engines.base import Precision
from engines.errors import ConfigError

__all__ = ["NETWORK_BACKENDS", "NetworkEngineSettings"]

NETWORK_BACKENDS = ("onnxruntime", "tensorrt")
_TENSORRT_PRECISIONS = ("fp32", "fp16")  # int8 would need calibration frames


@dataclass(frozen=True, slots=True)
class NetworkEngineSettings:
    """Which backend runs a network, and how.

    backend: ``onnxruntime`` (cpu or cuda, fp32) or ``tensorrt`` (cuda, fp32 or fp16);
    device_index: the GPU used when device is ``cuda``; threads: CPU threads of an onnxruntime
    engine (0: one per core). Subclasses name the network in error messages (``role``).
    """

    role: ClassVar[str] = "network"

    backend: str = "onnxruntime"
    device: Literal["cpu", "cuda"] = "cpu"
    device_index: int = 0
    precision: Precision = "fp32"
    threads: int = 0

    def __post_init__(self) -> None:
        role = self.role
        if self.backend not in NETWORK_BACKENDS:
            raise ConfigError(
                f"unknown {role} backend {self.backend!r}; valid: {', '.join(NETWORK_BACKENDS)}"
            )
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"{role} device {self.device!r}: expected cpu or cuda")
        if self.threads < 0 or self.device_index < 0:
            raise ConfigError(f"{role} threads and device_index must be >= 0")
        if self.backend == "tensorrt":
            if self.device != "cuda":
                raise ConfigError(
                    f"the tensorrt {role} backend runs on device 'cuda', not {self.device!r}"
                )
            if self.precision not in _TENSORRT_PRECISIONS:
                raise ConfigError(
                    f"tensorrt {role} precision {self.precision!r}: expected one of "
                    f"{', '.join(_TENSORRT_PRECISIONS)}"
                )
        elif self.precision != "fp32":
            raise ConfigError(f"the {self.backend} {role} backend runs fp32, not {self.precision}")
