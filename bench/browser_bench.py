"""Scenario 8, browser: one page rendered by the ``browser.render`` kind against a plain Playwright script
doing the same in one fresh process, each in a fresh 512 MB container where one can be made.

memvisor: the task's run time and its tree peak (``peak_rss_mb``: the worker's RSS plus its
descendants' private pages), and the container's peak usage. Plain: the script's wall time, its tree's
summed RSS and summed private pages (sampled every 20 ms), and the container's peak, with Chromium's
default flags and with ``--disable-dev-shm-usage`` (shared memory in /tmp rather than /dev/shm).
"""

from __future__ import annotations

import functools
import http.server
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.plan import Context, Plan
from bench.service import container, kinds, run_child, run_task, server
from bench.stats import ratio, spread
from harness.server import Server

PAGE = """<!doctype html><title>bench</title><div id=x></div><script>
for (let i = 0; i < 2000; i++) { const p = document.createElement("p"); p.textContent = "para " + i;
  document.getElementById("x").appendChild(p); }</script>"""
FORMATS = ("text", "pdf", "png")
RUNS = 3  # of each format, memvisor and plain alike
CHILD = Path(__file__).with_name("browser_plain.py")


def run(plan: Plan, ctx: Context) -> dict[str, Any]:
    if not Path("/usr/bin/chromium").exists():
        return {"skipped": "/usr/bin/chromium is missing (apt-get install chromium)"}
    with _Site() as url:
        ours: dict[str, Any] = {}
        env = {"BROWSER_ALLOWED_HOSTS": "127.0.0.1"}
        with container() as box, server(ctx.work_dir / "browser", box, env) as srv:
            if "browser.render" not in kinds(srv):
                return {"skipped": "the service does not offer browser.render (GET /v1/kinds)"}
            box.reset_peak()
            for fmt in FORMATS:
                ours[fmt] = [_task(srv, url, fmt) for _ in range(RUNS)]
            ours["container"] = box.figures()
        plain: dict[str, Any] = {}
        for shm in ("default", "disable-dev-shm-usage"):
            for fmt in FORMATS:
                plain[f"{fmt}/{shm}"] = [_plain(ctx, url, fmt, shm) for _ in range(RUNS)]
    return {"memvisor": ours, "plain": plain, "summary": _summary(ours, plain)}


def _task(srv: Server, url: str, fmt: str) -> dict[str, Any]:
    started = time.monotonic()
    done = run_task(srv, "browser.render", {"url": url, "format": fmt})
    return {
        "state": done["state"],
        "latency_s": round(time.monotonic() - started, 2),
        "run_s": done["run_s"],
        "peak_mb": done["peak_rss_mb"],
    }


def _plain(ctx: Context, url: str, fmt: str, shm: str) -> dict[str, Any]:
    with container() as box:
        box.reset_peak()
        figures = run_child([sys.executable, str(CHILD), url, fmt, shm], box, 300, ctx.work_dir)
        return {**figures, **box.figures()}


def _summary(ours: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    """One row per format: memvisor's task against the plain script with Chromium's default flags,
    and the plain script's container peak without /dev/shm."""
    rows = []
    for fmt in FORMATS:
        mine, theirs = ours[fmt], plain[f"{fmt}/default"]
        row: dict[str, Any] = {
            "format": fmt,
            "memvisor_run_s": spread(r["run_s"] for r in mine),
            "memvisor_peak_mb": spread(r["peak_mb"] for r in mine),
            "plain_s": spread(r["wall_s"] for r in theirs),
            "plain_rss_sum_mb": spread(r["peak_rss_sum_mb"] for r in theirs),
            "plain_private_mb": spread(r["peak_private_mb"] for r in theirs),
            "plain_container_mb": spread(r["container_max_usage_mb"] for r in theirs),
            "plain_nodevshm_container_mb": spread(
                r["container_max_usage_mb"] for r in plain[f"{fmt}/disable-dev-shm-usage"]
            ),
        }
        row["private_ratio"] = ratio(row["plain_private_mb"]["median"], row["memvisor_peak_mb"]["median"])
        rows.append(row)
    return {"rows": rows, "container": ours["container"]["container_max_usage_mb"]}


class _Site:
    def __enter__(self) -> str:
        root = Path(tempfile.mkdtemp(prefix="bench-site-"))
        (root / "index.html").write_text(PAGE)
        handler = functools.partial(_Quiet, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/index.html"

    def __exit__(self, *_: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_: object) -> None:
        pass
