"""The built leaderboard page in a real headless Chromium: loads cleanly, offline, sorts, and escapes."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
from conftest import run_emtbench

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian chromium + chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)",
)


@pytest.fixture(scope="module")
def served_site(tmp_path_factory):
    """A demo leaderboard built by the CLI and served from 127.0.0.1 by `leaderboard serve`'s server."""
    from emtbench.leaderboard.site import make_server
    from emtbench.testing.leaderboard import write_demo_manifest

    folder = tmp_path_factory.mktemp("browser-site")
    manifest = write_demo_manifest(folder)
    site = folder / "site"
    assert run_emtbench("leaderboard", "build", str(manifest), "--out", str(site), "--quiet") == 0
    server = make_server(site, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}/index.html", site
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1000",
    ):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def _requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def _column(driver, header_text: str) -> list[str]:
    headers = [th.text.strip() for th in driver.find_elements("css selector", "#board thead th")]
    index = headers.index(header_text) + 1
    return [td.text for td in driver.find_elements("css selector", f"#board tbody tr td:nth-child({index})")]


def _value(cell_text: str) -> float:
    """A cell reads "60.00[48.00, 74.00]" when it carries an interval."""
    return float(cell_text.split("[")[0])


@pytest.mark.slow
def test_page_loads_offline_sorts_and_escapes(served_site, browser, tmp_path):
    url, _site = served_site
    browser.get("about:blank")
    browser.get_log("performance")  # drop anything logged while the browser started
    browser.get(url)
    assert browser.title == "emtbench demo leaderboard"

    # No console output at all (errors, CSP violations, failed loads) and no request but the page itself.
    assert browser.get_log("browser") == []
    # (chrome:// entries are the browser's own start page, data: URLs are inline content.)
    requests = [u for u in _requested_urls(browser) if not u.startswith(("chrome:", "data:", "about:"))]
    assert requests == [url]

    # The hostile model name is text in a cell, no script ran.
    names = _column(browser, "Model")
    assert "<script>alert(1)</script>" in names
    assert browser.execute_script("return document.querySelectorAll('#board script').length") == 0

    # Sorting: a numeric column, then the other direction on a second click.
    before = _column(browser, "emt_fashion_mnist")
    header = next(
        th
        for th in browser.find_elements("css selector", "#board thead th")
        if th.text.strip() == "emt_fashion_mnist"
    )
    header.click()
    descending = _column(browser, "emt_fashion_mnist")
    assert [_value(v) for v in descending] == sorted((_value(v) for v in before), reverse=True)
    assert header.get_attribute("aria-sort") == "descending"
    header.click()
    ascending = _column(browser, "emt_fashion_mnist")
    assert [_value(v) for v in ascending] == sorted(_value(v) for v in before)
    assert _column(browser, "Model")[0] == "<script>alert(1)</script>"  # 40.0 is the lowest

    # Filtering by method hides the other rows.
    browser.find_element("id", "filter").send_keys("lora")
    visible = [row for row in browser.find_elements("css selector", "#board tbody tr") if row.is_displayed()]
    assert [row.find_element("css selector", "td").text for row in visible] == ["lora-digits"]
    assert browser.find_element("id", "count").text == "1 of 4 runs"
    browser.find_element("id", "filter").clear()
    browser.execute_script("document.getElementById('filter').dispatchEvent(new Event('input'))")

    # The three kinds of plots are on the page.
    assert len(browser.find_elements("css selector", "svg rect[fill='#c0392b']")) > 0  # forgetting bars
    assert len(browser.find_elements("css selector", "svg circle")) == 3  # H vs params: three runs
    assert "BWT −7.00" in browser.page_source or "BWT -7.00" in browser.page_source

    screenshot = tmp_path / "leaderboard.png"
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(screenshot))
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(screenshot, ARTIFACTS / "leaderboard.png")
    assert screenshot.stat().st_size > 10_000
    assert browser.get_log("browser") == []
