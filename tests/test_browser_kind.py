"""The ``browser.render`` kind, for real: Debian's Chromium driven by Playwright in a worker, against
pages served on 127.0.0.1 (allowed by BROWSER_ALLOWED_HOSTS) and a second server on 127.0.0.2 (not
allowed: the kernel serves all of 127.0.0.0/8 on loopback) whose access log proves what never reached it.
"""

from __future__ import annotations

import http.server
import io
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.cgroup import Mode
from harness.server import Server, until
from tests.conftest import ServerFactory
from workers.browser import CEILING_MB

CHROMIUM = Path("/usr/bin/chromium")
pytest.importorskip("playwright", reason="playwright is not installed (pip install -e '.[browser]')")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"
)

SCRIPTED = """<!doctype html><html><head><title>Scripted page</title></head><body>
<h1>Static heading</h1><div id="made"></div>
<script>document.getElementById("made").textContent = "written by script " + (6 * 7);</script>
</body></html>"""
ALLOCATES = """<!doctype html><title>grows</title><script>
const kept = [];
for (;;) { kept.push(new Float64Array(1 << 20).fill(Math.random())); }  // 8 MB a turn, never yields
</script>"""
SLOW_MS = 4000


class Site:
    """Two servers: the allowed one on 127.0.0.1 and the private one on 127.0.0.2 with its log."""

    def __init__(self) -> None:
        self.private_log: list[str] = []
        site = self

        class Private(http.server.BaseHTTPRequestHandler):
            def setup(self) -> None:
                site.private_log.append(f"connection from {self.client_address[0]}")
                super().setup()

            def do_GET(self) -> None:
                site.private_log.append(self.path)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.private = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Private)
        private_url = f"http://127.0.0.2:{self.private.server_address[1]}"

        class Public(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", f"{private_url}/after-redirect")
                    self.end_headers()
                    return
                self._html(site.pages(private_url).get(self.path))

            def _html(self, body: str | None) -> None:
                if body is None:
                    self.send_error(404)
                    return
                if self.path == "/slow-image":
                    threading.Event().wait(SLOW_MS / 1000)  # a slow server, so the page stays loading
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: object) -> None:
                pass

        self.public = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Public)
        self.url = f"http://127.0.0.1:{self.public.server_address[1]}"
        self.private_url = private_url
        for server in (self.public, self.private):
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def pages(self, private_url: str) -> dict[str, str]:
        private_ws = private_url.replace("http://", "ws://")
        return {
            "/scripted": SCRIPTED,
            "/allocates": ALLOCATES,
            "/slow": '<title>slow</title><img src="/slow-image">',
            "/slow-image": "",
            "/subresources": f"""<title>subresources</title>
                <img src="{private_url}/direct-image">
                <img src="/redirect">
                <script>
                  fetch("{private_url}/direct-fetch").catch(() => {{}});
                  try {{ new WebSocket("{private_ws}/socket"); }} catch (e) {{}}
                  document.title = "subresources done";
                </script>""",
        }

    def close(self) -> None:
        for server in (self.public, self.private):
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    served = Site()
    yield served
    served.close()


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory) -> Server:
    # Outside a memory cgroup the container guard sums PSS, which counts the ~190 MB of Chromium's
    # program text it maps (page cache a cgroup charges once, and can reclaim) against a nominal 512 MB
    # limit; these tests are about behaviour, and the 512 MB claim is the cgroup test's, below.
    env = {"BROWSER_ALLOWED_HOSTS": "127.0.0.1", "MEMORY_LIMIT_MB": "1024"}
    return make_module_server(env=env).start()


def _render(server: Server, url: str, timeout_s: float = 120, **payload: Any) -> dict[str, Any]:
    task = server.submit("browser.render", {"url": url, **payload})
    return server.wait(task["id"], timeout_s=timeout_s)


def _file(server: Server, task: dict[str, Any], name: str) -> bytes:
    response = server.client.get(f"/v1/tasks/{task['id']}/files/{name}")
    assert response.status_code == 200, response.text
    listed = next(f for f in task["result"]["files"] if f["name"] == name)
    assert response.headers["content-type"].startswith(listed["media_type"])
    assert len(response.content) == listed["size_bytes"] > 0
    return response.content


def test_four_formats_of_a_scripted_page(server: Server, site: Site) -> None:
    ids = {
        fmt: server.submit("browser.render", {"url": f"{site.url}/scripted", "format": fmt})["id"]
        for fmt in ("text", "html", "pdf", "png")
    }
    done = {fmt: server.wait(task_id, timeout_s=240) for fmt, task_id in ids.items()}
    for fmt, task in done.items():
        assert task["state"] == "succeeded", (fmt, task)
        result = task["result"]
        assert result["title"] == "Scripted page"
        assert result["final_url"] == f"{site.url}/scripted"
        assert result["status"] == 200
        assert [f["name"] for f in result["files"]] == [f"page.{'txt' if fmt == 'text' else fmt}"]
    assert "written by script 42" in done["text"]["result"]["text"]
    assert "written by script 42" in _file(server, done["text"], "page.txt").decode()
    assert 'id="made">written by script 42</div>' in _file(server, done["html"], "page.html").decode()
    pdf = _file(server, done["pdf"], "page.pdf")
    assert pdf.startswith(b"%PDF-") and b"%%EOF" in pdf[-1024:]
    png = _file(server, done["png"], "page.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", io.BytesIO(png[16:24]).read()) == (1280, 800)  # IHDR: the viewport
    server.wait_idle()


def test_viewport_sets_the_screenshot_size(server: Server, site: Site) -> None:
    task = _render(server, f"{site.url}/scripted", format="png", viewport={"width": 640, "height": 360})
    assert task["state"] == "succeeded", task
    png = _file(server, task, "page.png")
    assert struct.unpack(">II", png[16:24]) == (640, 360)


@pytest.mark.parametrize("name", ["nothing.pdf", "%2E%2E", "..%2Fmemvisor.db", ".hidden", "page.txt%00"])
def test_unknown_or_unsafe_file_names_are_404(server: Server, site: Site, name: str) -> None:
    task = _render(server, f"{site.url}/scripted")
    assert task["state"] == "succeeded", task
    response = server.client.get(f"/v1/tasks/{task['id']}/files/{name}")
    assert response.status_code == 404, response.text
    assert server.client.get("/v1/tasks/no-such-task/files/page.txt").status_code == 404


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "data:text/html,<b>x</b>", "javascript:alert(1)", "chrome://version", "http://"],
)
def test_only_web_urls_are_accepted(server: Server, url: str) -> None:
    response = server.client.post("/v1/tasks", json={"kind": "browser.render", "payload": {"url": url}})
    assert response.status_code == 422, response.text


def test_a_private_address_is_refused_before_any_browser_starts(server: Server, site: Site) -> None:
    before = len(site.private_log)
    task = _render(server, f"{site.private_url}/direct")
    assert task["state"] == "failed" and task["error"]["type"] == "PageLoadError", task
    assert "127.0.0.2" in task["error"]["message"] and "not a public address" in task["error"]["message"]
    assert site.private_log[before:] == []


def test_a_redirect_to_a_private_address_is_blocked(server: Server, site: Site) -> None:
    before = len(site.private_log)
    task = _render(server, f"{site.url}/redirect")
    assert task["state"] == "failed" and task["error"]["type"] == "PageLoadError", task
    assert "127.0.0.2" in task["error"]["message"]
    assert site.private_log[before:] == []


def test_subresources_fetches_and_websockets_to_a_private_address_are_blocked(
    server: Server, site: Site
) -> None:
    before = len(site.private_log)
    task = _render(server, f"{site.url}/subresources", wait_until="networkidle")
    assert task["state"] == "succeeded", task
    assert task["result"]["title"] == "subresources done"
    blocked = task["result"]["blocked"]
    assert blocked and all(entry.startswith("127.0.0.2:") for entry in blocked)
    # The direct image, the fetch, the redirected image and the websocket: none of them got through.
    assert len(blocked) >= 3
    assert site.private_log[before:] == []


def test_a_page_that_allocates_without_bound_is_killed_with_its_whole_tree(
    server: Server, site: Site
) -> None:
    task = _render(server, f"{site.url}/allocates", wait_until="load", timeout_s=60)
    assert (task["state"], task["reason"]) == ("killed", "memory_ceiling"), task
    assert task["peak_rss_mb"] >= 0.9 * task["ceiling_mb"]
    assert task["ceiling_mb"] == CEILING_MB
    server.wait_idle()  # no worker, Playwright driver or Chromium process of it is left
    assert not server.stray_pids()


def _ancestors(pid: int) -> list[int]:
    chain = []
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            break
        pid = int(stat.rsplit(b")", 1)[1].split()[1])
        chain.append(pid)
    return chain


def _chromium_pids(server: Server) -> list[int]:
    found = []
    for pid in server.stray_pids():
        try:
            exe = Path(f"/proc/{pid}/exe").resolve()
        except OSError:
            continue
        if exe.name == "chromium":
            found.append(pid)
    return found


def test_chromium_runs_inside_the_worker_tree_and_its_limits(server: Server, site: Site) -> None:
    task = server.submit("browser.render", {"url": f"{site.url}/slow"})
    running = until(
        lambda: (t := server.task(task["id"]))["state"] == "running" and t["worker_pid"] and t,
        60,
        "the render to start",
    )
    worker = running["worker_pid"]
    chromium = until(lambda: _chromium_pids(server), 60, "Chromium to start")
    for pid in chromium:
        assert worker in _ancestors(pid), f"chromium {pid} is not below worker {worker}"
    memory = server.memory()
    if memory["worker_cgroups"]:
        cgroup_of_worker = Path(f"/proc/{worker}/cgroup").read_text()
        for pid in chromium:
            assert Path(f"/proc/{pid}/cgroup").read_text() == cgroup_of_worker
    done = server.wait(task["id"], timeout_s=120)
    assert done["state"] == "succeeded", done
    assert done["peak_rss_mb"] < done["ceiling_mb"]
    server.wait_idle()


@pytest.mark.cgroup
def test_four_renders_at_once_in_512_mb(service_mode: Mode, make_server: ServerFactory, site: Site) -> None:
    """In both modes: Render's (uid 10001, no writable cgroup, 0.5 CPU) and the lab's (root, cgroups)."""
    render_cgroup = service_mode.group
    env = {**service_mode.env, "BROWSER_ALLOWED_HOSTS": "127.0.0.1"}
    server = make_server(env=env, data_dir=service_mode.data_dir, wrap=service_mode.wrap())
    server.start(ready_timeout_s=60)
    assert server.memory()["limit_mb"] == 512
    formats = ["text", "html", "pdf", "png"]
    ids = [
        server.submit("browser.render", {"url": f"{site.url}/scripted", "format": f})["id"] for f in formats
    ]
    done = [server.wait(task_id, timeout_s=300) for task_id in ids]
    assert [t["state"] for t in done] == ["succeeded"] * 4, done
    assert render_cgroup.oom_kills == 0
    assert render_cgroup.max_usage_mb < 512
    server.wait_idle()
