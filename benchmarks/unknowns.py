"""Cost of keeping one unknown track with many clusters already stored.

Two namespaces of one embedded Redis (AOF, fsync always, as the service runs it) are filled
with ``--clusters`` clusters of random 128-d encodings (far apart: each its own cluster).
Interleaved, one track is added to each: ours through one long-lived ``UnknownsStore`` (it keeps
the state its last write left), the baseline through a new store per track, which reads every
cluster back first (what every track cost before, and still costs after another process
wrote).

    python benchmarks/unknowns.py --clusters 1000 --rounds 20   # last stdout line: JSON
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import log, machine_name
from pipeline.config.service import GalleryConfig
from pipeline.config.unknowns import UnknownsConfig
from pipeline.gallery.store import Gallery
from pipeline.gallery.unknowns import UnknownsStore
from pipeline.metrics import PipelineMetrics
from pipeline.redis.server import EmbeddedRedis
from pipeline.types import Embeddings, Quality, TrackFaces

MODEL_ID = "benchmark-random-128d"
TAU = 0.6
QUALITY = Quality(40.0, 50.0, 0.05, 0.0, 120.0, 0.0, 0.9)  # passes every minimum
CHIP = np.zeros((150, 150, 3), np.uint8)


def _track(rng: np.random.Generator, encodings: int) -> TrackFaces:
    vectors = rng.normal(0.0, 1.0, (encodings, 128)).astype(np.float32)
    return TrackFaces(Embeddings(vectors, MODEL_ID), (QUALITY,) * encodings, CHIP)


def _store(client: redis.Redis, namespace: str, folder: Path) -> UnknownsStore:
    gallery = Gallery(
        client,
        PipelineMetrics.create(),
        model_id=MODEL_ID,
        config=GalleryConfig(namespace=namespace),
    )
    return UnknownsStore(
        gallery,
        client,
        UnknownsConfig(enabled=True),
        cluster_distance=TAU,
        thumbnails_dir=folder / "thumbnails",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--encodings", type=int, default=3, help="per track")
    options = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as work, EmbeddedRedis(Path(work) / "redis") as server:
        server.wait_ready(timeout_seconds=10.0)
        client = redis.Redis.from_url(server.url, socket_timeout=10.0)
        folder = Path(work)
        ours = _store(client, "ours", folder)
        for namespace in ("ours", "baseline"):
            filler = _store(client, namespace, folder)
            for number in range(options.clusters):
                filler.add("cam", _track(rng, options.encodings))
                if number % 250 == 249:
                    log(f"{namespace}: {number + 1} clusters")
        ours_ms, baseline_ms = [], []
        for _ in range(options.rounds):
            started = time.perf_counter()
            ours.add("cam", _track(rng, options.encodings))
            ours_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            _store(client, "baseline", folder).add("cam", _track(rng, options.encodings))
            baseline_ms.append((time.perf_counter() - started) * 1000)
        client.close()
    ours_median, baseline_median = statistics.median(ours_ms), statistics.median(baseline_ms)
    print(
        json.dumps(
            {
                "name": f"unknowns_add_{options.clusters}_clusters",
                "machine": machine_name(),
                "backend": "redis-embedded-aof-always",
                "ours": round(ours_median, 2),
                "baseline": round(baseline_median, 2),
                "ratio": round(baseline_median / ours_median, 2),
                "unit": "ms/track",
                "clusters": options.clusters,
                "encodings_per_track": options.encodings,
                "rounds": options.rounds,
            }
        )
    )


if __name__ == "__main__":
    main()
