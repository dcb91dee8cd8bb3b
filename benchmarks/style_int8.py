"""INT8 (ONNX Runtime QDQ) vs fp32 style network at 640x360, side by side in one process.

The shipped fp32 style model is quantised by ``engines.quantize.quantize_style_model``,
calibrated on frames of two shared videos (crowd walk, MOT20) fitted to the model's size as
the runtime fits them; both networks then stylize the same held-out frames of the 640x360
Hamilton clip through the runtime's own ``StyleNetwork``. Quality:
PSNR and mean absolute difference (0-255 levels) of the int8 output against the fp32 output.
Prints progress on stderr and one JSON object as the last line: ``ours`` is int8 in frames per
second, ``baseline`` fp32 (medians over rounds), ``ratio`` the median over rounds of int8 fps /
fp32 fps (above 1: int8 is faster); in a round the two networks alternate frame by frame.

    python benchmarks/style_int8.py [--style udnie] [--rounds 7] [--threads 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED_DATA, log, machine_name
from engines.quantize import QUANT_METHODS, QuantizeSettings, StyleFrameDataset
from engines.quantize import quantize_style_model as quantize
from engines.store import ModelStore
from pipeline.style.engine import StyleCatalog, StyleEngineSettings, load_style_network
from pipeline.style.frames import Letterbox

CALIBRATION_VIDEOS = (
    SHARED_DATA / "video" / "faces" / "facenet_pytorch_crowd_walk.mp4",
    SHARED_DATA / "video" / "nonface" / "MOT20-05-raw_even_shorter.mp4",
)
HELD_OUT_VIDEO = SHARED_DATA / "video" / "faces" / "short_hamilton_clip.mp4"


def _frames(path: Path, count: int, size: tuple[int, int]) -> list[npt.NDArray[np.uint8]]:
    """``count`` evenly spaced frames of ``path`` fitted to ``size`` (height, width)."""
    capture = cv2.VideoCapture(str(path))
    try:
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        frames = []
        for index in np.linspace(0, max(total - 1, 0), count).astype(int):
            capture.set(cv2.CAP_PROP_POS_FRAMES, int(index))
            ok, frame = capture.read()
            if ok:
                image = np.asarray(frame, np.uint8)
                box = Letterbox(image.shape[1], image.shape[0], size[1], size[0])
                frames.append(np.ascontiguousarray(box.fit(image)))
    finally:
        capture.release()
    if not frames:
        sys.exit(f"no frames read from {path}")
    return frames


def _quality(
    reference: list[npt.NDArray[np.uint8]], candidate: list[npt.NDArray[np.uint8]]
) -> dict[str, float]:
    errors = [
        np.asarray(ours, np.float64) - np.asarray(base, np.float64)
        for ours, base in zip(candidate, reference, strict=True)
    ]
    mse = float(np.mean([np.mean(error**2) for error in errors]))
    return {
        "psnr_db": round(10 * np.log10(255.0**2 / max(mse, 1e-12)), 2),
        "mean_abs_diff": round(float(np.mean([np.mean(np.abs(e)) for e in errors])), 3),
        "max_abs_diff": round(float(max(np.max(np.abs(e)) for e in errors)), 1),
    }


def main() -> None:
    """Run the benchmark and print the JSON result line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--style", default="udnie")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="ORT threads (0: one per core)")
    parser.add_argument("--method", choices=QUANT_METHODS, default="percentile")
    parser.add_argument("--calibration-frames", type=int, default=16, help="per video")
    args = parser.parse_args()
    if not HELD_OUT_VIDEO.is_file():
        sys.exit(f"needs the shared videos in {SHARED_DATA / 'video'}")

    catalog = StyleCatalog()
    fp32 = catalog.store.open(catalog.path(args.style))
    (spec,) = fp32.manifest.inputs
    size = (int(spec.shape[2] or 0), int(spec.shape[3] or 0))
    calibration = [
        frame
        for video in CALIBRATION_VIDEOS
        for frame in _frames(video, args.calibration_frames, size)
    ]
    held_out = _frames(HELD_OUT_VIDEO, 8, size)
    settings = StyleEngineSettings(threads=args.threads)
    with tempfile.TemporaryDirectory() as data_dir:
        log(f"calibrating {args.style} int8 on {len(calibration)} frames ...")
        int8 = quantize(
            ModelStore(Path(data_dir)),
            fp32,
            StyleFrameDataset(np.stack(calibration)),
            QuantizeSettings(method=args.method, batch_size=1, min_chips=8),
        )
        reference = load_style_network(fp32.path, settings)
        quantized = load_style_network(int8.path, settings)
        try:
            quality = _quality(
                [reference.stylize(frame) for frame in held_out],
                [quantized.stylize(frame) for frame in held_out],
            )
            log(f"quality int8 vs fp32: {json.dumps(quality)}")
            fps: dict[str, list[float]] = {"fp32": [], "int8": []}
            for network in (reference, quantized):  # warm-up: the first run allocates
                network.stylize(held_out[0])
            for round_index in range(args.rounds):
                seconds = {"fp32": 0.0, "int8": 0.0}
                for frame in held_out:  # frame by frame, alternating: noise hits both alike
                    for name, network in (("fp32", reference), ("int8", quantized)):
                        start = time.perf_counter()
                        network.stylize(frame)
                        seconds[name] += time.perf_counter() - start
                for name, total in seconds.items():
                    fps[name].append(len(held_out) / total)
                log(
                    f"round {round_index + 1}/{args.rounds}: fp32 {fps['fp32'][-1]:.1f} fps, "
                    f"int8 {fps['int8'][-1]:.1f} fps"
                )
            backend = quantized.engine.backend
            int8_model_id = quantized.model_id
        finally:
            reference.close()
            quantized.close()

    baseline = float(np.median(fps["fp32"]))
    ours = float(np.median(fps["int8"]))
    # the median of the per-round ratios: a round's two figures share that round's machine load
    ratio = float(np.median(np.divide(fps["int8"], fps["fp32"])))
    print(
        json.dumps(
            {
                "name": f"style_int8_{args.style}_{size[1]}x{size[0]}",
                "machine": machine_name(),
                "backend": f"{backend} int8-qdq",
                "ours": round(ours, 2),
                "baseline": round(baseline, 2),
                "ratio": round(ratio, 3),
                "unit": "fps",
                "baseline_backend": f"{backend} fp32",
                "method": args.method,
                "int8_model_id": int8_model_id,
                **quality,
                "calibration_frames": len(calibration),
                "held_out_frames": len(held_out),
                "threads": args.threads,
                "rounds": args.rounds,
            }
        )
    )


if __name__ == "__main__":
    main()
