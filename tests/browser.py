"""A real browser for the page tests: Debian's chromium under Selenium, through Debian's
chromium-driver (both binaries are given, so Selenium Manager never downloads anything)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def playable(d, element_id: str, timeout: float = 30.0) -> float:
    """Loads an <audio> element of the page and returns its duration in seconds (asserting
    that the browser decoded it without error)."""
    from selenium.webdriver.support.ui import WebDriverWait
    d.execute_script(f"const a = document.getElementById('{element_id}'); a.preload = 'auto'; a.load();")
    ready = f"const a = document.getElementById('{element_id}'); return a.error !== null || a.readyState >= 2;"
    WebDriverWait(d, timeout).until(lambda d: d.execute_script(ready))
    assert d.execute_script(f"return document.getElementById('{element_id}').error") is None
    return float(d.execute_script(f"return document.getElementById('{element_id}').duration"))


class browser:
    """Headless chromium under Selenium, through Debian's chromium-driver (Selenium Manager
    never downloads anything here: both binaries are given)."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path

    def __enter__(self):
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        driver = shutil.which("chromedriver")
        if chromium is None or driver is None:
            if os.environ.get("CI") == "true":
                pytest.fail("chromium and chromium-driver are missing under CI (.ci/run installs them)")
            pytest.skip("Debian's chromium or chromium-driver is not installed here (.ci/run installs them)")
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={self.tmp / 'profile'}",
                  "--window-size=1300,1500"):
            opts.add_argument(a)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
        return self.driver

    def __exit__(self, *exc):
        self.driver.quit()
