"""The admin dashboard in a real headless Chromium, against the real service.

It loads offline (nothing but the server is asked for anything), draws its charts from live data,
lists a running worker, kills it with its button, and shows the kill with its reason.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.server import ADMIN_TOKEN, Server, until

try:
    from playwright.sync_api import BrowserContext, ConsoleMessage, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the dev extras install it
    pytest.skip("playwright is not installed (pip install -e '.[dev]')", allow_module_level=True)

CHROMIUM = Path("/usr/bin/chromium")
# Debian's Chromium, not a Playwright download; everything that would reach the internet is off.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT_COPY = Path("/tmp/dashboard.png")
TOKEN_KEY = "memvisor.adminToken"
WAIT_MS = 20_000


@dataclass
class Watched:
    """A page with what it logged and asked for, recorded from before its first navigation."""

    page: Page
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def outside(self, base_url: str) -> list[str]:
        return [url for url in self.requests if not url.startswith(base_url + "/")]


# A marker, not a check in the fixture: the test is skipped before its server starts.
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install -y chromium)"
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserContext]:
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile",  # fresh per test: no cached assets, no saved token
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def watched(browser: BrowserContext) -> Watched:
    page = browser.pages[0] if browser.pages else browser.new_page()
    seen = Watched(page)
    page.on("console", lambda msg: _record_error(seen.console_errors, msg))
    page.on("pageerror", lambda exc: seen.page_errors.append(str(exc)))
    # On the context, so requests of workers or other pages would be recorded too.
    browser.on("request", lambda request: seen.requests.append(request.url))
    return seen


def _record_error(errors: list[str], message: ConsoleMessage) -> None:
    if message.type == "error":
        errors.append(message.text)


def open_dashboard(watched: Watched, server: Server, token: str) -> Page:
    page = watched.page
    page.goto(f"{server.url}/admin/dashboard")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#token", token)
    page.click("#connect")
    return page


def data_int(page: Page, selector: str, name: str) -> int:
    return int(page.eval_on_selector(selector, f"el => el.dataset.{name}") or 0)


def wait_points_above(page: Page, count: int) -> int:
    page.wait_for_function(
        "n => Number(document.querySelector('#memory-chart').dataset.points) > n", arg=count, timeout=WAIT_MS
    )
    return data_int(page, "#memory-chart", "points")


def worker_rss_mb(server: Server, task_id: str) -> float:
    for worker in server.admin.get("/admin/workers").json():
        if worker["task_id"] == task_id:
            return float(worker["rss_mb"])
    return 0.0


def screenshot(page: Page, tmp_path: Path) -> None:
    path = tmp_path / "dashboard.png"
    page.screenshot(path=path, full_page=True)
    shutil.copyfile(path, SCREENSHOT_COPY)


@needs_chromium
def test_dashboard_draws_lists_and_kills_a_worker(server: Server, watched: Watched, tmp_path: Path) -> None:
    page = open_dashboard(watched, server, ADMIN_TOKEN)
    expect(page.locator("#dashboard")).to_be_visible()
    expect(page.locator("#status")).to_have_text("live", timeout=WAIT_MS)

    # The chart keeps drawing: its point count grows with each poll.
    first = wait_points_above(page, 1)
    wait_points_above(page, first)

    victim = server.submit("diag.alloc", {"mb": 50, "hold_s": 60})["id"]
    bystander = server.submit("diag.alloc", {"mb": 20, "hold_s": 60})["id"]
    row = page.locator(f"#workers-table tbody tr[data-task-id='{victim}']")
    expect(row).to_be_visible(timeout=WAIT_MS)
    pid = int(row.get_attribute("data-pid") or 0)
    assert pid in {w["pid"] for w in server.admin.get("/admin/workers").json()}
    expect(row).to_contain_text("diag.alloc")

    until(lambda: worker_rss_mb(server, victim) >= 50, 30, "the worker to hold its 50 MB")
    page.wait_for_function(
        "pid => document.querySelector('#workers-chart').dataset.pids.split(' ').includes(String(pid))",
        arg=pid,
        timeout=WAIT_MS,
    )
    assert data_int(page, "#workers-chart", "series") >= 1
    # A few more polls, so the worker's line (and the screenshot) shows it holding its memory.
    wait_points_above(page, data_int(page, "#memory-chart", "points") + 2)
    expect(page.locator(f"#workers-legend li[data-pid='{pid}']")).to_contain_text("diag.alloc")

    page.click(f"button.kill[data-pid='{pid}']")
    task = server.wait(victim, timeout_s=30)
    assert (task["state"], task["reason"]) == ("killed", "admin_kill")

    kill_row = page.locator(f"#kills-table tbody tr[data-task-id='{victim}']")
    expect(kill_row).to_contain_text("admin_kill", timeout=WAIT_MS)
    expect(kill_row).to_contain_text("killed")
    expect(row).to_have_count(0, timeout=WAIT_MS)
    expect(page.locator(f"#workers-table tbody tr[data-task-id='{bystander}']")).to_be_visible()
    expect(page.locator("#kill-message")).to_contain_text(str(pid))
    screenshot(page, tmp_path)

    assert server.client.delete(f"/v1/tasks/{bystander}").status_code == 200
    assert server.wait(bystander, timeout_s=30)["state"] == "cancelled"
    assert watched.page_errors == []
    assert watched.console_errors == []
    assert watched.outside(server.url) == []
    assert any(url.endswith("/admin/workers") for url in watched.requests)


@needs_chromium
def test_wrong_token_is_refused_then_the_right_one_is_kept_for_the_tab(
    server: Server, watched: Watched
) -> None:
    page = open_dashboard(watched, server, "not-the-token")
    error = page.locator("#auth-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("rejected")
    expect(error).to_contain_text("401")
    expect(page.locator("#dashboard")).to_be_hidden()
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None

    page.fill("#token", ADMIN_TOKEN)
    page.click("#connect")
    expect(page.locator("#dashboard")).to_be_visible()
    expect(error).to_be_hidden()

    # A reload keeps the token (session storage) and goes straight to the data.
    page.reload()
    expect(page.locator("#dashboard")).to_be_visible()
    expect(page.locator("#login")).to_be_hidden()
    wait_points_above(page, 0)

    assert watched.page_errors == []
    # The only error the browser may log is the refused request itself.
    assert all("401" in text for text in watched.console_errors), watched.console_errors
    assert watched.outside(server.url) == []


def test_page_is_public_but_its_data_is_not(server: Server) -> None:
    page = server.client.get("/admin/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    for asset, media_type in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        response = server.client.get(f"/admin/dashboard/{asset}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(media_type)
    assert server.client.get("/admin/dashboard/dashboard.html").status_code == 404
    assert server.client.get("/admin/dashboard/..%2Fapp.py").status_code == 404
    assert server.client.get("/admin/memory").status_code == 401


def test_no_dashboard_without_an_admin_token(make_server: Callable[..., Server]) -> None:
    # Unset rather than empty: an empty token is refused as a setting, so the server would not start.
    server = make_server(wrap=["env", "-u", "ADMIN_TOKEN"]).start()
    assert server.client.get("/admin/dashboard").status_code == 404
    assert server.client.get("/admin/dashboard/dashboard.js").status_code == 404
