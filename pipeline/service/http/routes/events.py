"""/v1/events: the newest events of the stream."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query

from pipeline.service.http.schemas import EventList
from pipeline.service.http.state import State
from pipeline.types import EventKind

__all__ = ["router"]

router = APIRouter(tags=["events"])


@router.get("/events")
def recent_events(
    state: State,
    count: Annotated[int, Query(ge=1, le=1000)] = 50,
    kind: Annotated[EventKind | None, Query()] = None,
) -> EventList:
    """The newest events of the stream, newest first."""
    events = state.service.bus.recent(count, kind=kind)
    return EventList(events=[json.loads(event.to_json()) for event in events])
