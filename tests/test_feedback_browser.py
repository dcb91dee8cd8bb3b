"""The operator's "wrong person" button in a real browser: the sample camera's face, enrolled,
is granted at a door through the running service (capture, recognition, door policy,
recorder, event stream); the preview page lists that decision, and clicking "wrong person"
with the API token quarantines the template it matched (checked through the API). A second
click on the same decision, from a page loaded before the first, is refused and the route's
message shown; a page loaded afterwards shows the correction instead of the button."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from browser_support import chromium, sign_in, wait_for
from live_support import enrol_sample
from waiting import wait_until

from pipeline.access.policy import DoorConfig
from pipeline.capture import CameraConfig
from pipeline.config.service import FaceStreamConfig
from pipeline.liveness.config import LivenessConfig
from pipeline.service.sample import make_sample
from pipeline.service.service import FaceStreamService, run_service

ServeApi = Callable[[FaceStreamService, str], AbstractContextManager[str]]
TOKEN = "feedback-browser-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DECISION_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class GrantedDoor:
    """The API's address and the announced grant whose template the test corrects."""

    base_url: str
    event_id: str
    identity_id: str
    template_id: str


@pytest.fixture
def granted(tmp_path: Path, serve_api: ServeApi) -> Iterator[GrantedDoor]:
    """A running service whose door 'lab' (camera 'front', the sample video played once)
    granted the enrolled sample face; the decision as the event stream announced it."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    sample = make_sample(tmp_path / "sample", seconds=4.0)
    config = FaceStreamConfig(
        data_dir=tmp_path / "data",
        liveness=LivenessConfig(enabled=False),  # not about liveness: the sample is a photo
        doors=[
            DoorConfig(
                id="lab",
                cameras=["front"],
                required_matches=2,
                window_encodings=3,
                require_liveness=False,
            )
        ],
    )
    with run_service(config) as service:
        identity = enrol_sample(service.services, sample)
        service.add_camera(CameraConfig(id="front", url=str(sample.video), realtime=True))

        def grants() -> list[dict[str, object]]:
            events = service.bus.recent(50, kind="decision")
            return [
                {"event_id": event.event_id, **event.payload}
                for event in events
                if event.payload.get("outcome") == "granted"
            ]

        wait_until(lambda: bool(grants()), DECISION_TIMEOUT_SECONDS, "a grant at door lab")
        grant = grants()[0]
        assert grant["identity_id"] == identity.identity_id
        assert isinstance(grant["template_id"], str)
        with serve_api(service, TOKEN) as base_url:
            yield GrantedDoor(
                base_url, str(grant["event_id"]), identity.identity_id, grant["template_id"]
            )


def test_feedback_wrong_person_button_quarantines_and_a_second_click_is_refused(
    granted: GrantedDoor,
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415  (test-only dependency)

    row_css = f"#decision-{granted.event_id}"
    with chromium() as driver, httpx.Client(base_url=granted.base_url, timeout=30.0) as http:
        sign_in(driver, granted.base_url, TOKEN)
        first_tab = driver.current_window_handle

        def row_text() -> str:
            rows = driver.find_elements(By.CSS_SELECTOR, row_css)
            return rows[0].text if rows else ""

        def button_shown() -> bool:
            return bool(driver.find_elements(By.CSS_SELECTOR, f"{row_css} button.wrong"))

        wait_for(button_shown, "the grant's 'wrong person' button")
        assert "granted eileen_collins" in row_text()
        # a second operator's page, loaded while the decision still awaits feedback
        driver.switch_to.new_window("tab")
        driver.get(f"{granted.base_url}/preview")
        wait_for(button_shown, "the button on the second page")
        second_tab = driver.current_window_handle

        driver.switch_to.window(first_tab)
        driver.find_element(By.CSS_SELECTOR, f"{row_css} button.wrong").click()
        wait_for(lambda: "type the API token" in row_text(), "that the token is needed")
        assert button_shown()  # nothing was sent: the cookie alone changes nothing
        driver.find_element(By.ID, "operator-token").send_keys(TOKEN)
        driver.find_element(By.CSS_SELECTOR, f"{row_css} button.wrong").click()
        wait_for(lambda: "quarantined" in row_text(), "the quarantined template")
        assert granted.template_id in row_text()
        assert not button_shown()

        quarantined = http.get(f"/v1/identities/{granted.identity_id}/quarantined", headers=AUTH)
        assert quarantined.status_code == 200, quarantined.text
        listed = [each["template_id"] for each in quarantined.json()["templates"]]
        assert listed == [granted.template_id]
        identity = http.get(f"/v1/identities/{granted.identity_id}", headers=AUTH).json()
        assert identity["negatives"] == 1

        driver.switch_to.window(second_tab)
        driver.find_element(By.ID, "operator-token").send_keys("not-the-token-0123456789")
        driver.find_element(By.CSS_SELECTOR, f"{row_css} button.wrong").click()
        wait_for(lambda: "wrong API token" in row_text(), "the refused token's message")
        token_field = driver.find_element(By.ID, "operator-token")
        token_field.clear()
        token_field.send_keys(TOKEN)
        driver.find_element(By.CSS_SELECTOR, f"{row_css} button.wrong").click()
        wait_for(lambda: "already had its feedback" in row_text(), "the refusal's message")
        assert not button_shown()

        driver.switch_to.window(first_tab)
        driver.refresh()
        wait_for(lambda: "corrected: wrong person" in row_text(), "the correction on reload")
        assert not button_shown()
        # the second click changed nothing: still one quarantined template, one negative
        again = http.get(f"/v1/identities/{granted.identity_id}", headers=AUTH).json()
        assert again["negatives"] == 1
        assert json.dumps(again["templates"]) == json.dumps(identity["templates"])
