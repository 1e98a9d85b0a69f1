"""The web page of ``portraitseg serve`` in a real browser: headless Chromium driven by Selenium
(chromedriver), against a server started in a subprocess with the bundled model.

The photo is uploaded through the page's file input; the portrait the page shows must have the
photo's size and differ from the photo where the background is (the subject alpha, asked of the
same server, says where); the blur slider and a click on the photo (the focus) re-render it.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path(shutil.which("chromedriver") or "/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000")

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no Chromium at {CHROMIUM} (apt-get install "
                                "chromium chromium-driver; .ci/run installs them)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """``portraitseg serve`` on a free loopback port (bundled model); its base URL."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    proc = subprocess.Popen([sys.executable, "-m", "portraitseg.cli.main", "serve", "--port", str(port),
                             "--log-level", "warning"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/health", timeout=2) as response:
                    assert json.load(response)["ok"]
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    pytest.fail(f"the server did not start: {proc.stdout.read()}")
                time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not CHROMEDRIVER.is_file():
        pytest.fail(f"Chromium is installed but no chromedriver at {CHROMEDRIVER}: "
                    "apt-get install chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: object, condition: str, timeout: float = 90) -> None:
    """Wait until the JavaScript expression ``condition`` is true (fail with the page's status)."""
    deadline = time.monotonic() + timeout
    while not driver.execute_script(f"return Boolean({condition});"):
        if time.monotonic() > deadline:
            status = driver.execute_script("return document.getElementById('status').textContent;")
            pytest.fail(f"timed out waiting for {condition}; the page says: {status}")
        time.sleep(0.1)


def shown_portrait(driver: object) -> np.ndarray:
    """The pixels of the portrait the page shows (its blob fetched inside the page)."""
    data = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(document.getElementById('portrait').src).then((r) => r.arrayBuffer()).then((buffer) => {
          let text = ''; new Uint8Array(buffer).forEach((b) => { text += String.fromCharCode(b); });
          done(btoa(text));
        });""")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")).astype(np.float32)


def rerender(driver: object, action: str) -> None:
    """Run ``action`` (JavaScript) and wait for the new portrait."""
    driver.execute_script("document.getElementById('portrait').dataset.state = 'stale';" + action)
    wait_for(driver, "document.getElementById('portrait').dataset.state === 'done'")


def test_page_uploads_a_photo_and_shows_its_portrait(server: str, browser: object, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from skimage.data import astronaut

    photo = astronaut()
    path = tmp_path / "astronaut.png"
    Image.fromarray(photo).save(path)
    request = urllib.request.Request(f"{server}/api/portrait?alpha=1", data=path.read_bytes(), method="POST")
    with urllib.request.urlopen(request, timeout=120) as response:
        alpha = np.asarray(Image.open(io.BytesIO(response.read()))) / 255.0
    background, subject = alpha < 0.05, alpha > 0.95
    assert background.mean() > 0.2 and subject.mean() > 0.1

    browser.get(server + "/")
    wait_for(browser, "document.querySelectorAll('#keep input').length === 11")
    browser.find_element(By.ID, "file").send_keys(str(path))
    wait_for(browser, "document.getElementById('portrait').dataset.state === 'done'")
    size = browser.execute_script("const p = document.getElementById('portrait');"
                                  "return [p.naturalWidth, p.naturalHeight];")
    assert size == [photo.shape[1], photo.shape[0]]
    diff = np.abs(shown_portrait(browser) - photo).mean(axis=2)
    assert diff[background].mean() > max(8.0, 2.5 * diff[subject].mean()), "the background is not blurred"
    browser.save_screenshot(str(tmp_path / "page.png"))
    assert (tmp_path / "page.png").stat().st_size > 10_000

    # the slider: no blur gives the photo back
    rerender(browser, "const s = document.getElementById('strength'); s.value = 0;"
                      "s.dispatchEvent(new Event('input'));")
    assert np.abs(shown_portrait(browser) - photo).mean() < 3
    # a click on the astronaut's face sends a focus point; the page marks it
    face = browser.find_element(By.ID, "photo")
    browser.execute_script("document.getElementById('strength').value = 0.02;"
                           "document.getElementById('portrait').dataset.state = 'stale';")
    browser.execute_script("arguments[0].scrollIntoView();", face)
    from selenium.webdriver.common.action_chains import ActionChains

    width = face.size["width"]
    ActionChains(browser).move_to_element_with_offset(face, int((230 / 512 - 0.5) * width),
                                                      int((120 / 512 - 0.5) * width)).click().perform()
    wait_for(browser, "document.getElementById('portrait').dataset.state === 'done' && "
                      "!document.getElementById('marker').hidden")
    status = browser.find_element(By.ID, "status").text
    assert status.startswith("Rendered"), status
