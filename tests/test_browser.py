"""The report in a real browser (headless Chromium): charts render, nothing logs an error, no network request is
made, and hostile log text is shown as text and runs nothing.

Skipped only where Chromium is absent and CI is not set; in CI (`CI` set) a missing Chromium is a failure.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from specdiag.report import write_report
from specdiag.store import connect
from tests.test_report import HOSTILE_DEPLOYMENT, HOSTILE_OUTPUT, HOSTILE_PROMPT, fill_store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"),
        reason="headless chromium and chromedriver not installed (apt-get install chromium chromium-driver)",
    ),
]


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM and CHROMEDRIVER, "CI must have chromium and chromedriver (see .ci/run)"
    tmp = tmp_path_factory.mktemp("browser")
    con = connect(tmp / "store.duckdb")
    fill_store(con, hostile=True)
    out = tmp / "report.html"
    write_report(con, out)
    con.close()

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={tmp / 'profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        driver.get(out.as_uri())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = driver.execute_script(
                "return [...document.querySelectorAll('div.chart')].every(d => d.querySelector('svg, canvas'))"
            )
            if done:
                break
            time.sleep(0.2)
        yield driver
    finally:
        driver.quit()


def test_every_chart_renders(page) -> None:
    charts = page.execute_script("return document.querySelectorAll('div.chart').length")
    rendered = page.execute_script(
        "return [...document.querySelectorAll('div.chart')].filter(d => d.querySelector('svg, canvas')).length"
    )
    assert charts >= 4
    assert rendered == charts
    # Marks were drawn, not only an empty frame.
    assert page.execute_script("return document.querySelectorAll('div.chart svg path').length") > 10


def test_no_console_errors(page) -> None:
    errors = [e for e in page.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def test_no_network_request(page) -> None:
    resources = page.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources == []


def test_hostile_text_runs_nothing_and_shows_as_text(page) -> None:
    assert page.execute_script("return typeof window.__pwned") == "undefined"
    assert page.title == "specdiag report"
    # No element was injected by the payloads: the only <img> elements would be theirs.
    assert page.execute_script("return document.querySelectorAll('img').length") == 0
    body = page.execute_script("return document.body.textContent")
    assert HOSTILE_PROMPT in body  # the replayed token and the prompt, verbatim as text
    assert HOSTILE_OUTPUT in body
    assert HOSTILE_DEPLOYMENT.split("\u2028")[0] in body
    # The chart data survived the script-context escaping: the deployment name is in the rendered legend.
    legend = page.execute_script(
        "return [...document.querySelectorAll('div.chart svg text')].map(t => t.textContent).join('|')"
    )
    assert "chat</script><img" in legend
