"""Scenario browser: one page rendered by the ``browser.render`` kind against a plain Playwright script
doing the same in one fresh process, each in a fresh 512 MB container where one can be made.

memvisor: the task's run time and its tree peak (``peak_rss_mb``: the worker's RSS plus its
descendants' private pages), and the container's peak usage. Plain: the script's wall time, its tree's
summed RSS and summed private pages (sampled every 20 ms), and the container's peak, with Chromium's
default flags and with ``--disable-dev-shm-usage`` (shared memory in /tmp rather than /dev/shm).
"""

from __future__ import annotations

import functools
import http.server
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.plan import Context, Plan
from bench.service import container, container_figures, kinds, reset_peak, run_child, server
from bench.stats import spread

PAGE = """<!doctype html><title>bench</title><div id=x></div><script>
for (let i = 0; i < 2000; i++) { const p = document.createElement("p"); p.textContent = "para " + i;
  document.getElementById("x").appendChild(p); }</script>"""
FORMATS = ("text", "pdf", "png")
CHILD = Path(__file__).with_name("browser_plain.py")


def run(plan: Plan, ctx: Context, runs: int = 3) -> dict[str, Any]:
    if not Path("/usr/bin/chromium").exists():
        return {"skipped": "/usr/bin/chromium is missing (apt-get install chromium)"}
    with _Site() as url:
        ours: dict[str, Any] = {}
        with container() as group, server(ctx.work_dir / "browser", group, _env()) as srv:
            if "browser.render" not in kinds(srv):
                return {"skipped": "the service does not offer browser.render (GET /v1/kinds)"}
            before = reset_peak(group)
            for fmt in FORMATS:
                ours[fmt] = [_task(srv, url, fmt) for _ in range(runs)]
            ours["container"] = container_figures(group, before)
        plain: dict[str, Any] = {}
        for shm in ("default", "disable-dev-shm-usage"):
            for fmt in FORMATS:
                plain[f"{fmt}/{shm}"] = [_plain(ctx, url, fmt, shm) for _ in range(runs)]
    return {"memvisor": ours, "plain": plain, "summary": _summary(ours, plain)}


def _env() -> dict[str, str]:
    return {"BROWSER_ALLOWED_HOSTS": "127.0.0.1"}


def _task(srv: Any, url: str, fmt: str) -> dict[str, Any]:
    started = time.monotonic()
    task = srv.submit("browser.render", {"url": url, "format": fmt})
    done = srv.wait(task["id"], timeout_s=300)
    return {
        "state": done["state"],
        "latency_s": round(time.monotonic() - started, 2),
        "run_s": done["run_s"],
        "peak_mb": done["peak_rss_mb"],
    }


def _plain(ctx: Context, url: str, fmt: str, shm: str) -> dict[str, Any]:
    with container() as group:
        before = reset_peak(group)
        out = run_child([sys.executable, str(CHILD), url, fmt, shm], group, 300, ctx.work_dir)
        figures = json.loads(out.strip().splitlines()[-1])
        return {**figures, **container_figures(group, before)}


def _summary(ours: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for fmt in FORMATS:
        mine, theirs = ours[fmt], plain[f"{fmt}/default"]
        summary[fmt] = {
            "memvisor_run_s": spread([r["run_s"] for r in mine]),
            "memvisor_peak_mb": spread([r["peak_mb"] for r in mine]),
            "plain_s": spread([r["wall_s"] for r in theirs]),
            "plain_rss_sum_mb": spread([r["peak_rss_sum_mb"] for r in theirs]),
            "plain_private_mb": spread([r["peak_private_mb"] for r in theirs]),
            "plain_container_mb": spread([r["container_max_usage_mb"] or 0 for r in theirs]),
            "plain_nodevshm_container_mb": spread(
                [r["container_max_usage_mb"] or 0 for r in plain[f"{fmt}/disable-dev-shm-usage"]]
            ),
        }
    return summary


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
