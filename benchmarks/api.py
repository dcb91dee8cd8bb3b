"""HTTP API cost: POST /v1/identify over HTTP vs the same work called in-process.

A real service (embedded Redis, the sample face enrolled, no camera) serves the API with
uvicorn on 127.0.0.1; a frame of the sample video (640x360 JPEG) is identified ``--rounds``
times over HTTP (httpx, keep-alive) and, interleaved, by calling the same steps directly
(decode, analyze, gallery query). The difference is what the API layer (multipart parsing,
threadpool hop, JSON) adds per request.

    python benchmarks/api.py --rounds 30     # last stdout line: the JSON result
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import log, machine_name
from pipeline.config.service import FaceStreamConfig
from pipeline.images import decode_image
from pipeline.service.http.app import create_app
from pipeline.service.sample import make_sample
from pipeline.service.service import run_service

TOKEN = "benchmark-token-0123456789"


def _sample_frame(video: Path) -> bytes:
    capture = cv2.VideoCapture(str(video))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 10)
    ok, frame = capture.read()
    capture.release()
    if not ok:
        raise RuntimeError(f"cannot read a frame of {video}")
    return bytes(cv2.imencode(".jpg", frame)[1].tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        sample = make_sample(root / "sample", seconds=1.0)
        frame = _sample_frame(sample.video)
        with run_service(FaceStreamConfig(data_dir=root / "data")) as service:
            photo = next((sample.gallery / "eileen_collins").iterdir())
            templates = service.services.enrolment_templates(
                [(photo.name, decode_image(photo.read_bytes()))]
            ).templates
            service.services.enroll("eileen_collins", templates)
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            port = listener.getsockname()[1]
            server = uvicorn.Server(
                uvicorn.Config(create_app(service, token=TOKEN), log_level="warning")
            )
            thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]})
            thread.start()
            while not server.started:
                time.sleep(0.01)
            tau = service.config.recognition.match.max_distance

            def direct() -> str:
                analyzed = service.services.analyzer.analyze(decode_image(frame))
                found = service.services.gallery.identify(
                    analyzed.embeddings, top_k=5, max_distance=tau
                )
                return found[0][0].name

            http_seconds: list[float] = []
            direct_seconds: list[float] = []
            headers = {"Authorization": f"Bearer {TOKEN}"}
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
                for round_number in range(args.rounds + 1):
                    started = time.perf_counter()
                    reply = client.post(
                        "/v1/identify", files={"image": ("frame.jpg", frame, "image/jpeg")}
                    )
                    reply.raise_for_status()
                    elapsed_http = time.perf_counter() - started
                    started = time.perf_counter()
                    name = direct()
                    elapsed_direct = time.perf_counter() - started
                    if reply.json()["matches"][0]["name"] != name:
                        raise RuntimeError("HTTP and direct calls disagree")
                    if round_number:  # the first round warms both paths up
                        http_seconds.append(elapsed_http)
                        direct_seconds.append(elapsed_direct)
                    log(f"round {round_number}: http {elapsed_http * 1e3:.1f} ms")
            server.should_exit = True
            thread.join()
    http_ms = statistics.median(http_seconds) * 1e3
    direct_ms = statistics.median(direct_seconds) * 1e3
    print(
        json.dumps(
            {
                "benchmark": "api_identify",
                "machine": machine_name(),
                "image": "640x360 JPEG, one face",
                "rounds": args.rounds,
                "http_median_ms": round(http_ms, 2),
                "direct_median_ms": round(direct_ms, 2),
                "api_overhead_ms": round(http_ms - direct_ms, 2),
                "http_p95_ms": round(sorted(http_seconds)[int(0.95 * len(http_seconds))] * 1e3, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
