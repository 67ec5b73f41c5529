"""One page in one Chromium, driven by Playwright, inside the worker's process tree.

Imported by the task function only, in the worker: Playwright never loads in the API process.
Chromium runs as few processes as it can (no zygote, one renderer, GPU and network service in the
browser process): measured on a scripted page, 4 processes and 116 MB of private memory instead of
10 and 224 MB. Its shared memory goes to /tmp rather than /dev/shm (``--disable-dev-shm-usage``):
both cost the same here (bench/browser_bench.py), and a container's /dev/shm is often 64 MB, where
Chromium crashes on large pages.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from workers.browser.guard import refusal
from workers.browser.proxy import BLOCKED_HEADER, GuardedProxy, resolve
from workers.browser.settings import BrowserSettings
from workers.errors import TaskInputError, WorkerError

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Response

    from workers.browser import BrowserInput
    from workers.registry import TaskContext

MAX_TEXT_CHARS = 100_000  # in the result; the whole text is in page.txt
LAUNCH_TIMEOUT_S = 60.0
OUTPUT_NAMES = {"text": "page.txt", "html": "page.html", "pdf": "page.pdf", "png": "page.png"}

BASE_ARGS = (
    "--headless",
    "--no-sandbox",  # the worker process is the boundary; Chromium's sandbox needs root or user namespaces
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--dns-prefetch-disable",
    "--no-zygote",
    "--renderer-process-limit=1",
    "--in-process-gpu",
    "--enable-features=NetworkServiceInProcess2",
    "--disable-features=AudioServiceOutOfProcess",
    # WebRTC sends UDP past any proxy: allow none that the proxy does not carry.
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
)


class BrowserUnavailableError(WorkerError):
    """Chromium is not installed where BROWSER_EXECUTABLE says."""


class PageLoadError(TaskInputError):
    """The page could not be loaded (blocked, unreachable, timed out): a final, clear error."""


def chromium_args(proxy_url: str) -> list[str]:
    """Every request through the guard, loopback included (Chromium bypasses proxies for it by default)."""
    return [*BASE_ARGS, f"--proxy-server={proxy_url}", "--proxy-bypass-list=<-loopback>"]


def render(payload: BrowserInput, ctx: TaskContext) -> dict[str, Any]:
    settings = BrowserSettings()
    if not settings.browser_executable.is_file():
        raise BrowserUnavailableError(
            f"{settings.browser_executable} is missing: install Debian's chromium or set BROWSER_EXECUTABLE"
        )
    allow = settings.allow_list()
    parts = urlsplit(payload.url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    try:
        why = refusal(host, resolve(host, port), allow)
    except OSError as exc:
        why = f"{host} does not resolve ({exc})"
    if why is not None:
        raise PageLoadError(f"{payload.url} is not allowed: {why}")
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    profile = _fresh_dir(ctx.spool_dir / "chromium-profile")
    with GuardedProxy(allow) as proxy:
        result = _drive(payload, ctx, settings.browser_executable, profile, proxy)
        result["blocked"] = list(proxy.refused)
    shutil.rmtree(profile, ignore_errors=True)
    return result


def _drive(
    payload: BrowserInput, ctx: TaskContext, executable: Path, profile: Path, proxy: GuardedProxy
) -> dict[str, Any]:
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as playwright:
        ctx.progress("launching")
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(executable),
            args=chromium_args(proxy.url),
            headless=True,
            viewport={"width": payload.viewport.width, "height": payload.viewport.height},
            timeout=LAUNCH_TIMEOUT_S * 1000,
            service_workers="block",
            accept_downloads=False,
        )
        try:
            context.set_default_timeout(payload.timeout_s * 1000)
            page = context.pages[0] if context.pages else context.new_page()
            ctx.progress("loading", url=payload.url)
            response = _navigate(page, payload, proxy)
            ctx.progress("loaded", status=response.status if response else None)
            return _capture(page, response, payload, ctx.output_dir)
        except Error as exc:
            raise PageLoadError(_first_line(exc)) from None
        finally:
            _close(context)


def _navigate(page: Page, payload: BrowserInput, proxy: GuardedProxy) -> Response | None:
    from playwright.sync_api import Error

    try:
        response = page.goto(payload.url, wait_until=payload.wait_until)
    except Error as exc:
        blocked = f"; blocked: {'; '.join(proxy.refused)}" if proxy.refused else ""
        raise PageLoadError(f"{_first_line(exc)}{blocked}") from None
    if response is not None and response.headers.get(BLOCKED_HEADER):
        raise PageLoadError(f"{page.url} is not allowed: {'; '.join(proxy.refused) or 'blocked'}")
    return response


def _capture(page: Page, response: Response | None, payload: BrowserInput, out: Path) -> dict[str, Any]:
    result: dict[str, Any] = {
        "title": page.title(),
        "final_url": page.url,
        "status": response.status if response is not None else None,
        "files": [],
    }
    target = out / OUTPUT_NAMES[payload.format]
    if payload.format == "text":
        text = str(page.evaluate("() => document.body ? document.body.innerText : ''"))
        target.write_text(text, encoding="utf-8")
        result["text"] = text[:MAX_TEXT_CHARS]
        result["text_truncated"] = len(text) > MAX_TEXT_CHARS
    elif payload.format == "html":
        target.write_text(page.content(), encoding="utf-8")
    elif payload.format == "pdf":
        page.pdf(path=str(target), print_background=True)
    else:
        page.screenshot(path=str(target), full_page=False)  # the viewport: a tall page cannot blow it up
    return result


def _close(context: BrowserContext) -> None:
    from playwright.sync_api import Error

    with contextlib.suppress(Error):  # the worker exits next and takes any Chromium process with it
        context.close()


def _fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, mode=0o700)
    return path


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__
