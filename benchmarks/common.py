"""Helpers shared by the benchmark scripts: machine description and interleaved timing."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["SHARED_DATA", "log", "machine_name", "median_seconds"]

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def machine_name() -> str:
    """CPU model and core count (and GPU where torch sees one), for the JSON line."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def log(message: str) -> None:
    """Progress goes to stderr; stdout's last line is the result."""
    print(message, file=sys.stderr, flush=True)


def median_seconds(function: Callable[[], object], *, repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``function`` (seconds)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
