"""A bounded queue between capture and detection that drops the oldest item when full.

A door wants the freshest frame, so a full queue evicts its oldest item instead of blocking the
camera's reader thread; each eviction is counted on that camera's ``frames_dropped`` child.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Generic, Protocol, TypeVar

from pipeline.errors import QueueClosedError

__all__ = ["DepthGauge", "DropCounter", "DropOldestQueue"]

T = TypeVar("T")


class DropCounter(Protocol):
    """What the queue needs of a counter: a Prometheus ``Counter`` child (labelled by camera)."""

    def inc(self, amount: float = 1) -> None:
        """Add ``amount`` (items) to the counter."""


class DepthGauge(Protocol):
    """What the queue needs of a gauge: a Prometheus ``Gauge`` child (labelled by camera)."""

    def set(self, value: float) -> None:
        """Set the gauge to ``value`` (items)."""


class DropOldestQueue(Generic[T]):
    """Bounded, thread-safe FIFO whose ``put`` never blocks and evicts the oldest item when full.

    ``capacity_items``: items held before the oldest is dropped (>= 1). ``dropped``: the counter
    child incremented once per item lost, evicted by ``put`` or refused after ``close``.
    ``depth``: an optional gauge child kept equal to the number of items held.
    """

    def __init__(
        self, capacity_items: int, dropped: DropCounter, depth: DepthGauge | None = None
    ) -> None:
        if capacity_items < 1:
            raise ValueError(f"capacity_items must be >= 1, got {capacity_items}")
        self._items: deque[T] = deque(maxlen=capacity_items)
        self._dropped = dropped
        self._depth = depth
        self._not_empty = threading.Condition()
        self._closed = False

    @property
    def capacity_items(self) -> int:
        """Items held before the oldest is dropped."""
        maxlen = self._items.maxlen
        assert maxlen is not None  # set in __init__
        return maxlen

    @property
    def closed(self) -> bool:
        """True once ``close`` was called."""
        with self._not_empty:
            return self._closed

    def __len__(self) -> int:
        with self._not_empty:
            return len(self._items)

    def put(self, item: T) -> None:
        """Append ``item`` without blocking; when full, the oldest item is dropped and counted.

        After ``close`` the item itself is dropped and counted.
        """
        with self._not_empty:
            if self._closed:
                self._dropped.inc()
                return
            if len(self._items) == self._items.maxlen:
                self._dropped.inc()  # deque(maxlen=...) evicts the oldest on append
            self._items.append(item)
            self._report_depth()
            self._not_empty.notify()

    def get(self, timeout_seconds: float) -> T | None:
        """The oldest item, waiting up to ``timeout_seconds``; None when none arrived in time.

        Raises QueueClosedError once the queue is closed and empty (items put before ``close``
        are still handed out).
        """
        deadline = time.monotonic() + max(0.0, timeout_seconds)
        with self._not_empty:
            while not self._items:
                if self._closed:
                    raise QueueClosedError("the frame queue is closed and empty")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._not_empty.wait(remaining)
            item = self._items.popleft()
            self._report_depth()
            return item

    def close(self) -> None:
        """Refuse further items and wake every waiting ``get``."""
        with self._not_empty:
            self._closed = True
            self._not_empty.notify_all()

    def _report_depth(self) -> None:
        if self._depth is not None:
            self._depth.set(len(self._items))
