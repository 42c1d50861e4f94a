"""The web page in a real headless Chromium against a real uvicorn server on 127.0.0.1.

Needs Debian's `chromium` + `chromium-driver` (apt) and the `selenium` package; skips otherwise.
"""

from __future__ import annotations

import shutil
import threading
import time

import pytest
from serve_helpers import wait_until

from slimtext.serve import create_app

uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("selenium")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip(
        "needs a headless browser: apt-get install -y chromium chromium-driver",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

MAX_CHARS = 200


@pytest.fixture(scope="module")
def server(predictor):
    """A real uvicorn server in a thread, on a port the OS picks; always shut down."""
    app = create_app(predictor, max_text_chars=MAX_CHARS)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: srv.started or not thread.is_alive(), timeout=20, what="uvicorn start")
        assert srv.started, "uvicorn did not start"
        port = srv.servers[0].sockets[0].getsockname()[1]
        wait_until(lambda: app.state.serve_state["ready"], timeout=20, what="/readyz")
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="module")
def browser(monkeypatch_module):
    # Never let Selenium Manager try to download a driver: this runs offline.
    monkeypatch_module.setenv("SE_OFFLINE", "true")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--disable-extensions", "--no-first-run", "--window-size=1000,800"):  # fmt: skip
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    driver.set_script_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def wait(driver, cond, timeout: float = 10):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: cond(d))


def visible_text(driver, element_id: str) -> str:
    el = driver.find_element(By.ID, element_id)
    return el.text if el.is_displayed() else ""


def test_page_classifies_with_click_and_ctrl_enter_and_shows_errors(server, browser, predictor):
    t0 = time.monotonic()
    browser.get(server + "/")
    wait(browser, lambda d: "model model" in visible_text(d, "model-info"))
    box = browser.find_element(By.ID, "text")

    # click: the label and one bar per label, matching the model
    text = "good great fine"
    box.send_keys(text)
    browser.find_element(By.ID, "classify").click()
    wait(browser, lambda d: visible_text(d, "label"))
    expected = predictor.predict([text])[0]
    assert browser.find_element(By.ID, "label").text == expected
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars li")
    assert sorted(b.get_attribute("data-label") for b in bars) == sorted(predictor.labels)
    assert bars[0].get_attribute("data-label") == expected  # best first
    percents = [float(b.find_element(By.CLASS_NAME, "pct").text.rstrip("%")) for b in bars]
    assert sum(percents) == pytest.approx(100, abs=0.2)

    # Ctrl+Enter: a different text, a new answer
    text = "bad awful poor"
    box.clear()
    box.send_keys(text)
    box.send_keys(Keys.CONTROL, Keys.ENTER)
    expected = predictor.predict([text])[0]
    wait(browser, lambda d: d.find_element(By.ID, "label").text == expected)

    # an API error is shown as a message, and the old result is hidden
    box.clear()
    box.send_keys("x" * (MAX_CHARS + 1))
    box.send_keys(Keys.CONTROL, Keys.ENTER)
    wait(browser, lambda d: visible_text(d, "error"))
    message = browser.find_element(By.ID, "error").text
    assert f"longer than {MAX_CHARS} characters" in message and "413" in message
    assert not browser.find_element(By.ID, "result").is_displayed()

    # empty input is caught in the page itself
    box.clear()
    browser.find_element(By.ID, "classify").click()
    wait(browser, lambda d: "Type some text" in visible_text(d, "error"))
    assert time.monotonic() - t0 < 30
