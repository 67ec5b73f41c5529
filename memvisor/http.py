"""What the sync and async clients share: requests as data, retry decisions, answers decoded into
results or typed errors, and each client operation as a generator of steps (a ``Call`` to make, or
seconds to sleep) that a client drives with its own I/O. No I/O here: the logic is written once, and
every decision is a pure function."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO, Any

import httpx

from memvisor.errors import Unreachable, refusal_for, result_of

RETRY_STATUSES = frozenset({429, 503})
BACKOFF_S = 0.5  # without Retry-After: 0.5, 1, 2, 4 s ...
WAIT_CHUNK_S = 60.0  # one long-poll; the service caps ?wait_s= at MAX_WAIT_S anyway
READ_MARGIN_S = 15.0  # a long-poll's read timeout is its wait plus this

FileArg = str | os.PathLike[str] | tuple[str, bytes | IO[bytes]]
Files = Sequence[FileArg] | Mapping[str, bytes | IO[bytes]]


@dataclass(frozen=True)
class Retry:
    """Passed to ``on_retry`` before the client sleeps ``delay_s`` and tries again."""

    attempt: int  # 1 for the first retry
    status: int | None  # None: the connection failed
    delay_s: float
    url: str


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    data: dict[str, str] | None = None
    files: list[tuple[str, tuple[str, bytes]]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    read_timeout_s: float | None = None  # None: the client's own timeout

    def kwargs(self, default_timeout_s: float) -> dict[str, Any]:
        read_s = self.read_timeout_s or default_timeout_s
        return {
            "params": self.params or None,
            "json": self.json,
            "data": self.data,
            "files": self.files,
            "headers": self.headers or None,
            "timeout": httpx.Timeout(default_timeout_s, read=read_s),
        }


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def retry_delay_s(
    status: int | None, retry_after: str | None, attempt: int, retries: int, max_wait_s: float
) -> float | None:
    """How long to wait before retrying after attempt number ``attempt`` (0 for the first try); None
    when the answer is final: a status that is not 429/503, or no retries left."""
    if attempt >= retries or (status is not None and status not in RETRY_STATUSES):
        return None
    given = parse_retry_after(retry_after)
    delay_s = given if given is not None else BACKOFF_S * 2**attempt
    return min(max(0.0, delay_s), max_wait_s)


def auth_headers(api_key: str | None, token: str | None) -> dict[str, str]:
    headers = {}
    if api_key:
        headers["X-API-Key"] = api_key
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def submit_call(
    kind: str,
    payload: Mapping[str, Any] | None,
    *,
    files: Files | None,
    timeout_s: float | None,
    ceiling_mb: float | None,
    wait_s: float,
    idempotency_key: str | None,
) -> Call:
    """POST /v1/tasks, or /v1/tasks/upload with files. The Idempotency-Key is chosen once per logical
    submit and sent again on every retry, so a retried POST never queues a second task."""
    headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
    params = {"wait_s": wait_s} if wait_s > 0 else {}
    read_s = wait_s + READ_MARGIN_S if wait_s > 0 else None
    if not files:
        body = {
            "kind": kind,
            "payload": dict(payload or {}),
            "timeout_s": timeout_s,
            "ceiling_mb": ceiling_mb,
        }
        body = {k: v for k, v in body.items() if v is not None}
        return Call("POST", "/v1/tasks", params, json=body, headers=headers, read_timeout_s=read_s)
    form = {"kind": kind, "payload": json.dumps(dict(payload or {}))}
    if timeout_s is not None:
        form["timeout_s"] = str(timeout_s)
    if ceiling_mb is not None:
        form["ceiling_mb"] = str(ceiling_mb)
    parts = [("files", item) for item in read_files(files)]
    return Call(
        "POST", "/v1/tasks/upload", params, data=form, files=parts, headers=headers, read_timeout_s=read_s
    )


def read_files(files: Files) -> list[tuple[str, bytes]]:
    """(name, content) of each file, read once so that a retry sends the same bytes again."""
    items: Sequence[Any] = list(files.items()) if isinstance(files, Mapping) else list(files)
    out = []
    for item in items:
        if isinstance(item, str | os.PathLike):
            path = Path(item)
            out.append((path.name, path.read_bytes()))
        else:
            name, data = item
            out.append((name, data if isinstance(data, bytes) else data.read()))
    return out


def wait_call(task_id: str, wait_s: float) -> Call:
    chunk_s = max(0.1, min(wait_s, WAIT_CHUNK_S))
    return Call("GET", f"/v1/tasks/{task_id}", {"wait_s": chunk_s}, read_timeout_s=chunk_s + READ_MARGIN_S)


def list_call(state: str | None, kind: str | None, limit: int, offset: int) -> Call:
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if state:
        params["state"] = state
    if kind:
        params["kind"] = kind
    return Call("GET", "/v1/tasks", params)


def decode(response: httpx.Response) -> Any:
    """The JSON body of a success; a ``RequestRefused`` subclass for any refusal."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    if response.status_code >= 400:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise refusal_for(response.status_code, body, retry_after)
    return body


def is_final(task: Mapping[str, Any]) -> bool:
    return task.get("state") not in ("queued", "running")


# A client operation: it yields a Call (the client answers with the response, or the transport
# error) or seconds to sleep (answered with None), and returns the operation's value.
Outcome = httpx.Response | Exception | None
Steps = Generator["Call | float", Outcome, Any]


class Policy:
    """A client's base URL, headers, timeout and retry policy."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        token: str | None,
        timeout_s: float,
        retries: int,
        max_retry_wait_s: float,
        on_retry: Callable[[Retry], None] | None,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"  # httpx then keeps the base's path (a prefix)
        self.headers = auth_headers(api_key, token)
        self.timeout_s = timeout_s
        self.retries = retries
        self.max_retry_wait_s = max_retry_wait_s
        self.on_retry = on_retry

    def next_delay(self, outcome: Outcome, attempt: int, url: str) -> float | None:
        """The wait before the next try, announced to ``on_retry``; None: this outcome is final."""
        if isinstance(outcome, httpx.Response):
            status, retry_after = outcome.status_code, outcome.headers.get("retry-after")
            if outcome.status_code < 400:
                return None
        else:
            status, retry_after = None, None
        delay_s = retry_delay_s(status, retry_after, attempt, self.retries, self.max_retry_wait_s)
        if delay_s is not None and self.on_retry is not None:
            self.on_retry(Retry(attempt + 1, status, delay_s, url))
        return delay_s

    def send(self, call: Call) -> Steps:
        """One request, retried as the policy says; its decoded answer."""
        url = self.base_url + call.path.lstrip("/")
        attempt = 0
        while True:
            outcome = yield call
            delay_s = self.next_delay(outcome, attempt, url)
            if delay_s is None:
                break
            yield delay_s
            attempt += 1
        if not isinstance(outcome, httpx.Response):
            raise Unreachable(f"cannot reach memvisor at {url}: {outcome}") from outcome
        return decode(outcome)

    def wait(self, task_id: str, timeout_s: float | None) -> Steps:
        """Long-polls until the task is final, or as it is when ``timeout_s`` runs out (None: no limit)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left_s = 3600.0 if deadline is None else deadline - time.monotonic()
            task = yield from self.send(wait_call(task_id, left_s))
            if is_final(task) or (deadline is not None and time.monotonic() >= deadline):
                return task

    def run(self, submit: Call, first_wait_s: float, wait_timeout_s: float | None) -> Steps:
        """Submit (the submit itself waits ``first_wait_s``), wait for the rest: the task's result."""
        task = yield from self.send(submit)
        if not is_final(task):
            rest_s = None if wait_timeout_s is None else max(0.0, wait_timeout_s - first_wait_s)
            task = yield from self.wait(task["id"], rest_s)
        return result_of(task)
