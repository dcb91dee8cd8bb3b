"""``facestream doctor``: every part the service and its tests use, checked where it runs.

Each check looks at the real thing (imports the library, asks the binary its version, opens
the model store, writes into the data directory, connects to a camera's port) and answers with
a ``Part``: ``ok``, ``missing`` (not there: the fix installs it), ``wrong_version`` (there, but
one we do not support) or ``unavailable`` (there is nothing to fix on this machine, e.g. no
GPU, or a camera that does not answer right now). ``runtime`` says whether ``facestream run``
needs the part, as against the tests or the GPU path; a runtime part that is missing or of the
wrong version makes the whole report fail.

No check raises: a check that breaks reports its own failure, so the report is complete even on
a machine with none of the system packages (or no apt at all).
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pipeline.config.service import FaceStreamConfig

__all__ = ["Part", "PartStatus", "Report", "diagnose"]

PartStatus = Literal["ok", "missing", "wrong_version", "unavailable"]

_APT_FIX = "make install (or: bash deploy/system-packages.sh {group})"
_PIP_FIX = "make install (or: .venv/bin/pip install -e '.[cpu,gstreamer]')"
_MINIMUM_REDIS = (6, 2)  # GETDEL, ZRANGE BYSCORE ... LIMIT and ACL selectors used by the gallery
_COMMAND_TIMEOUT_SECONDS = 10.0
_CAMERA_TIMEOUT_SECONDS = 2.0

# the GStreamer elements capture builds its pipelines from, and those only the tests need
_RUNTIME_ELEMENTS = ("rtspsrc", "decodebin", "videoconvert", "appsink", "avdec_h264")
_TEST_ELEMENTS = ("x264enc", "rtph264pay")


@dataclass(frozen=True, slots=True)
class Part:
    """One checked part: what it is, how it stands, and how to fix it when it is not ok."""

    name: str
    status: PartStatus
    runtime: bool
    detail: str
    fix: str = ""


@dataclass(frozen=True, slots=True)
class Report:
    """Every part; ``ok`` is False when a runtime part is missing or of the wrong version."""

    parts: tuple[Part, ...]

    @property
    def ok(self) -> bool:
        return not any(
            part.runtime and part.status in ("missing", "wrong_version") for part in self.parts
        )

    def to_json(self) -> dict[str, object]:
        return {"ok": self.ok, "parts": [asdict(part) for part in self.parts]}


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(number) for number in re.findall(r"\d+", text)[:3])


def _command_output(argv: Sequence[str]) -> str:
    completed = subprocess.run(
        argv, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_SECONDS, check=False
    )
    return (completed.stdout or completed.stderr).strip()


def check_python() -> Part:
    version = ".".join(str(number) for number in sys.version_info[:3])
    if sys.version_info[:2] in ((3, 11), (3, 12)):
        return Part("python", "ok", True, f"{version} at {sys.executable}")
    return Part("python", "wrong_version", True, version, "use Python 3.11 (or 3.12)")


def check_python_package(module: str, *, runtime: bool = True) -> Part:
    """Imports ``module`` and reports its version."""
    try:
        imported = importlib.import_module(module)
    except Exception as exc:  # any import failure is the answer
        return Part(
            f"python:{module}", "missing", runtime, f"{type(exc).__name__}: {exc}", _PIP_FIX
        )
    version = getattr(imported, "__version__", "") or getattr(imported, "VERSION", "")
    return Part(f"python:{module}", "ok", runtime, str(version) or "imported")


def check_redis_server() -> Part:
    from pipeline.redis.server import locate_redis_server  # noqa: PLC0415

    try:
        binary = locate_redis_server()
    except Exception as exc:
        return Part("redis-server", "missing", True, str(exc), _APT_FIX.format(group="runtime"))
    output = _command_output([str(binary), "--version"])
    match = re.search(r"v=(\d+\.\d+\.\d+)", output)
    if match is None:
        return Part("redis-server", "wrong_version", True, f"{binary}: {output!r}", "")
    version = match.group(1)
    if _version_tuple(version) < _MINIMUM_REDIS:
        wanted = ".".join(map(str, _MINIMUM_REDIS))
        return Part(
            "redis-server",
            "wrong_version",
            True,
            f"{binary} is {version}, need >= {wanted}",
            _APT_FIX.format(group="runtime"),
        )
    return Part("redis-server", "ok", True, f"{version} at {binary}")


def check_gstreamer() -> list[Part]:
    """PyGObject + GStreamer, the capture elements, and the RTSP server the tests use."""
    from pipeline.capture.gstreamer_source import require_gstreamer  # noqa: PLC0415

    fix = _APT_FIX.format(group="runtime")
    try:
        gst, _video = require_gstreamer()
    except Exception as exc:
        return [Part("gstreamer", "missing", True, str(exc), fix)]
    version = gst.version_string()
    parts = [Part("gstreamer", "ok", True, version)]
    for elements, runtime in ((_RUNTIME_ELEMENTS, True), (_TEST_ELEMENTS, False)):
        absent = [name for name in elements if gst.ElementFactory.find(name) is None]
        status: PartStatus = "missing" if absent else "ok"
        detail = f"absent: {', '.join(absent)}" if absent else ", ".join(elements)
        label = "gstreamer:elements" if runtime else "gstreamer:test-elements"
        parts.append(Part(label, status, runtime, detail, fix if absent else ""))
    try:
        import gi  # noqa: PLC0415

        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GstRtspServer  # noqa: PLC0415, F401
    except (ImportError, ValueError) as exc:
        parts.append(Part("gstreamer:rtsp-server", "missing", False, str(exc), fix))
    else:
        parts.append(Part("gstreamer:rtsp-server", "ok", False, "GstRtspServer 1.0"))
    return parts


def check_onnxruntime() -> Part:
    try:
        import onnxruntime  # noqa: PLC0415
    except ImportError as exc:
        return Part("onnxruntime", "missing", True, str(exc), _PIP_FIX)
    providers = ", ".join(onnxruntime.get_available_providers())
    return Part("onnxruntime", "ok", True, f"{onnxruntime.__version__}; providers: {providers}")


def check_cuda() -> Part:
    """A CUDA device, through the same cuda-bindings runtime the TensorRT path uses."""
    from engines.runtime.tensorrt.cuda import CudaRuntime  # noqa: PLC0415

    try:
        device = CudaRuntime().select_device(0)
    except Exception as exc:  # no cuda-bindings, no libcuda.so or no device: the reason
        return Part("cuda", "unavailable", False, str(exc))
    return Part("cuda", "ok", False, f"{device.name} (sm {device.major}{device.minor})")


def check_tensorrt() -> Part:
    """TensorRT, detected by a real attribute (an empty stub package also imports)."""
    try:
        tensorrt = importlib.import_module("tensorrt")
    except ImportError as exc:
        return Part("tensorrt", "unavailable", False, f"not installed: {exc}", "")
    if not hasattr(tensorrt, "Builder"):
        return Part("tensorrt", "unavailable", False, "an import stub, not the TensorRT library")
    return Part("tensorrt", "ok", False, str(getattr(tensorrt, "__version__", "")))


def check_model_store(config: FaceStreamConfig) -> Part:
    """Every stored model and plan is intact against its manifest; at least one is there."""
    from engines.store import ModelStore  # noqa: PLC0415

    store = ModelStore(config.data_dir)
    fix = "facestream engines build"
    try:
        stored = store.list()
        for item in stored:
            store.open(item.path)
    except Exception as exc:
        return Part("model-store", "wrong_version", True, str(exc), fix)
    if not stored:
        return Part("model-store", "missing", True, f"no models in {store.models_dir}", fix)
    return Part(
        "model-store", "ok", True, f"{len(stored)} artifact(s) verified in {config.data_dir}"
    )


def check_data_dir(config: FaceStreamConfig) -> Part:
    data_dir = config.data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".doctor-"):
            pass
    except OSError as exc:
        fix = f"make {data_dir} writable by user {os.getuid()} or set data_dir"
        return Part("data-dir", "missing", True, f"{data_dir}: {exc.strerror}", fix)
    return Part("data-dir", "ok", True, f"{data_dir.resolve()} writable")


def check_binary(name: str, *, group: str, version_flag: str = "--version") -> Part:
    """A binary the tests use (chromium, prometheus, mosquitto ...), by its version line."""
    path = shutil.which(name)
    if path is None:
        return Part(name, "missing", False, "not on PATH", _APT_FIX.format(group=group))
    try:
        output = _command_output([path, version_flag])
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Part(name, "missing", False, f"{path}: {exc}", _APT_FIX.format(group=group))
    first_line = output.splitlines()[0] if output else path
    return Part(name, "ok", False, first_line)


def _camera_part(name: str, url: str | int) -> Part:
    label = f"camera:{name}"
    if isinstance(url, int):
        device = Path(f"/dev/video{url}")
        status: PartStatus = "ok" if device.exists() else "unavailable"
        return Part(label, status, True, str(device))
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        path = Path(parts.path if parts.scheme else url)
        if path.is_file():
            return Part(label, "ok", True, str(path))
        return Part(label, "unavailable", True, f"{path}: no such file", "fix the camera's url")
    host, port = parts.hostname, parts.port or {"rtsp": 554, "rtsps": 322}.get(parts.scheme, 80)
    if not host:
        return Part(label, "unavailable", True, f"{parts.scheme}:// url without a host")
    try:
        with socket.create_connection((host, port), timeout=_CAMERA_TIMEOUT_SECONDS):
            pass
    except OSError as exc:
        detail = f"{parts.scheme}://{host}:{port} does not answer: {exc}"
        return Part(label, "unavailable", True, detail, "check the camera and the network")
    return Part(label, "ok", True, f"{parts.scheme}://{host}:{port} answers")


def check_cameras(config: FaceStreamConfig) -> list[Part]:
    """Each configured camera answers (a TCP connect, or the file/device exists); credentials
    in the URL are never printed."""
    return [_camera_part(camera.id, camera.url) for camera in config.capture.cameras]


def diagnose(config: FaceStreamConfig) -> Report:
    """Run every check; the order is the order of the table."""
    checks: list[Callable[[], Part | list[Part]]] = [
        check_python,
        lambda: [check_python_package(module) for module in ("cv2", "dlib", "numpy", "redis")],
        check_onnxruntime,
        check_redis_server,
        check_gstreamer,
        lambda: check_model_store(config),
        lambda: check_data_dir(config),
        check_cuda,
        check_tensorrt,
        lambda: check_binary("chromium", group="test"),
        lambda: check_binary("chromedriver", group="test"),
        lambda: check_binary("mosquitto", group="test", version_flag="-h"),
        lambda: check_binary("promtool", group="test"),
        lambda: check_cameras(config),
    ]
    parts: list[Part] = []
    for check in checks:
        result = check()
        parts.extend(result if isinstance(result, list) else [result])
    return Report(tuple(parts))
