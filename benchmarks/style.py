"""Style stream: speed, quality against Gatys, flicker, the file sink and the backends, each
beside its baseline.

1. Speed, end to end (decode -> fit -> network -> temporal filter -> mp4 file + MJPEG sinks) on
   the shared 640x360 clip, ONNX Runtime CPU: the lite net against Johnson's full net run frame
   by frame (the baseline), interleaved in rounds in this process. The full net is exported
   untrained: its speed does not depend on its weights.
2. Quality: content and style loss (the training losses, equal weights) of the fast net's
   output against Gatys pixel optimisation (Adam from the content image) of the same five
   256 px wide content images, per style. The fast net runs at the images' own size (its ONNX
   graph with the fixed shape made symbolic) and, separately, through the runtime's 640x360
   fit (``style_loss_ratio_vs_gatys_runtime_fit``: the photos are upscaled for the model).
3. Flicker: warping error, the mean squared difference (0-1 scale) between each stylized frame
   and the previous stylized frame warped onto it by the optical flow of the *input* (OpenCV
   DIS), where the flow is consistent forward and backward; per-frame stylization (baseline)
   against stylization with the runtime temporal filter.

4. File sink (``--parts filesink``): end-to-end fps of the lite stream writing the H.264 mp4
   (GStreamer x264enc, with the clip's AAC audio carried over) against the MPEG-4 Part 2 mp4
   (OpenCV, no audio; the baseline), interleaved in rounds.
5. Backends (``--parts backends``): the lite net alone per 640x360 frame on torch (CPU, fp32)
   against ONNX Runtime (the baseline), interleaved, same threads; and the largest difference
   between their outputs.

    python benchmarks/style.py [--styles starry_night ...] [--gatys-steps 50] [--rounds 3]
        [--parts speed flicker quality filesink backends] [--out-codec h264|mpeg4]

Prints one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime
import torch
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED_DATA, log, machine_name
from pipeline.images import read_image_bgr
from pipeline.metrics import PipelineMetrics, StyleMetrics
from pipeline.style.config import StyleStreamConfig
from pipeline.style.engine import (
    SHIPPED_STORE,
    StyleCatalog,
    StyleEngineSettings,
    load_style_network,
)
from pipeline.style.gatys import GatysSettings, gatys_stylize
from pipeline.style.images import resize_to_width
from pipeline.style.losses import LossWeights, StyleLosses, Vgg16Features, read_vgg16_weights
from pipeline.style.nets import INPUT_NAME, build_transformer
from pipeline.style.stream import StyleStream, Stylizer
from pipeline.style.train import TrainConfig, save_style_model, to_tensor

VIDEO_640X360 = SHARED_DATA / "video" / "faces" / "short_hamilton_clip.mp4"
FLICKER_VIDEO = SHARED_DATA / "video" / "nonface" / "MOT20-05-raw_even_shorter.mp4"
CONTENT = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "tubingen.jpg")
TRAINING_WEIGHTS = LossWeights(style=4e-5)  # what the shipped models were trained with


def _style_image_of(style: str) -> Path:
    """The painting an installed style model was trained on (named by its manifest)."""
    catalog = StyleCatalog()
    manifest = catalog.store.open(catalog.path(style)).manifest
    return SHARED_DATA / "style" / "styles" / manifest.build["style_image"]


def _stream_fps(
    store: Path, style: str, *, frames: int, work: Path, threads: int, out_codec: str = "h264"
) -> float:
    config = StyleStreamConfig.model_validate(
        {
            "source": str(VIDEO_640X360),
            "style": style,
            "models_dir": store,
            "out_file": work / f"{style}.mp4",
            "out_codec": out_codec,
            "out_audio": "copy" if out_codec == "h264" else "none",
            "mjpeg_port": 0,
            "max_frames": frames,
            "threads": threads,
        }
    )
    registry = CollectorRegistry()
    with StyleStream(
        config, StyleMetrics.create(registry), PipelineMetrics.create(registry)
    ) as stream:
        report = stream.run()
    return report.fps


def _filesink(work: Path, style: str, *, rounds: int, threads: int) -> dict[str, float]:
    h264_runs: list[float] = []
    mpeg4_runs: list[float] = []
    for round_number in range(rounds):
        for codec, runs in (("h264", h264_runs), ("mpeg4", mpeg4_runs)):
            runs.append(
                _stream_fps(
                    SHIPPED_STORE, style, frames=275, work=work, threads=threads, out_codec=codec
                )
            )
        log(f"round {round_number}: h264 {h264_runs[-1]:.1f} fps, mpeg4 {mpeg4_runs[-1]:.1f} fps")
    return {
        "h264_fps_640x360": float(np.median(h264_runs)),
        "mpeg4_fps_640x360": float(np.median(mpeg4_runs)),
    }


def _backends(style: str, *, rounds: int, threads: int, frames: int = 40) -> dict[str, float]:
    capture = cv2.VideoCapture(str(VIDEO_640X360))
    images: list[npt.NDArray[np.uint8]] = []
    while len(images) < frames:
        ok, image = capture.read()
        if not ok:
            break
        images.append(np.asarray(image, dtype=np.uint8))
    capture.release()
    path = StyleCatalog().path(style)
    networks = {
        name: load_style_network(path, StyleEngineSettings(backend=name, threads=threads))
        for name in ("onnxruntime", "torch")
    }
    seconds: dict[str, list[float]] = {name: [] for name in networks}
    for round_number in range(rounds):
        for name, network in networks.items():
            network.stylize(images[0])  # warm-up
            started = time.perf_counter()
            for image in images:
                network.stylize(image)
            seconds[name].append((time.perf_counter() - started) / len(images))
        log(
            f"round {round_number}: onnxruntime {seconds['onnxruntime'][-1] * 1000:.1f} ms, "
            f"torch {seconds['torch'][-1] * 1000:.1f} ms per frame"
        )
    batch = {"frames": images[0].transpose(2, 0, 1)[None].astype(np.float32)}
    outputs = [network.engine.infer(batch)["stylized"] for network in networks.values()]
    for network in networks.values():
        network.close()
    return {
        "onnxruntime_ms_per_frame": 1000 * float(np.median(seconds["onnxruntime"])),
        "torch_ms_per_frame": 1000 * float(np.median(seconds["torch"])),
        "torch_vs_onnxruntime_max_abs_diff": float(np.abs(outputs[0] - outputs[1]).max()),
    }


def _speed(work: Path, style: str, *, rounds: int, threads: int) -> dict[str, float]:
    full_store = work / "full-store"
    style_file = _style_image_of(style)
    save_style_model(
        build_transformer("full"),
        TrainConfig(
            name="full", style_image=style_file, content_dirs=(), store_dir=full_store, kind="full"
        ),
        build={"purpose": "speed baseline, untrained"},
    )
    lite_runs, full_runs = [], []
    for round_number in range(rounds):
        lite_runs.append(_stream_fps(SHIPPED_STORE, style, frames=275, work=work, threads=threads))
        full_runs.append(_stream_fps(full_store, "full", frames=12, work=work, threads=threads))
        log(f"round {round_number}: lite {lite_runs[-1]:.1f} fps, full {full_runs[-1]:.2f} fps")
    return {
        "lite_fps_640x360": float(np.median(lite_runs)),
        "full_fps_640x360": float(np.median(full_runs)),
    }


def _fast_output(stylizer: Stylizer, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    output, _ = stylizer.process(image)
    return output


class _NativeSizeNet:
    """A shipped style model run at any size multiple of 8: the ONNX graph is size-agnostic,
    only its declared input/output shape is fixed, so that is made symbolic in memory."""

    def __init__(self, style: str) -> None:
        model = onnx.load(str(StyleCatalog().path(style)))
        for value in (*model.graph.input, *model.graph.output):
            dims = value.type.tensor_type.shape.dim
            dims[2].dim_param, dims[3].dim_param = "height", "width"
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 2
        self._session = onnxruntime.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        batch = image.transpose(2, 0, 1)[None].astype(np.float32)
        (output,) = self._session.run(None, {INPUT_NAME: batch})
        return np.ascontiguousarray(np.clip(output[0].transpose(1, 2, 0), 0, 255).astype(np.uint8))


def _content_losses(
    losses: StyleLosses, content: npt.NDArray[np.uint8], output: npt.NDArray[np.uint8]
) -> tuple[float, float]:
    """Unweighted (style, content) loss of ``output`` for ``content``."""
    with torch.no_grad():
        terms = losses(to_tensor(output), losses.content_targets(to_tensor(content)))
    return (
        float(terms.style) / TRAINING_WEIGHTS.style,
        float(terms.content) / TRAINING_WEIGHTS.content,
    )


def _quality(styles: list[str], *, steps: int) -> dict[str, object]:
    """Fast net (at the content's own size, and through the runtime's 640x360 fit) against
    Gatys, same losses and weights, on the same 256 px wide content images."""
    network = Vgg16Features(read_vgg16_weights()).eval()
    contents = []
    for name in CONTENT:
        image = resize_to_width(read_image_bgr(SHARED_DATA / "style" / "content" / name), 256)
        contents.append(np.ascontiguousarray(image[: image.shape[0] // 8 * 8]))
    per_style: dict[str, dict[str, float]] = {}
    for style in styles:
        style_image = resize_to_width(read_image_bgr(_style_image_of(style)), 256)
        losses = StyleLosses(network, to_tensor(style_image), TRAINING_WEIGHTS)
        native = _NativeSizeNet(style)
        stylizer = Stylizer(StyleCatalog(), StyleEngineSettings(), style=style)
        sums = dict.fromkeys(
            ("fast_style", "fast_content", "fit_style", "fit_content", "gatys_style"), 0.0
        )
        sums["gatys_content"] = 0.0
        gatys_seconds = 0.0
        for content in contents:
            style_loss, content_loss = _content_losses(losses, content, native(content))
            sums["fast_style"] += style_loss
            sums["fast_content"] += content_loss
            style_loss, content_loss = _content_losses(
                losses, content, _fast_output(stylizer, content)
            )
            sums["fit_style"] += style_loss
            sums["fit_content"] += content_loss
            gatys = gatys_stylize(
                content,
                style_image,
                GatysSettings(steps=steps, weights=TRAINING_WEIGHTS, log_every=steps),
                network,
            )
            gatys_seconds += gatys.seconds
            sums["gatys_style"] += gatys.losses["style"]
            sums["gatys_content"] += gatys.losses["content"]
        stylizer.close()
        means = {key: value / len(contents) for key, value in sums.items()}
        means["style_loss_ratio"] = means["fast_style"] / means["gatys_style"]
        means["content_loss_ratio"] = means["fast_content"] / means["gatys_content"]
        means["style_loss_ratio_runtime_fit"] = means["fit_style"] / means["gatys_style"]
        means["gatys_seconds_per_image"] = gatys_seconds / len(contents)
        per_style[style] = means
        log(f"quality {style}: {json.dumps(means)}")

    def mean_of(key: str) -> float:
        return float(np.mean([item[key] for item in per_style.values()]))

    return {
        "style_loss_ratio_vs_gatys": mean_of("style_loss_ratio"),
        "content_loss_ratio_vs_gatys": mean_of("content_loss_ratio"),
        "style_loss_ratio_vs_gatys_runtime_fit": mean_of("style_loss_ratio_runtime_fit"),
        "quality_per_style": per_style,
    }


def _read_frames(path: Path, count: int) -> list[npt.NDArray[np.uint8]]:
    capture = cv2.VideoCapture(str(path))
    frames: list[npt.NDArray[np.uint8]] = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        resized = cv2.resize(frame, (640, 360), interpolation=cv2.INTER_AREA)
        frames.append(np.asarray(resized, dtype=np.uint8))
    capture.release()
    return frames


def _backward_warp(
    image: npt.NDArray[np.float32], flow: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(
        np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
    )
    return np.asarray(
        cv2.remap(image, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR),
        dtype=np.float32,
    )


def _warping_error(
    inputs: list[npt.NDArray[np.uint8]], outputs: list[npt.NDArray[np.uint8]]
) -> float:
    """Mean over frame pairs of the masked mean squared difference (0-1 scale)."""
    dis = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    no_initial_flow: Any = None  # OpenCV's stub wants an array; None means "no initial flow"
    errors = []
    for index in range(1, len(inputs)):
        current = cv2.cvtColor(inputs[index], cv2.COLOR_BGR2GRAY)
        previous = cv2.cvtColor(inputs[index - 1], cv2.COLOR_BGR2GRAY)
        # current pixel -> where it was in the previous frame, and the reverse
        backward = np.asarray(dis.calc(current, previous, no_initial_flow), dtype=np.float32)
        forward = np.asarray(dis.calc(previous, current, no_initial_flow), dtype=np.float32)
        round_trip = backward + _backward_warp(forward, backward)
        valid = (np.linalg.norm(round_trip, axis=2) < 1.0).astype(np.float32)[..., None]
        warped = _backward_warp(outputs[index - 1].astype(np.float32) / 255.0, backward)
        difference = (outputs[index].astype(np.float32) / 255.0 - warped) ** 2
        errors.append(float((difference * valid).sum() / max(valid.sum() * 3, 1.0)))
    return float(np.mean(errors))


def _flicker(style: str, *, frames: int, smoothing: float) -> dict[str, float]:
    inputs = _read_frames(FLICKER_VIDEO, frames)
    plain = Stylizer(StyleCatalog(), StyleEngineSettings(), style=style, temporal_smoothing=0.0)
    filtered = Stylizer(
        StyleCatalog(), StyleEngineSettings(), style=style, temporal_smoothing=smoothing
    )
    plain_outputs, filtered_outputs = [], []
    for image in inputs:  # interleaved, frame by frame
        plain_outputs.append(_fast_output(plain, image))
        filtered_outputs.append(_fast_output(filtered, image))
    plain.close()
    filtered.close()
    return {
        "warping_error": _warping_error(inputs, filtered_outputs),
        "warping_error_baseline": _warping_error(inputs, plain_outputs),
        "warping_error_input": _warping_error(inputs, inputs),
        "temporal_smoothing": smoothing,
        "flicker_frames": float(len(inputs)),
    }


def main() -> None:
    """Run the measurements named by ``--parts`` (of the five above; speed, flicker and quality
    by default) and print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--styles", nargs="+", default=["starry_night"])
    parser.add_argument("--gatys-steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime and torch threads")
    parser.add_argument("--flicker-frames", type=int, default=60)
    parser.add_argument("--smoothing", type=float, default=0.6)
    parser.add_argument(
        "--parts", nargs="+", default=["speed", "flicker", "quality"], help="what to measure"
    )
    arguments = parser.parse_args()
    threads = arguments.threads
    torch.set_num_threads(threads)
    result: dict[str, object] = {
        "name": "style_lite_640x360",
        "machine": machine_name(),
        "backend": "onnxruntime-cpu",
        "styles": arguments.styles,
    }
    if "speed" in arguments.parts:
        with tempfile.TemporaryDirectory() as temporary:
            speed = _speed(
                Path(temporary),
                arguments.styles[0],
                rounds=arguments.rounds,
                threads=arguments.threads,
            )
        result.update(
            ours=speed["lite_fps_640x360"],
            baseline=speed["full_fps_640x360"],
            ratio=speed["lite_fps_640x360"] / speed["full_fps_640x360"],
            unit="fps end to end (ratio: ours/baseline)",
            **speed,
        )
    if "flicker" in arguments.parts:
        flicker = _flicker(
            arguments.styles[0], frames=arguments.flicker_frames, smoothing=arguments.smoothing
        )
        log(f"flicker: {json.dumps(flicker)}")
        result.update(flicker)
        if "speed" not in arguments.parts:  # the flicker pair is then the headline
            result.update(
                ours=flicker["warping_error"],
                baseline=flicker["warping_error_baseline"],
                ratio=flicker["warping_error_baseline"] / flicker["warping_error"],
                unit="warping error (ratio: baseline/ours)",
            )
    if "quality" in arguments.parts:
        quality = _quality(arguments.styles, steps=arguments.gatys_steps)
        result.update(quality, gatys_steps=arguments.gatys_steps)
        if "ours" not in result:
            ratio = float(quality["style_loss_ratio_vs_gatys"])  # type: ignore[arg-type]
            result.update(
                ours=ratio,
                baseline=1.0,
                ratio=1.0 / ratio,
                unit="style loss, fast net / Gatys (ratio: Gatys/fast)",
            )
    if "filesink" in arguments.parts:
        with tempfile.TemporaryDirectory() as temporary:
            sink = _filesink(
                Path(temporary), arguments.styles[0], rounds=arguments.rounds, threads=threads
            )
        result.update(sink)
        if "ours" not in result:
            result.update(
                ours=sink["h264_fps_640x360"],
                baseline=sink["mpeg4_fps_640x360"],
                ratio=sink["h264_fps_640x360"] / sink["mpeg4_fps_640x360"],
                unit="fps end to end, H.264+audio file vs MPEG-4 file (ratio: ours/baseline)",
            )
    if "backends" in arguments.parts:
        backends = _backends(arguments.styles[0], rounds=arguments.rounds, threads=threads)
        result.update(backends)
        if "ours" not in result:
            result.update(
                backend="torch-cpu-fp32",
                ours=backends["torch_ms_per_frame"],
                baseline=backends["onnxruntime_ms_per_frame"],
                ratio=backends["onnxruntime_ms_per_frame"] / backends["torch_ms_per_frame"],
                unit="ms per 640x360 frame, net alone (ratio: baseline/ours)",
            )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
