"""The baseline: one fresh process runs Playwright and Chromium on one page, as a plain script would.

``python bench/browser_plain.py URL FORMAT default|disable-dev-shm-usage`` prints one JSON line:
wall time, the tree's peak summed RSS and peak summed private pages (anonymous + shared memory).
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def _private_kb(pid: int) -> int:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssShmem"):
            fields[key] = int(value.split()[0])
    return sum(fields.values())


def main() -> None:
    url, fmt, shm = sys.argv[1:4]
    args = [*ARGS, "--disable-dev-shm-usage"] if shm != "default" else ARGS
    peak = {"rss": 0, "private": 0}
    stop = threading.Event()

    def sample() -> None:
        me = psutil.Process()
        while not stop.wait(0.02):
            rss = private = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    rss += proc.memory_info().rss
                    private += _private_kb(proc.pid) * 1024
                except (psutil.Error, OSError):
                    continue
            peak["rss"], peak["private"] = max(peak["rss"], rss), max(peak["private"], private)

    from playwright.sync_api import sync_playwright

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    out = Path(tempfile.mkdtemp(prefix="bench-plain-"))
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(out / "profile"), executable_path="/usr/bin/chromium", args=args
        )
        page = context.pages[0]
        page.goto(url, wait_until="load")
        if fmt == "pdf":
            page.pdf(path=str(out / "page.pdf"))
        elif fmt == "png":
            page.screenshot(path=str(out / "page.png"))
        else:
            (out / "page.txt").write_text(page.inner_text("body"))
        context.close()
    wall_s = time.monotonic() - started
    stop.set()
    sampler.join()
    mb = 1024 * 1024
    print(json.dumps({"wall_s": round(wall_s, 2), "peak_rss_sum_mb": round(peak["rss"] / mb, 1),
                      "peak_private_mb": round(peak["private"] / mb, 1)}))  # fmt: skip


if __name__ == "__main__":
    main()
