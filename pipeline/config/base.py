"""The base of every config section (kept apart from ``pipeline.config.service`` so that stage
modules
can define their own sections without importing the whole configuration)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["StrictModel"]


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
