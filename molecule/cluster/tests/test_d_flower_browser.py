"""Flower through HAProxy in a real browser (Debian's headless Chromium driven by
Playwright, never a downloaded browser): log in, see every pool Online, keep a
screenshot in .cache/screenshots/flower-workers.png."""

import pathlib
import re
import shutil
import tempfile

import pytest
from cluster_helpers import cache_dir

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser_context(secret):
    try:
        from playwright import sync_api as playwright
    except ImportError:
        pytest.fail("playwright is missing from the controller's .venv (requirements.txt)")
    if not pathlib.Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: harness/prepare installs Debian's chromium package")
    profile = tempfile.mkdtemp(prefix="cluster-chromium-")
    with playwright.sync_playwright() as pw:
        # a fresh profile per run: launch_persistent_context passes it as --user-data-dir
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=ARGS,
            http_credentials={"username": "admin", "password": secret("flower_admin_password")},
            viewport={"width": 1400, "height": 900})
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


def _flat(text: str | None) -> str:
    """Text without whitespace: the narrow worker column may break names across lines."""
    return re.sub(r"\s+", "", text or "")


def test_flower_shows_every_worker_online(browser_context, lb_address, workers):
    page = browser_context.new_page()
    expected = [f"{pool}@{host}" for host in workers for pool in ("short", "long")]
    response = page.goto(f"http://{lb_address}/flower/", wait_until="domcontentloaded", timeout=60_000)
    assert response is not None and response.status == 200
    # Flower fills its table from the workers' heartbeats: poll, reloading, within a bound
    for _attempt in range(20):
        text = _flat(page.text_content("body"))
        if all(name in text for name in expected) and "Online" in text:
            break
        page.wait_for_timeout(3000)
        page.reload(wait_until="domcontentloaded", timeout=60_000)
    shots = cache_dir().parent / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "flower-workers.png"), full_page=True)
    text = _flat(page.text_content("body"))
    for name in expected:
        assert name in text, f"{name} not on Flower's page"
    rows = page.locator("table tbody tr")
    online = {}
    for i in range(rows.count()):
        row = _flat(rows.nth(i).text_content())
        for name in expected:
            if name in row:
                online[name] = "Online" in row
    assert online == {name: True for name in expected}, online
