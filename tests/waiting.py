"""Waiting in tests: poll a condition until it holds, with a deadline, never a bare sleep."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def wait_until(condition: Callable[[], bool], timeout_seconds: float, what: str) -> None:
    """Poll ``condition`` every 20 ms until it holds; fail naming ``what`` after the deadline."""
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_seconds:g} s")
        time.sleep(0.02)
