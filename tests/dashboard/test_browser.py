"""End to end in a real browser: `streamlit run` on 127.0.0.1, Debian's chromium driven by
Playwright. Change the load, wait for the chart to redraw, check the shown p99 moved; visit every
page. Screenshots go to the test's tmp_path (and, for review, to $DASHBOARD_SHOTS_DIR, by default
/tmp/dashboard-shots). Never downloads a browser: it uses /usr/bin/chromium or skips."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dashboard.conftest import APP, MEASURED_NAME, measured_profile

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SERVER_START_S = 60
PAGE_S = 60  # generous: CI machines are slow and shared
SHOTS_DIR = Path(os.environ.get("DASHBOARD_SHOTS_DIR", "/tmp/dashboard-shots"))
VIEWPORT = {"width": 1440, "height": 2400}  # tall: Streamlit scrolls inside the page, not the window

pytest.importorskip("streamlit")
sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server and anything it started (its own process group)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """One server for the module, with the measured test profile on its profile path."""
    tmp_path = tmp_path_factory.mktemp("server")
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / f"{MEASURED_NAME}.json").write_text(json.dumps(measured_profile()))
    port = _free_port()
    log = (tmp_path / "streamlit.log").open("w")
    env = {**os.environ, "INFERCAST_PROFILES": str(profiles), "INFERCAST_UPLOAD_DIR": str(tmp_path / "uploads"),
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=APP.parent.parent, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("streamlit did not start:\n" + (tmp_path / "streamlit.log").read_text()[-3000:])
            time.sleep(0.25)
        yield url
    finally:
        _stop(proc)
        log.close()


@pytest.fixture
def page(server) -> Iterator:
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport=VIEWPORT)
            tab.set_default_timeout(PAGE_S * 1000)
            tab.goto(server)
            yield tab
        finally:
            browser.close()


def _settled(page) -> None:
    """Wait until the script run is over: no running indicator, no stale (greyed) elements."""
    page.wait_for_function(
        """() => !document.querySelector('[data-testid="stStatusWidget"]')
               && !document.querySelector('[data-stale="true"]')""")


def _metric(page, label: str) -> str:
    return page.evaluate(
        """(label) => {
             for (const m of document.querySelectorAll('[data-testid="stMetric"]')) {
               const l = m.querySelector('[data-testid="stMetricLabel"]');
               if (l && l.innerText.trim() === label)
                 return m.querySelector('[data-testid="stMetricValue"]').innerText.trim();
             }
             return null; }""", label)


CDF_SIGNATURE_JS = """() => {
    const plot = document.querySelector('.js-plotly-plot');
    if (!plot || !plot.data || !plot.data.length) return null;
    return JSON.stringify(plot.data.map(t => [t.name, (t.x || []).length, (t.x || []).slice(-3)]));
}"""


def _shot(page, tmp_path: Path, name: str) -> Path:
    page.wait_for_load_state("networkidle")  # lazily loaded widgets (code blocks, uploaders) drawn
    page.wait_for_timeout(300)
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    try:
        SHOTS_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SHOTS_DIR / path.name)
    except OSError:
        pass  # the review copy is a convenience
    return path


def _open_page(page, title: str) -> None:
    page.get_by_role("link", name=title).first.click()
    page.get_by_role("heading", name=title).first.wait_for()
    _settled(page)


def test_changing_the_load_redraws_the_chart_and_moves_p99(page, tmp_path):
    page.locator('[data-testid="stMetric"]').first.wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    _settled(page)
    p99_before = _metric(page, "TTFT p99")
    chart_before = page.evaluate(CDF_SIGNATURE_JS)
    assert p99_before and p99_before.endswith("ms") and chart_before
    _shot(page, tmp_path, "what-if-before")

    load = page.get_by_role("spinbutton", name="load (requests/s)")
    load.fill("12")
    load.press("Enter")
    page.wait_for_function(f"() => ({CDF_SIGNATURE_JS})() !== {chart_before!r}")  # the chart redrew
    _settled(page)
    p99_after = _metric(page, "TTFT p99")
    assert p99_after != p99_before, (p99_before, p99_after)
    assert page.evaluate(CDF_SIGNATURE_JS) != chart_before
    assert _shot(page, tmp_path, "what-if").stat().st_size > 10_000


def test_every_page_renders_in_the_browser(page, server, tmp_path):
    page.locator('[data-testid="stMetric"]').first.wait_for()
    _settled(page)
    page.get_by_label("hardware profiles", exact=True).click()  # a second profile: the side-by-side view
    page.get_by_role("option", name="a100-80gb", exact=True).click()
    page.keyboard.press("Escape")
    page.get_by_role("heading", name="Side by side").wait_for()
    _settled(page)
    _shot(page, tmp_path, "what-if-side-by-side")

    _open_page(page, "Capacity plan")
    page.get_by_text("Recommendation:").wait_for()
    page.get_by_role("heading", name="Latency vs load (one replica)").wait_for()
    _settled(page)
    _shot(page, tmp_path, "capacity-plan")
    with page.expect_download() as download:  # the report is written when the button is clicked
        page.get_by_role("button", name="capacity report (HTML)").click()
    report = Path(download.value.path()).read_text()
    assert "<html" in report.lower() and "<script src" not in report

    _open_page(page, "Profiles")
    page.get_by_text("Provenance", exact=True).wait_for()
    page.get_by_text("cost model (compute").wait_for()
    _settled(page)
    _shot(page, tmp_path, "profiles")
    page.get_by_label("profile", exact=True).click()
    page.get_by_role("option", name=MEASURED_NAME, exact=True).click()
    _settled(page)
    page.get_by_role("tab", name="Measured vs fitted").click()
    page.get_by_text("measured points", exact=True).first.wait_for()
    _settled(page)
    _shot(page, tmp_path, "profiles-measured")
    page.get_by_role("tab", name="Compare predictions").click()
    page.get_by_text("Predicted by each profile's cost model").wait_for()
    _settled(page)
    _shot(page, tmp_path, "profiles-compare")

    _open_page(page, "Validation")
    page.get_by_role("heading", name="llama-small-150m on test-measured, Poisson 2 req/s").wait_for()
    page.locator('[data-testid="stDataFrame"]').first.wait_for()
    _settled(page)
    _shot(page, tmp_path, "validation")
    assert not page.locator('[data-testid="stException"]').count()

    page.goto(f"{server}/profiles")  # a page's own address opens it inside the router's navigation
    page.get_by_role("heading", name="Profiles").first.wait_for()
    links = page.locator('[data-testid="stSidebarNav"] a').all_inner_texts()
    titles = [text.strip().splitlines()[-1].strip() for text in links]  # each link: icon name, then title
    assert titles == ["What-if", "Capacity plan", "Profiles", "Validation"], links
