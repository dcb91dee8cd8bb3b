"""The ``facestream style`` commands (train a style net, stylize one image with a fast net or by
Gatys optimisation, list the installed styles) and ``facestream stylize`` (a video stream).

Mount on the main app with::

    app.add_typer(style_app, name="style")
    app.command("stylize")(stylize)

Errors print one line and exit with status 1. ``facestream stylize`` stops cleanly on SIGINT
(Ctrl-C) and SIGTERM: the frame in progress is finished, the mp4 is completed with its audio
cut at the last frame, and the exit status is 128 + the signal's number (130, 143); a second
signal acts as the default one would.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Annotated, NoReturn, Self

import cv2
import numpy as np
import numpy.typing as npt
import typer
import uvicorn

from engines.errors import ConfigError, FaceStreamError
from pipeline.config.secrets import SecretSpec, resolve_secret
from pipeline.images import read_image_bgr
from pipeline.style.config import StyleStreamConfig
from pipeline.style.engine import StyleCatalog, StyleEngineSettings, load_style_network
from pipeline.style.errors import SinkError
from pipeline.style.frames import Letterbox

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from pipeline.style.stream import StyleStream

__all__ = ["style_app", "stylize"]

style_app = typer.Typer(
    help="Neural style transfer: train nets, stylize images", no_args_is_help=True
)

DEFAULT_STORE = Path(__file__).resolve().parent
# the RTSP password, as the service's secrets: the value, or NAME_FILE naming a file
_RTSP_PASSWORD_ENVIRONMENT = "FACESTREAM_STYLE_RTSP_PASSWORD"
_CONTROL_START_SECONDS = 10.0  # the control API's server must be up by then
_CONTROL_STOP_SECONDS = 5.0


def _fail(exc: Exception) -> NoReturn:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1) from exc


def _show_progress() -> None:
    """Show this path's INFO logs (training and Gatys steps, stream state) on stderr.

    The main app's callback has already configured the root logger (WARNING unless -v), so a
    basicConfig here would do nothing: raising our own loggers' level is what shows them.
    """
    logging.basicConfig(format="%(asctime)s %(name)s %(message)s")  # style_app on its own
    for name in ("pipeline.style", "pipeline.style.stream"):
        logging.getLogger(name).setLevel(logging.INFO)


@style_app.callback()
def _group() -> None:
    """Neural style transfer: train nets, stylize images."""


def _arguments_after(command: str) -> list[str]:
    arguments = sys.argv[1:]
    return arguments[arguments.index(command) + 1 :] if command in arguments else arguments


@style_app.command("train")
def train_command(
    *,
    style: Annotated[Path, typer.Option(help="style image (a painting)")],
    content: Annotated[list[Path], typer.Option(help="folder of content images/videos; repeat")],
    name: Annotated[str, typer.Option(help="model name: <store>/models/<name>.onnx")],
    store: Annotated[Path, typer.Option(help="model store folder")] = DEFAULT_STORE,
    kind: Annotated[str, typer.Option(help="lite (CPU real time) or full (GPU)")] = "lite",
    iterations: Annotated[int, typer.Option(min=1)] = 1000,
    batch_size: Annotated[int, typer.Option(min=1)] = 2,
    crop_px: Annotated[int, typer.Option(min=64, help="training crop side (pixels)")] = 160,
    style_weight: Annotated[float, typer.Option(min=0)] = 4e-5,
    content_weight: Annotated[float, typer.Option(min=0)] = 1.0,
    tv_weight: Annotated[float, typer.Option(min=0)] = 10.0,
    temporal_weight: Annotated[float, typer.Option(min=0)] = 5.0,
    learning_rate: Annotated[float, typer.Option(min=0)] = 1e-3,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads")] = 1,
    seed: Annotated[int, typer.Option()] = 0,
    init: Annotated[
        Path | None,
        typer.Option(help="warm start from this style model (.onnx of the same --kind)"),
    ] = None,
) -> None:
    """Train a fast style net and store it as ONNX (640x360) with a manifest and model card."""
    from pipeline.style.losses import LossWeights  # noqa: PLC0415  (needs torch)
    from pipeline.style.model_card import write_model_card  # noqa: PLC0415  (needs torch)
    from pipeline.style.train import TrainConfig, train  # noqa: PLC0415  (needs torch)

    if kind not in ("lite", "full"):
        raise typer.BadParameter(f"kind must be lite or full, not {kind!r}")
    _show_progress()
    config = TrainConfig(
        name=name,
        style_image=style,
        content_dirs=tuple(content),
        store_dir=store,
        kind="lite" if kind == "lite" else "full",
        iterations=iterations,
        batch_size=batch_size,
        crop_px=crop_px,
        learning_rate=learning_rate,
        weights=LossWeights(
            content=content_weight,
            style=style_weight,
            total_variation=tv_weight,
            temporal=temporal_weight,
        ),
        threads=threads,
        seed=seed,
        init_model=init,
        command="facestream style train " + shlex.join(_arguments_after("train")),
    )
    result = train(config)
    card = write_model_card(config, result)
    typer.echo(f"stored {result.stored.path} ({result.stored.manifest.model_id}); card {card}")


@style_app.command("list")
def list_command(
    store: Annotated[Path, typer.Option(help="model store folder")] = DEFAULT_STORE,
) -> None:
    """Print the installed style names and their model ids."""
    catalog = StyleCatalog(store)
    for name in catalog.names():
        try:
            stored = catalog.store.open(catalog.path(name))
        except FaceStreamError as exc:
            typer.echo(f"{name}\tunusable: {exc}")
            continue
        manifest = stored.manifest
        shape = manifest.inputs[0].shape
        typer.echo(f"{name}\t{manifest.model_id}\t{shape[3]}x{shape[2]}")


def _write_image(path: Path, image: npt.NDArray[np.uint8]) -> None:
    try:
        written = cv2.imwrite(str(path), image)
    except cv2.error as exc:  # an unknown extension raises instead of returning False
        raise SinkError(f"{path}: OpenCV cannot write this image type: {exc}") from exc
    if not written:
        raise SinkError(f"{path}: OpenCV cannot write an image there")


@style_app.command("image")
def image_command(
    content: Annotated[Path, typer.Argument(help="the photo to stylize")],
    *,
    out: Annotated[Path, typer.Option(help="output image (.png, .jpg)")],
    style: Annotated[
        str, typer.Option(help="fast: an installed style name; gatys: a style image file")
    ],
    method: Annotated[str, typer.Option(help="fast (a trained net) or gatys (optimisation)")] = (
        "fast"
    ),
    store: Annotated[Path, typer.Option(help="model store folder (fast)")] = DEFAULT_STORE,
    steps: Annotated[int, typer.Option(min=1, help="gatys: optimisation steps")] = 100,
    width_px: Annotated[int, typer.Option(min=16, help="gatys: working width (pixels)")] = 384,
    style_weight: Annotated[float, typer.Option(min=0, help="gatys: style weight")] = 4e-5,
) -> None:
    """Stylize one image, with a trained fast net or by optimising its pixels (Gatys)."""
    if method not in ("fast", "gatys"):
        raise typer.BadParameter(f"method must be fast or gatys, not {method!r}")
    try:
        image = read_image_bgr(content)
        if method == "fast":
            network = load_style_network(StyleCatalog(store).path(style), StyleEngineSettings())
            try:
                height, width = image.shape[:2]
                letterbox = Letterbox(width, height, network.width_px, network.height_px)
                result = letterbox.unfit(network.stylize(letterbox.fit(image)))
            finally:
                network.close()
        else:
            from pipeline.style.gatys import GatysSettings, gatys_stylize  # noqa: PLC0415
            from pipeline.style.images import resize_to_width  # noqa: PLC0415
            from pipeline.style.losses import LossWeights  # noqa: PLC0415  (needs torch)

            _show_progress()
            settings = GatysSettings(steps=steps, weights=LossWeights(style=style_weight))
            style_image = resize_to_width(read_image_bgr(Path(style)), 256)
            outcome = gatys_stylize(resize_to_width(image, width_px), style_image, settings)
            result = outcome.image
            typer.echo(f"losses {outcome.losses} in {outcome.seconds:.0f} s")
        _write_image(out, result)
    except FaceStreamError as exc:
        _fail(exc)
    typer.echo(f"wrote {out}")


def stylize(
    *,
    source: Annotated[str, typer.Option(help="video file, rtsp://, http(s):// MJPEG, /dev/videoN")],
    style: Annotated[str, typer.Option(help="installed style name (facestream style list)")],
    out: Annotated[Path | None, typer.Option(help="write an mp4 file")] = None,
    out_codec: Annotated[
        str, typer.Option(help="h264 (GStreamer x264enc; keeps audio) or mpeg4 (OpenCV)")
    ] = "h264",
    out_audio: Annotated[
        str, typer.Option(help="copy: carry a file source's audio into --out; none: video only")
    ] = "copy",
    mjpeg_port: Annotated[
        int | None, typer.Option(help="serve MJPEG over HTTP on this port (0: any free one)")
    ] = None,
    mjpeg_host: Annotated[str, typer.Option()] = "127.0.0.1",
    rtsp_port: Annotated[int | None, typer.Option(help="serve RTSP (H.264) on this port")] = None,
    rtsp_host: Annotated[str, typer.Option()] = "127.0.0.1",
    rtsp_username: Annotated[
        str | None,
        typer.Option(
            help="RTSP clients must log in as this user; the password from "
            "$FACESTREAM_STYLE_RTSP_PASSWORD, $FACESTREAM_STYLE_RTSP_PASSWORD_FILE or "
            "--rtsp-password-file"
        ),
    ] = None,
    rtsp_password_file: Annotated[
        Path | None, typer.Option(help="file holding the RTSP password (a mounted secret)")
    ] = None,
    rtsp_anonymous: Annotated[
        bool, typer.Option(help="allow RTSP without a login on a non-loopback --rtsp-host")
    ] = False,
    target_fps: Annotated[
        float | None,
        typer.Option(help="frame rate to keep; exported as facestream_style_target_fps for alerts"),
    ] = None,
    strength: Annotated[float, typer.Option(min=0, max=1, help="1 stylized, 0 unchanged")] = 1.0,
    temporal_smoothing: Annotated[float, typer.Option(min=0, max=0.99)] = 0.6,
    threads: Annotated[int, typer.Option(min=0, help="backend CPU threads (0: per core)")] = 1,
    backend: Annotated[
        str, typer.Option(help="style network runtime: onnxruntime, torch or tensorrt")
    ] = "onnxruntime",
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    precision: Annotated[str, typer.Option(help="fp32, or fp16 (torch/tensorrt on cuda)")] = (
        "fp32"
    ),
    plan_dir: Annotated[
        Path | None, typer.Option(help="tensorrt: writable folder for the compiled plans")
    ] = None,
    max_frames: Annotated[int | None, typer.Option(min=1)] = None,
    store: Annotated[Path, typer.Option(help="model store folder")] = DEFAULT_STORE,
    control_port: Annotated[
        int | None,
        typer.Option(
            help="serve the control API (GET/PUT /v1/style, /metrics) on 127.0.0.1:PORT; "
            "needs FACESTREAM_API_TOKEN"
        ),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="serve Prometheus /metrics on METRICS_HOST:PORT")
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="address of --metrics-port (0.0.0.0 in a container)")
    ] = "127.0.0.1",
) -> None:
    """Stylize a video stream in real time and publish it (file, MJPEG, RTSP)."""
    from prometheus_client import CollectorRegistry, start_http_server  # noqa: PLC0415

    from pipeline.metrics import PipelineMetrics, StyleMetrics  # noqa: PLC0415
    from pipeline.style.stream import StyleStream  # noqa: PLC0415

    _show_progress()
    try:
        rtsp_password = resolve_secret(
            SecretSpec(
                what="rtsp_password",
                environment=_RTSP_PASSWORD_ENVIRONMENT,
                file=rtsp_password_file,
                inline=None,
            )
        )
        config = StyleStreamConfig.model_validate(
            {
                "source": source,
                "style": style,
                "models_dir": store,
                "out_file": out,
                "out_codec": out_codec,
                "out_audio": out_audio,
                "backend": backend,
                "device": device,
                "precision": precision,
                "plan_dir": plan_dir,
                "mjpeg_host": mjpeg_host,
                "mjpeg_port": mjpeg_port,
                "rtsp_host": rtsp_host,
                "rtsp_port": rtsp_port,
                "rtsp_username": rtsp_username,
                "rtsp_password": rtsp_password,
                "rtsp_anonymous": rtsp_anonymous,
                "target_fps": target_fps,
                "strength": strength,
                "temporal_smoothing": temporal_smoothing,
                "threads": threads,
                "max_frames": max_frames,
            }
        )
    except ValueError as exc:
        _fail(exc)
    registry = CollectorRegistry()
    try:
        if metrics_port is not None:
            start_http_server(metrics_port, addr=metrics_host, registry=registry)
    except OSError as exc:
        _fail(SinkError(f"metrics port {metrics_port}: {exc.strerror}"))
    try:
        with (
            _StopOnSignals() as signals,
            StyleStream(
                config, StyleMetrics.create(registry), PipelineMetrics.create(registry)
            ) as stream,
        ):
            signals.watch(stream)
            if stream.mjpeg is not None:
                typer.echo(f"MJPEG at {stream.mjpeg.url}")
            control = (
                None if control_port is None else _ControlServer(stream, registry, control_port)
            )
            try:
                report = stream.run()
            finally:
                if control is not None:
                    control.stop()
    except FaceStreamError as exc:
        _fail(exc)
    typer.echo(
        f"{report.frames_out} frames in {report.seconds:.1f} s ({report.fps:.1f} fps), "
        f"style {report.style}"
    )
    if signals.signal_number is not None:
        name = signal.Signals(signals.signal_number).name
        typer.echo(f"stopped by {name}", err=True)
        raise typer.Exit(128 + signals.signal_number)


class _StopOnSignals:
    """SIGINT and SIGTERM become ``stream.stop()`` while the stream runs and closes.

    The default handlers would end the process mid-file (SIGTERM) or raise KeyboardInterrupt
    out of ``run`` (SIGINT), and the mp4, written under a hidden name and finished on close,
    would be lost. The first signal restores the previous handlers, so a second one acts as
    usual. Handlers can only be set from the main thread; elsewhere this does nothing.
    """

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal_number: int | None = None  # the first signal received
        self._stream: StyleStream | None = None
        # what signal.signal returned: a handler, SIG_DFL/SIG_IGN, or None (set outside Python)
        self._previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for number in self._SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def watch(self, stream: StyleStream) -> None:
        """Stop ``stream`` on a signal (at once, if one came while it was being opened)."""
        self._stream = stream
        if self.signal_number is not None:
            stream.stop()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.signal_number is None:
            self.signal_number = number
        self._restore()
        if self._stream is not None:
            self._stream.stop()

    def _restore(self) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._restore()


class _ControlServer:
    """The control API served by uvicorn in a thread on 127.0.0.1:``port``, up on return.

    The port is bound here, before uvicorn starts: uvicorn reports a port in use by exiting
    its own thread, which would leave the stream running without its API. A port in use, or a
    server not up within _CONTROL_START_SECONDS, is a SinkError.
    """

    def __init__(self, stream: StyleStream, registry: CollectorRegistry, port: int) -> None:
        from pipeline.style.control import create_style_app  # noqa: PLC0415

        token = os.environ.get("FACESTREAM_API_TOKEN", "")
        if len(token) < 16:
            raise ConfigError("--control-port needs FACESTREAM_API_TOKEN (16+ characters)")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            listener.bind(("127.0.0.1", port))
        except OSError as exc:
            listener.close()
            raise SinkError(
                f"control API cannot listen on 127.0.0.1:{port}: {exc.strerror}"
            ) from exc
        self.port = int(listener.getsockname()[1])
        self._server = uvicorn.Server(
            uvicorn.Config(
                create_style_app(stream, token=token, registry=registry),
                log_level="warning",
                access_log=False,
            )
        )
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [listener]},
            name="style-control",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + _CONTROL_START_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                listener.close()
                raise SinkError(f"control API on 127.0.0.1:{self.port} did not start")
            time.sleep(0.02)
        typer.echo(f"control API at http://127.0.0.1:{self.port}/v1/style")

    def stop(self) -> None:
        """Ask the server to exit and wait for its thread."""
        self._server.should_exit = True
        self._thread.join(_CONTROL_STOP_SECONDS)


style_app.command("stylize")(stylize)


if __name__ == "__main__":
    style_app()
