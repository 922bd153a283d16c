"""The live viewer in a real headless browser (Debian's Chromium, driven through ChromeDriver)."""

from __future__ import annotations

import io
import shutil
import threading
import time

import numpy as np
import pytest

from ocrnet_edge.cli import main

from .conftest import free_port, http_get

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="Chromium and ChromeDriver from Debian are not installed (.ci/run installs them)")


def test_page_loads_stream_shows_frames_and_figures_update(converted, roomy_board, tmp_path):
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    port = free_port()
    rc = {}
    t = threading.Thread(target=lambda: rc.setdefault("rc", main([
        "run", str(converted.int8), "--source", "synthetic://?seed=4&size=320x240&fps=15", "--board", str(roomy_board),
        "--serve", f"127.0.0.1:{port}", "--max-frames", "150", "--quiet"])))
    t.start()
    http_get(f"http://127.0.0.1:{port}/stats.json")  # wait until it serves
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        assert driver.title == "ocrnet-edge live"
        deadline = time.time() + 20
        while time.time() < deadline and not driver.execute_script(
                "return document.getElementById('stream').naturalWidth"):
            time.sleep(0.2)
        assert driver.execute_script("return document.getElementById('stream').naturalWidth") == 320
        shot = Image.open(io.BytesIO(driver.find_element("id", "stream").screenshot_as_png)).convert("RGB")
        assert np.asarray(shot).std() > 10  # a picture, not a blank box
        first = int(driver.find_element("id", "frames").text)
        time.sleep(1.5)
        second = int(driver.find_element("id", "frames").text)
        assert second > first > 0
        assert float(driver.find_element("id", "fps").text) > 0
        assert "/ 65536 MB" in driver.find_element("id", "memory").text
    finally:
        driver.quit()
        t.join(60)
    assert rc.get("rc") == 0
