"""The live preview in a real browser: Debian's headless chromium, driven by selenium, signs
in with the token, shows the sample camera's MJPEG stream with the enrolled face boxed in green
and named, and lists the name on the page."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import cv2
import numpy as np
import pytest
from browser_support import chromium, sign_in, wait_for
from live_support import enrol_sample

from pipeline.capture import CameraConfig
from pipeline.config.service import FaceStreamConfig
from pipeline.service.sample import make_sample
from pipeline.service.service import FaceStreamService, run_service

ServeApi = Callable[[FaceStreamService, str], AbstractContextManager[str]]
TOKEN = "browser-test-token-0123456789"


@pytest.fixture
def preview_url(tmp_path: Path, serve_api: ServeApi) -> Iterator[str]:
    """The API of a service running the sample camera, its face enrolled."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    sample = make_sample(tmp_path / "sample", seconds=4.0)
    camera = CameraConfig(id="entrance", url=str(sample.video), loop=True, realtime=True)
    config = FaceStreamConfig(data_dir=tmp_path / "data")
    with run_service(config) as service:
        enrol_sample(service.services, sample)
        service.add_camera(camera)
        with serve_api(service, TOKEN) as base_url:
            yield base_url


def test_preview_page_shows_the_stream_with_boxes_and_names(preview_url: str) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415  (test-only dependency)

    with chromium() as driver:
        sign_in(driver, preview_url, TOKEN)  # a POST: the token is never in an address
        assert TOKEN not in driver.current_url

        def names_listed() -> bool:
            items = driver.find_elements(By.CSS_SELECTOR, "#camera-entrance .tracks li")
            return any("eileen_collins" in item.text for item in items)

        wait_for(names_listed, "the enrolled name in the track list")
        image = driver.find_element(By.CSS_SELECTOR, "#camera-entrance img")
        wait_for(
            lambda: bool(driver.execute_script("return arguments[0].naturalWidth;", image)),
            "a frame of the MJPEG stream",
        )
        assert driver.execute_script("return arguments[0].naturalWidth;", image) == 640
        state = driver.find_element(By.CSS_SELECTOR, "#camera-entrance .state").text
        assert state == "state: up"

        def green_box_drawn() -> bool:
            png = np.frombuffer(image.screenshot_as_png, np.uint8)
            shown = cv2.imdecode(png, cv2.IMREAD_COLOR)
            assert shown is not None
            # the box and label of a known face are drawn in (60, 200, 60) BGR
            near = np.abs(shown.astype(np.int16) - np.array([60, 200, 60])).max(axis=2) < 40
            return int(near.sum()) > 200

        wait_for(green_box_drawn, "a green box around the known face")
