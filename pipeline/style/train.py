"""Training a fast style transformer (Johnson et al. 2016) with the losses of ``losses.py``.

Content: photos and video frames (BGR); each step takes random crops of ``crop_px`` square,
after a random rescale. Temporal stability: each crop is paired with a copy shifted by a few
pixels with sensor-like noise added; the exact flow of that shift warps the first output onto
the second, and the temporal loss penalises their difference where the warp is valid (the flow
warping loss of Ruder et al. / Huang et al., with a synthetic flow that needs no flow
estimator). Only the second output goes through the loss network, so the pair costs one extra
transformer pass.

The result is an ONNX model at a fixed resolution, its manifest (``engines.store``), and a model
card, written into a ``ModelStore``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnx
import torch

from engines.base import ModelManifest, TensorSpecModel
from engines.errors import ModelFileError
from engines.store import ModelStore, StoredModel, atomic_write, safe_name, sha256_file
from pipeline.errors import RecordingError
from pipeline.images import read_image_bgr
from pipeline.style.losses import (
    CONTENT_LAYER,
    STYLE_LAYERS,
    VGG16_ONNX_SHA256,
    LossWeights,
    StyleLosses,
    Vgg16Features,
    read_vgg16_weights,
    temporal_loss,
    warp,
)
from pipeline.style.nets import (
    INPUT_NAME,
    OUTPUT_NAME,
    NetKind,
    StyleTransformer,
    build_transformer,
    export_onnx,
)
from pipeline.style.torch_engine import load_state, read_onnx_weights

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "TrainConfig",
    "TrainResult",
    "evaluate_losses",
    "load_content",
    "load_onnx_weights",
    "save_style_model",
    "style_model_id",
    "to_tensor",
    "train",
]

_log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov")


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Everything one training run needs; ``command`` is recorded in the model card."""

    name: str
    style_image: Path
    content_dirs: tuple[Path, ...]
    store_dir: Path
    kind: NetKind = "lite"
    iterations: int = 2000
    batch_size: int = 2
    crop_px: int = 160
    style_width_px: int = 256
    learning_rate: float = 1e-3
    weights: LossWeights = field(default_factory=lambda: LossWeights(style=4e-5, temporal=5.0))
    frames_per_video: int = 24
    export_height_px: int = 360
    export_width_px: int = 640
    threads: int = 1
    seed: int = 0
    lr_decay_fraction: float = 0.25  # the last quarter of the steps: lr falls linearly to 0.1x
    log_every: int = 25
    checkpoint_every: int = 250
    init_model: Path | None = None  # warm start: a style ONNX of the same net kind
    max_shift_px: int = 4
    checkpoint_dir: Path = field(
        default_factory=lambda: Path(tempfile.gettempdir()) / "facestream-style-checkpoints"
    )
    command: str = ""


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What a run reached: the stored model and the final evaluation losses (unweighted)."""

    stored: StoredModel
    losses: dict[str, float]
    seconds: float


def to_tensor(image: npt.NDArray[np.uint8]) -> torch.Tensor:
    """BGR uint8 (H, W, 3) -> float32 (1, 3, H, W) BGR 0-255."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()[None]


def _video_frames(path: Path, count: int) -> list[npt.NDArray[np.uint8]]:
    """``count`` evenly spaced frames (every ``total // count``-th from the first), BGR uint8.

    Two passes, grabbing without converting, so only the chosen frames are ever held: a long
    1080p video would not fit in memory whole."""
    total = _grab_all(path, keep=frozenset())[0]
    if not total:
        raise RecordingError(f"{path}: no frame decoded")
    step = max(1, total // count)
    return _grab_all(path, keep=frozenset(range(0, total, step)[:count]))[1]


def _grab_all(path: Path, *, keep: frozenset[int]) -> tuple[int, list[npt.NDArray[np.uint8]]]:
    """(frames in the video, the frames whose indices are in ``keep``, in order)."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise RecordingError(f"{path}: OpenCV cannot open the video")
    frames = []
    total = 0
    try:
        while capture.grab():
            if total in keep:
                ok, frame = capture.retrieve()
                if ok:
                    frames.append(np.asarray(frame, dtype=np.uint8))
            total += 1
    finally:
        capture.release()
    return total, frames


def load_content(directories: Sequence[Path], frames_per_video: int) -> list[npt.NDArray[np.uint8]]:
    """Every image, and ``frames_per_video`` evenly spaced frames of every video, under
    ``directories`` (searched recursively), as BGR uint8. An entry that is a file (an image or
    a video) is taken as it is, so single files can be picked, e.g. to keep evaluation images
    out of training."""
    images: list[npt.NDArray[np.uint8]] = []
    for directory in directories:
        paths = [directory] if directory.is_file() else sorted(directory.rglob("*"))
        for path in paths:
            suffix = path.suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                images.append(read_image_bgr(path))
            elif suffix in VIDEO_SUFFIXES:
                images.extend(_video_frames(path, frames_per_video))
    if not images:
        raise FileNotFoundError(
            f"no content images or videos under {[str(d) for d in directories]}"
        )
    return images


def _random_pair(
    image: npt.NDArray[np.uint8], crop_px: int, max_shift_px: int, generator: random.Random
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], tuple[int, int]]:
    """Two crops of ``image``, the second shifted by (dx, dy): second(p) = first(p + (dx, dy))."""
    margin = max_shift_px
    needed = crop_px + 2 * margin
    height, width = image.shape[:2]
    scale = generator.uniform(needed / min(height, width), max(needed / min(height, width), 1.0))
    scaled = cv2.resize(
        image, (max(needed, round(width * scale)), max(needed, round(height * scale)))
    )
    top = generator.randint(0, scaled.shape[0] - needed)
    left = generator.randint(0, scaled.shape[1] - needed)
    window = scaled[top : top + needed, left : left + needed].astype(np.float32)
    if generator.random() < 0.5:
        window = window[:, ::-1]
    shift_x = generator.randint(-max_shift_px, max_shift_px)
    shift_y = generator.randint(-max_shift_px, max_shift_px)
    first = window[margin : margin + crop_px, margin : margin + crop_px]
    second = window[
        margin + shift_y : margin + shift_y + crop_px, margin + shift_x : margin + shift_x + crop_px
    ]
    return np.ascontiguousarray(first), np.ascontiguousarray(second), (shift_x, shift_y)


def _batch(
    images: Sequence[npt.NDArray[np.uint8]], config: TrainConfig, generator: random.Random
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    firsts, seconds, flows, valids = [], [], [], []
    size = config.crop_px
    for _ in range(config.batch_size):
        first, second, (shift_x, shift_y) = _random_pair(
            generator.choice(images), size, config.max_shift_px, generator
        )
        firsts.append(first)
        noise = np.random.default_rng(generator.randint(0, 2**31)).normal(0, 3, second.shape)
        seconds.append(np.clip(second + noise, 0, 255).astype(np.float32))
        flow = np.zeros((2, size, size), np.float32)
        flow[0], flow[1] = shift_x, shift_y
        valid = np.zeros((1, size, size), np.float32)
        valid[
            0,
            max(0, -shift_y) : size - max(0, shift_y),
            max(0, -shift_x) : size - max(0, shift_x),
        ] = 1.0
        flows.append(flow)
        valids.append(valid)

    def stack(arrays: list[npt.NDArray[np.float32]], channels_last: bool) -> torch.Tensor:
        array = np.stack(arrays)
        return torch.from_numpy(array.transpose(0, 3, 1, 2).copy() if channels_last else array)

    return stack(firsts, True), stack(seconds, True), stack(flows, False), stack(valids, False)


def evaluate_losses(
    model: StyleTransformer, losses: StyleLosses, images: Sequence[torch.Tensor]
) -> dict[str, float]:
    """Mean unweighted content, style and TV loss of ``model``'s outputs on ``images``."""
    weights = losses.weights
    sums = {"content": 0.0, "style": 0.0, "total_variation": 0.0}
    model.eval()
    with torch.no_grad():
        for image in images:
            terms = losses(model(image), losses.content_targets(image))
            sums["content"] += float(terms.content) / weights.content
            sums["style"] += float(terms.style) / weights.style
            sums["total_variation"] += float(terms.total_variation) / weights.total_variation
    return {key: value / len(images) for key, value in sums.items()}


def style_model_id(name: str, kind: NetKind, style_sha256: str) -> str:
    """Model id of a style net: its name, size, and the first 12 hex of the style's sha256."""
    return f"style-{safe_name(name)}-{kind}-{style_sha256[:12]}"


def save_style_model(
    model: StyleTransformer, config: TrainConfig, *, build: dict[str, str]
) -> StoredModel:
    """Export ``model`` to ONNX at the configured resolution and store it with its manifest."""
    proto = export_onnx(model, height_px=config.export_height_px, width_px=config.export_width_px)
    data = proto.SerializeToString()
    style_sha256 = sha256_file(config.style_image)
    shape = (1, 3, config.export_height_px, config.export_width_px)
    manifest = ModelManifest(
        model_id=style_model_id(config.name, config.kind, style_sha256),
        format="onnx",
        precision="fp32",
        source_sha256=style_sha256,
        artifact_sha256=hashlib.sha256(data).hexdigest(),
        inputs=(TensorSpecModel(name=INPUT_NAME, dtype="float32", shape=shape),),
        outputs=(TensorSpecModel(name=OUTPUT_NAME, dtype="float32", shape=shape),),
        library_versions={
            "onnx": onnx.__version__,
            "opset": str(proto.opset_import[0].version),
            "torch": torch.__version__,
        },
        build={"net": config.kind, "style_image": config.style_image.name, **build},
    )
    store = ModelStore(config.store_dir)
    return store.save(store.model_path(config.name), data, manifest)


def _save_checkpoint(model: StyleTransformer, path: Path) -> None:
    """The model's state dict at ``path``, replaced atomically (a crash mid-save keeps the
    previous checkpoint)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    atomic_write(path, buffer.getvalue())


def _evaluation_images(content: Sequence[npt.NDArray[np.uint8]]) -> list[torch.Tensor]:
    chosen = content[:: max(1, len(content) // 4)][:4]
    tensors = []
    for image in chosen:
        height, width = image.shape[:2]
        scale = 256 / max(height, width)
        size = (max(8, round(width * scale) // 8 * 8), max(8, round(height * scale) // 8 * 8))
        tensors.append(to_tensor(np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))))
    return tensors


def _lr_factor(done: int, iterations: int, decay_fraction: float) -> float:
    """Learning-rate factor after ``done`` steps: 1, then linearly down to 0.1 over the last
    ``decay_fraction`` of the ``iterations`` (Adam's noise at a constant rate keeps the loss
    above what the net can reach; the final decay lets it settle)."""
    decay_steps = iterations * decay_fraction
    if decay_steps <= 0:
        return 1.0
    remaining = max(0.0, iterations - done)
    return 0.1 + 0.9 * min(1.0, remaining / decay_steps)


def load_onnx_weights(model: StyleTransformer, path: Path) -> None:
    """Load the weights of an exported style model (its initializers carry the state-dict
    names) into ``model``; ModelFileError when the file cannot be read or is not a net of
    ``model``'s kind."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the ONNX model: {exc}") from exc
    load_state(model, read_onnx_weights(data, path), path, torch)


def train(config: TrainConfig) -> TrainResult:
    """Train, checkpoint every ``checkpoint_every`` steps, export and store the model.

    Checkpoints (torch state dicts) go to ``<checkpoint_dir>/<name>.pt``; progress is
    logged every ``log_every`` steps.
    """
    started = time.monotonic()
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    generator = random.Random(config.seed)
    style = read_image_bgr(config.style_image)
    height, width = style.shape[:2]
    style = np.asarray(
        cv2.resize(
            style,
            (config.style_width_px, round(height * config.style_width_px / width)),
            interpolation=cv2.INTER_AREA,
        ),
        dtype=np.uint8,
    )
    content = load_content(config.content_dirs, config.frames_per_video)
    _log.info("training %s (%s) on %d content images", config.name, config.kind, len(content))
    network = Vgg16Features(read_vgg16_weights()).eval()
    losses = StyleLosses(network, to_tensor(style), config.weights)
    model = build_transformer(config.kind)
    if config.init_model is not None:
        load_onnx_weights(model, config.init_model)
        _log.info("warm start from %s", config.init_model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda done: _lr_factor(done, config.iterations, config.lr_decay_fraction)
    )
    checkpoint = config.checkpoint_dir / f"{safe_name(config.name)}.pt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    running: dict[str, float] = {}
    for step in range(1, config.iterations + 1):
        model.train()
        first_frames, second_frames, flows, valids = _batch(content, config, generator)
        outputs_first = model(first_frames)
        outputs_second = model(second_frames)
        terms = losses(outputs_second, losses.content_targets(second_frames))
        temporal = config.weights.temporal * temporal_loss(
            outputs_second, warp(outputs_first, flows), valids
        )
        total = terms.total + temporal
        optimizer.zero_grad()
        total.backward()  # type: ignore[no-untyped-call]  # unannotated in torch
        optimizer.step()
        scheduler.step()
        for key, value in (
            ("content", terms.content),
            ("style", terms.style),
            ("tv", terms.total_variation),
            ("temporal", temporal),
            ("total", total),
        ):
            running[key] = running.get(key, 0.0) + float(value.detach())
        if step % config.log_every == 0:
            _log.info(
                "step %d/%d %.0fs %s",
                step,
                config.iterations,
                time.monotonic() - started,
                " ".join(f"{k}={v / config.log_every:.1f}" for k, v in running.items()),
            )
            running.clear()
        if step % config.checkpoint_every == 0:
            _save_checkpoint(model, checkpoint)
    evaluation = evaluate_losses(model, losses, _evaluation_images(content))
    seconds = time.monotonic() - started
    build = {
        "iterations": str(config.iterations),
        "batch_size": str(config.batch_size),
        "crop_px": str(config.crop_px),
        "style_width_px": str(config.style_width_px),
        "lr_schedule": f"constant, then linear to 0.1x over the last {config.lr_decay_fraction:g}",
        "weights": str(config.weights),
        "content_layer": CONTENT_LAYER,
        "style_layers": ",".join(STYLE_LAYERS),
        "loss_network_sha256": VGG16_ONNX_SHA256,
        "train_seconds": f"{seconds:.0f}",
        "command": config.command,
    }
    if config.init_model is not None:
        build["init_model_sha256"] = sha256_file(config.init_model)
    stored = save_style_model(model, config, build=build)
    _save_checkpoint(model, checkpoint)
    _log.info(
        "stored %s (%s) after %.0f s: %s",
        stored.path,
        stored.manifest.model_id,
        seconds,
        evaluation,
    )
    return TrainResult(stored=stored, losses=evaluation, seconds=seconds)
