"""What every route and the request guard share: the service, the tokens, the face-analysis
lock and rate limit, and the still-photo liveness judge; ``State`` is its route dependency."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from pipeline.liveness import LivenessJudge
from pipeline.service.http.ratelimit import RateLimiter
from pipeline.service.service import FaceStreamService

__all__ = ["ApiState", "State", "api_state"]


@dataclass(frozen=True, slots=True)
class ApiState:
    service: FaceStreamService
    token: bytes
    admin_token: bytes  # the same as token when no separate one is configured
    analysis_lock: threading.Lock  # one API face analysis at a time: the cores are shared
    analysis_limit: RateLimiter
    still_judge: LivenessJudge | None  # photo liveness; built once (its blink model is large)


def api_state(request: Request) -> ApiState:
    """The state ``create_app`` left on the app."""
    state: ApiState = request.app.state.facestream
    return state


State = Annotated[ApiState, Depends(api_state)]
