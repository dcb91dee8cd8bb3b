"""Per-face encoder latency: dlib's compute_face_descriptor (baseline) vs our OrtEngine.

Both run on the same real face chips in the same process, interleaved round by round so that
machine noise hits both alike. Prints progress on stderr and one JSON object as the last line:
``ours`` is OrtEngine at batch 16 in ms per face, ``ratio`` is baseline / ours.

    python benchmarks/encoder.py [--rounds 5] [--threads 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED_DATA, log, machine_name, median_seconds
from engines.convert.parity import DlibOracle, astronaut_rgb, encode_chips, image_files, read_rgb
from engines.models.encoder import EngineSettings, load_encoder
from engines.store import ModelStore, default_encoder_source, installed_dlib_model

BATCH_SIZES = (1, 8, 16, 32)


def _chips(oracle: DlibOracle, count: int) -> list[npt.NDArray[np.uint8]]:
    chips = oracle.chips(astronaut_rgb())
    for path in image_files([SHARED_DATA / "faces"]) if SHARED_DATA.is_dir() else []:
        if len(chips) >= count:
            break
        chips.extend(oracle.chips(read_rgb(path), upsample=0))
    while len(chips) < count:  # without shared data, repeat the chips we have
        chips.extend(chips)
    return chips[:count]


def main() -> None:
    """Run the benchmark and print the JSON result line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="ORT threads (0: one per core)")
    args = parser.parse_args()

    oracle = DlibOracle(
        encoder_path=default_encoder_source(),
        predictor_path=installed_dlib_model("shape_predictor_5_face_landmarks.dat"),
    )
    chips = _chips(oracle, max(BATCH_SIZES))
    with tempfile.TemporaryDirectory() as data_dir:
        engine = load_encoder(
            ModelStore(Path(data_dir)), EngineSettings(threads=args.threads, opt_batch=16)
        )
        ours: dict[int, list[float]] = {size: [] for size in BATCH_SIZES}
        baseline: list[float] = []
        encode_chips(engine, chips, batch_size=16)  # warm-up: first run allocates
        for round_index in range(args.rounds):
            sample = chips[:8]
            dlib_seconds = median_seconds(partial(oracle.descriptors, sample), repeats=1)
            baseline.append(dlib_seconds / len(sample) * 1000)
            for size in BATCH_SIZES:
                run = partial(encode_chips, engine, chips[:size], batch_size=size)
                seconds = median_seconds(run, repeats=max(1, 32 // size))
                ours[size].append(seconds / size * 1000)
            log(
                f"round {round_index + 1}/{args.rounds}: dlib {baseline[-1]:.1f} ms/face, "
                + ", ".join(f"b{size} {ours[size][-1]:.2f}" for size in BATCH_SIZES)
            )
        backend = engine.backend
        engine.close()

    baseline_ms = float(np.median(baseline))
    per_batch = {str(size): round(float(np.median(values)), 3) for size, values in ours.items()}
    ours_ms = per_batch["16"]
    print(
        json.dumps(
            {
                "name": "encoder",
                "machine": machine_name(),
                "backend": backend,
                "ours": ours_ms,
                "baseline": round(baseline_ms, 3),
                "ratio": round(baseline_ms / ours_ms, 2),
                "unit": "ms/face",
                "ours_ms_per_face": ours_ms,
                "baseline_ms_per_face": round(baseline_ms, 3),
                "ours_ms_per_face_by_batch": per_batch,
                "ratio_by_batch": {
                    size: round(baseline_ms / value, 2) for size, value in per_batch.items()
                },
                "n_chips": len(chips),
                "rounds": args.rounds,
            }
        )
    )


if __name__ == "__main__":
    main()
