"""INT8 (ONNX Runtime QDQ) vs fp32 face encoder at batch 16, side by side in one process.

The int8 model is calibrated on the faces of ../shared/data/faces/deepface and both engines
encode the same 16 real chips from ../shared/data/faces/face_recognition (not used for
calibration), interleaved round by round so machine noise hits both alike. Prints progress on
stderr and one JSON object as the last line: ``ours`` is int8 in ms per face, ``baseline`` fp32,
``ratio`` baseline / ours (above 1: int8 is faster), plus the cosine similarity of the two,
the CPU's int8 instruction set (``int8_isa``: ONNX Runtime's u8s8 kernels are much faster with
VNNI than with AVX2 alone, so the ratio depends on it) and the load average before and after.

    python benchmarks/int8.py [--rounds 7] [--threads 0] [--method percentile]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED_DATA, log, machine_name, median_seconds
from calibration.int8 import (
    build_int8_encoder,
    collect_calibration_chips,
    descriptor_cosines,
    encode_dataset,
)
from engines.models.encoder import build_encoder_onnx
from engines.quantize import QUANT_METHODS, FaceChipDataset, QuantizeSettings
from engines.runtime.onnxrt import OrtEngine, OrtSettings
from engines.store import ModelStore
from pipeline.recognition.align import FaceAligner
from pipeline.recognition.detect.blazeface import BlazeFaceConfig
from pipeline.recognition.detect.factory import load_detector

BATCH = 16


def int8_isa() -> str:
    """The best x86 int8 dot-product instructions the CPU reports: ``avx512_vnni``,
    ``avx_vnni``, ``avx2`` (no VNNI: u8s8 products go through saturating 16-bit sums, hence
    7-bit weights) or ``unknown``."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    for isa in ("avx512_vnni", "avx_vnni", "avx2"):
        if isa in flags:
            return isa
    return "unknown"


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def main() -> None:
    """Run the benchmark and print the JSON result line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="ORT threads (0: one per core)")
    parser.add_argument("--method", choices=QUANT_METHODS, default="percentile")
    args = parser.parse_args()
    if not SHARED_DATA.is_dir():
        sys.exit(f"needs the face photos in {SHARED_DATA}")

    load_before = _load()
    with tempfile.TemporaryDirectory() as data_dir:
        store = ModelStore(Path(data_dir))
        log("calibrating the int8 encoder on deepface photos ...")
        int8 = build_int8_encoder(
            store, SHARED_DATA / "faces" / "deepface", QuantizeSettings(method=args.method)
        )
        fp32 = build_encoder_onnx(store)
        detector = load_detector(BlazeFaceConfig(), store)
        held_out = collect_calibration_chips(
            SHARED_DATA / "faces" / "face_recognition", detector, FaceAligner()
        )
        detector.close()
        chips = FaceChipDataset(held_out.chips[:BATCH].copy())
        settings = OrtSettings(intra_op_threads=args.threads)
        with (
            OrtEngine(fp32.path, store, settings) as reference,
            OrtEngine(int8.path, store, settings) as quantized,
        ):
            cosines = descriptor_cosines(
                encode_dataset(reference, chips), encode_dataset(quantized, chips)
            )
            fp32_ms: list[float] = []
            int8_ms: list[float] = []
            for engine in (reference, quantized):  # warm-up: the first run allocates
                encode_dataset(engine, chips, batch_size=BATCH)
            for round_index in range(args.rounds):
                for engine, times in ((reference, fp32_ms), (quantized, int8_ms)):
                    run = partial(encode_dataset, engine, chips, batch_size=BATCH)
                    times.append(median_seconds(run, repeats=3) / len(chips) * 1000)
                log(
                    f"round {round_index + 1}/{args.rounds}: fp32 {fp32_ms[-1]:.2f} ms/face, "
                    f"int8 {int8_ms[-1]:.2f} ms/face"
                )
            backend = quantized.backend
            int8_model_id = quantized.model_id

    baseline_ms = float(np.median(fp32_ms))
    ours_ms = float(np.median(int8_ms))
    print(
        json.dumps(
            {
                "name": "encoder_int8_batch16",
                "machine": machine_name(),
                "backend": f"{backend} int8-qdq",
                "ours": round(ours_ms, 3),
                "baseline": round(baseline_ms, 3),
                "ratio": round(baseline_ms / ours_ms, 3),
                "unit": "ms/face",
                "baseline_backend": f"{backend} fp32",
                "method": args.method,
                "int8_model_id": int8_model_id,
                "cosine_min": round(float(cosines.min()), 6),
                "cosine_mean": round(float(cosines.mean()), 6),
                "n_chips": len(chips),
                "threads": args.threads,
                "rounds": args.rounds,
                "int8_isa": int8_isa(),
                "load_avg_1min": [load_before, _load()],
            }
        )
    )


if __name__ == "__main__":
    main()
