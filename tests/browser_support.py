"""The real browser of the browser tests: Debian's headless chromium through selenium, signed
in to the preview page with the API token."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
BROWSER_DEADLINE_SECONDS = 60.0


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll what the browser shows every 0.2 s until ``condition`` holds; fail naming
    ``what`` after ``BROWSER_DEADLINE_SECONDS``."""
    deadline = time.monotonic() + BROWSER_DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"the browser did not show {what} within {BROWSER_DEADLINE_SECONDS} s")
        time.sleep(0.2)


@contextmanager
def chromium() -> Iterator[WebDriver]:
    """A headless chromium, quit on exit; skips when Debian's chromium or its driver is
    missing."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    from selenium import webdriver  # noqa: PLC0415  (test-only dependency)
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1000,1400")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()


def sign_in(driver: WebDriver, base_url: str, token: str) -> None:
    """Sign in through /login (the token in a POST body) and wait for the preview page."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    driver.get(f"{base_url}/login")
    token_field = driver.find_element(By.NAME, "token")
    token_field.send_keys(token)
    token_field.submit()
    wait_for(lambda: driver.current_url == f"{base_url}/preview", "the preview page")
