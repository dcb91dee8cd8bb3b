"""The preview page's unknown faces panel in a real browser (headless chromium, selenium),
against a real service behind uvicorn on 127.0.0.1.

With unknown faces off (the default, ``[unknowns] enabled = false``) the API answers 404, and
the panel says they are off and how to turn them on, with the API's own message."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from browser_support import chromium, sign_in, wait_for

from pipeline.config.service import FaceStreamConfig
from pipeline.liveness.config import LivenessConfig
from pipeline.service.service import FaceStreamService, run_service

ServeApi = Callable[[FaceStreamService, str], AbstractContextManager[str]]
TOKEN = "unknowns-browser-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def unknowns_off_url(tmp_path: Path, serve_api: ServeApi) -> Iterator[str]:
    """A running service with the default config (unknown faces off), no camera."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    config = FaceStreamConfig(data_dir=tmp_path / "data", liveness=LivenessConfig(enabled=False))
    with run_service(config) as service, serve_api(service, TOKEN) as base_url:
        yield base_url


def test_unknowns_panel_says_the_feature_is_off_and_how_to_turn_it_on(
    unknowns_off_url: str,
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415  (test-only dependency)

    refused = httpx.get(f"{unknowns_off_url}/v1/unknowns", headers=AUTH, timeout=30.0)
    assert refused.status_code == 404
    detail = refused.json()["detail"]
    with chromium() as driver:
        sign_in(driver, unknowns_off_url, TOKEN)

        def panel_text() -> str:
            return str(driver.find_element(By.ID, "unknowns-state").text)

        wait_for(lambda: "Unknown faces are off" in panel_text(), "that unknown faces are off")
        assert "enabled = true in the [unknowns] section" in panel_text()
        assert detail in panel_text()
        assert driver.find_elements(By.CSS_SELECTOR, "#cluster-list li") == []
