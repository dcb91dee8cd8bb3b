"""Helpers the live-recognition tests share: the sample face enrolled (in services of their
own or a running service's), and the frames recognised so far on a camera."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipeline.config.service import FaceStreamConfig
from pipeline.gallery.model import Identity
from pipeline.images import decode_image
from pipeline.service.app import Services, open_services
from pipeline.service.sample import SampleFiles

SAMPLE_NAME = "eileen_collins"  # the face in the sample video and its gallery


@contextmanager
def enrolled_services(data_dir: Path, sample: SampleFiles) -> Iterator[Services]:
    """Services on ``data_dir`` and an embedded Redis, with the sample face enrolled; skips
    the test when redis-server is not installed."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with open_services(FaceStreamConfig(data_dir=data_dir)) as built:
        enrol_sample(built, sample)
        yield built


def enrol_sample(services: Services, sample: SampleFiles, name: str = SAMPLE_NAME) -> Identity:
    """Enrol the sample gallery's photo of the sample face under ``name``."""
    photo = next((sample.gallery / SAMPLE_NAME).iterdir())
    found = services.enrolment_templates([(photo.name, decode_image(photo.read_bytes()))])
    assert not found.rejected
    return services.enroll(name, found.templates)


def frames_processed(services: Services, camera_id: str) -> float:
    """facestream_frames_processed_total of ``camera_id`` (0 before its first frame)."""
    value = services.metrics.registry.get_sample_value(
        "facestream_frames_processed_total", {"camera": camera_id}
    )
    return value or 0.0
