"""The ``browser.render`` task kind: load one page in Chromium and return its text, HTML, PDF or PNG.

Imported by the API process to validate payloads, so this module imports nothing heavy: Playwright is
imported inside the task function, in the worker. Chromium and Playwright's driver are children of
the worker, so one ceiling covers the whole tree, and every connection the page makes passes the
SSRF guard (workers/browser/proxy.py).
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator

from workers.browser import settings
from workers.registry import TaskContext, task_kind

# Measured (bench/browser_bench.py): the tree of a worker rendering a scripted page peaks at about
# 230 MB (worker 35 MB RSS; Playwright's Node.js driver ~75 MB and Chromium's 4 processes ~115 MB of
# private memory). The estimate leaves room for heavier pages and is then learned; the ceiling stops
# a page that allocates without bound well inside a 512 MB container.
ESTIMATE_MB = 280
CEILING_MB = 400
TIMEOUT_S = 120
MAX_PAGE_TIMEOUT_S = 100


class Viewport(BaseModel):
    width: int = Field(default=1280, ge=100, le=3840)
    height: int = Field(default=800, ge=100, le=2160)


class BrowserInput(BaseModel):
    """``url`` is http or https; ``timeout_s`` bounds the navigation and each step after it."""

    url: str = Field(min_length=1, max_length=4096)
    format: Literal["text", "html", "pdf", "png"] = "text"
    wait_until: Literal["load", "domcontentloaded", "networkidle"] = "load"
    viewport: Viewport = Field(default_factory=Viewport)
    timeout_s: float = Field(default=30.0, gt=0, le=MAX_PAGE_TIMEOUT_S)

    @field_validator("url")
    @classmethod
    def _web_url(cls, value: str) -> str:
        try:
            parts = urlsplit(value.strip())
            parts.port  # noqa: B018  (raises ValueError on a bad port)
        except ValueError as exc:
            raise ValueError(f"not a URL: {exc}") from None
        if parts.scheme not in ("http", "https"):
            raise ValueError("url must be http:// or https:// (no file:, data:, chrome:, javascript: ...)")
        if not parts.hostname:
            raise ValueError("url has no host")
        return value.strip()


@task_kind(
    "browser.render",
    input_model=BrowserInput,
    estimate_mb=ESTIMATE_MB,
    ceiling_mb=CEILING_MB,
    timeout_s=TIMEOUT_S,
    retriable=True,
    switch="DISABLE_BROWSER",
    check=settings.check,
    network=True,  # the page's own requests, each checked by the worker's guarding proxy
    # Chromium and Playwright's Node.js driver reserve gigabytes of writable address space and do not
    # start under RLIMIT_DATA below 8 GB (measured): the tree is bounded by the watchdog and admission.
    data_limit=False,
)
def render_page(payload: BrowserInput, ctx: TaskContext) -> dict[str, Any]:
    """Load a page in Chromium: its title, final URL, status, and its text, HTML, PDF or PNG."""
    from workers.browser.render import render

    return render(payload, ctx)
