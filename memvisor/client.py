"""Clients of a remote memvisor: ``Client`` (blocking) and ``AsyncClient`` (asyncio), over httpx.

``base_url`` is where the task routes hang from: ``http://host:8000`` for the service, or
``http://host:8000/jobs`` for an app that mounted ``mv.router`` with ``prefix="/jobs"``.
A 429 or 503 is retried after its Retry-After (at most ``max_retry_wait_s``), and so is a failed
connection, up to ``retries`` times; every submit carries an Idempotency-Key, so a retried submit never
queues a second task. Refusals raise ``RequestRefused`` subclasses; a task that ends without a result
raises the ``TaskError`` subclass of its reason (see ``memvisor.errors``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import httpx

from memvisor.errors import Unreachable, result_of
from memvisor.http import (
    Call,
    Files,
    Retry,
    auth_headers,
    decode,
    is_final,
    list_call,
    retry_delay_s,
    submit_call,
    wait_call,
)
from memvisor.sse import Event, EventParser

DEFAULT_URL = "http://127.0.0.1:8000"
FIRST_WAIT_S = 30.0  # run() asks the submit itself to wait this long: one request for a short task


class _Options:
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

    def next_delay(self, outcome: httpx.Response | Exception, attempt: int, url: str) -> float | None:
        """The wait before the next try, announced to ``on_retry``; None: this outcome is final."""
        if isinstance(outcome, Exception):
            status, retry_after = None, None
        else:
            status, retry_after = outcome.status_code, outcome.headers.get("retry-after")
            if outcome.status_code < 400:
                return None
        delay_s = retry_delay_s(status, retry_after, attempt, self.retries, self.max_retry_wait_s)
        if delay_s is not None and self.on_retry is not None:
            self.on_retry(Retry(attempt + 1, status, delay_s, url))
        return delay_s


def _final(outcome: httpx.Response | Exception, url: str) -> Any:
    if isinstance(outcome, Exception):
        raise Unreachable(f"cannot reach memvisor at {url}: {outcome}") from outcome
    return decode(outcome)


class Client:
    """A blocking client. Use as a context manager, or call ``close()``."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        token: str | None = None,
        timeout_s: float = 30.0,
        retries: int = 5,
        max_retry_wait_s: float = 60.0,
        on_retry: Callable[[Retry], None] | None = None,
    ) -> None:
        self._opts = _Options(
            base_url=base_url,
            api_key=api_key,
            token=token,
            timeout_s=timeout_s,
            retries=retries,
            max_retry_wait_s=max_retry_wait_s,
            on_retry=on_retry,
        )
        self._http = httpx.Client(base_url=self._opts.base_url, headers=self._opts.headers)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call) -> Any:
        url = self._opts.base_url + call.path.lstrip("/")
        attempt = 0
        while True:
            outcome: httpx.Response | Exception
            try:
                outcome = self._http.request(
                    call.method, call.path.lstrip("/"), **call.kwargs(self._opts.timeout_s)
                )
            except httpx.TransportError as exc:
                outcome = exc
            delay_s = self._opts.next_delay(outcome, attempt, url)
            if delay_s is None:
                return _final(outcome, url)
            time.sleep(delay_s)
            attempt += 1

    def submit(
        self,
        kind: str,
        payload: Mapping[str, Any] | None = None,
        *,
        files: Files | None = None,
        timeout_s: float | None = None,
        ceiling_mb: float | None = None,
        wait_s: float = 0,
        idempotency_key: str | None = None,
    ) -> RemoteTask:
        call = submit_call(
            kind,
            payload,
            files=files,
            timeout_s=timeout_s,
            ceiling_mb=ceiling_mb,
            wait_s=wait_s,
            idempotency_key=idempotency_key,
        )
        return RemoteTask(self, self._send(call))

    def run(
        self,
        kind: str,
        payload: Mapping[str, Any] | None = None,
        *,
        files: Files | None = None,
        timeout_s: float | None = None,
        ceiling_mb: float | None = None,
        wait_timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Submit and wait: the result, or the ``TaskError`` subclass of the task's reason."""
        first_s = FIRST_WAIT_S if wait_timeout_s is None else min(FIRST_WAIT_S, wait_timeout_s)
        task = self.submit(
            kind, payload, files=files, timeout_s=timeout_s, ceiling_mb=ceiling_mb, wait_s=first_s
        )
        return task.result(None if wait_timeout_s is None else max(0.0, wait_timeout_s - first_s))

    def get(self, task_id: str) -> dict[str, Any]:
        task: dict[str, Any] = self._send(Call("GET", f"/v1/tasks/{task_id}"))
        return task

    def wait(self, task_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        """The task once final, or as it is when ``timeout_s`` runs out (None: no limit)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left_s = 3600.0 if deadline is None else deadline - time.monotonic()
            task: dict[str, Any] = self._send(wait_call(task_id, left_s))
            if is_final(task) or (deadline is not None and time.monotonic() >= deadline):
                return task

    def result(self, task_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        return result_of(self.wait(task_id, timeout_s))

    def cancel(self, task_id: str) -> dict[str, Any]:
        task: dict[str, Any] = self._send(Call("DELETE", f"/v1/tasks/{task_id}"))
        return task

    def tasks(
        self, *, state: str | None = None, kind: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._send(list_call(state, kind, limit, offset))["items"]
        return items

    def kinds(self) -> list[dict[str, Any]]:
        kinds: list[dict[str, Any]] = self._send(Call("GET", "/v1/kinds"))
        return kinds

    def events(self, task_id: str) -> Iterator[Event]:
        """The task's server-sent events (``state`` with the whole task, ``progress``) until it is final."""
        timeout = httpx.Timeout(self._opts.timeout_s, read=None)  # the server pings an idle stream
        with self._http.stream("GET", f"v1/tasks/{task_id}/events", timeout=timeout) as response:
            if response.status_code >= 400:
                response.read()
                decode(response)
            parser = EventParser()
            for line in response.iter_lines():
                if (event := parser.feed(line)) is not None:
                    yield event


class AsyncClient:
    """The asyncio client: the same methods as ``Client``, awaited. ``async with`` or ``aclose()``."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        token: str | None = None,
        timeout_s: float = 30.0,
        retries: int = 5,
        max_retry_wait_s: float = 60.0,
        on_retry: Callable[[Retry], None] | None = None,
    ) -> None:
        self._opts = _Options(
            base_url=base_url,
            api_key=api_key,
            token=token,
            timeout_s=timeout_s,
            retries=retries,
            max_retry_wait_s=max_retry_wait_s,
            on_retry=on_retry,
        )
        self._http = httpx.AsyncClient(base_url=self._opts.base_url, headers=self._opts.headers)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call) -> Any:
        url = self._opts.base_url + call.path.lstrip("/")
        attempt = 0
        while True:
            outcome: httpx.Response | Exception
            try:
                outcome = await self._http.request(
                    call.method, call.path.lstrip("/"), **call.kwargs(self._opts.timeout_s)
                )
            except httpx.TransportError as exc:
                outcome = exc
            delay_s = self._opts.next_delay(outcome, attempt, url)
            if delay_s is None:
                return _final(outcome, url)
            await asyncio.sleep(delay_s)
            attempt += 1

    async def submit(
        self,
        kind: str,
        payload: Mapping[str, Any] | None = None,
        *,
        files: Files | None = None,
        timeout_s: float | None = None,
        ceiling_mb: float | None = None,
        wait_s: float = 0,
        idempotency_key: str | None = None,
    ) -> AsyncRemoteTask:
        call = submit_call(
            kind,
            payload,
            files=files,
            timeout_s=timeout_s,
            ceiling_mb=ceiling_mb,
            wait_s=wait_s,
            idempotency_key=idempotency_key,
        )
        return AsyncRemoteTask(self, await self._send(call))

    async def run(
        self,
        kind: str,
        payload: Mapping[str, Any] | None = None,
        *,
        files: Files | None = None,
        timeout_s: float | None = None,
        ceiling_mb: float | None = None,
        wait_timeout_s: float | None = None,
    ) -> dict[str, Any]:
        first_s = FIRST_WAIT_S if wait_timeout_s is None else min(FIRST_WAIT_S, wait_timeout_s)
        task = await self.submit(
            kind, payload, files=files, timeout_s=timeout_s, ceiling_mb=ceiling_mb, wait_s=first_s
        )
        return await task.result(None if wait_timeout_s is None else max(0.0, wait_timeout_s - first_s))

    async def get(self, task_id: str) -> dict[str, Any]:
        task: dict[str, Any] = await self._send(Call("GET", f"/v1/tasks/{task_id}"))
        return task

    async def wait(self, task_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left_s = 3600.0 if deadline is None else deadline - time.monotonic()
            task: dict[str, Any] = await self._send(wait_call(task_id, left_s))
            if is_final(task) or (deadline is not None and time.monotonic() >= deadline):
                return task

    async def result(self, task_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        return result_of(await self.wait(task_id, timeout_s))

    async def cancel(self, task_id: str) -> dict[str, Any]:
        task: dict[str, Any] = await self._send(Call("DELETE", f"/v1/tasks/{task_id}"))
        return task

    async def tasks(
        self, *, state: str | None = None, kind: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await self._send(list_call(state, kind, limit, offset)))["items"]
        return items

    async def kinds(self) -> list[dict[str, Any]]:
        kinds: list[dict[str, Any]] = await self._send(Call("GET", "/v1/kinds"))
        return kinds

    async def events(self, task_id: str) -> AsyncIterator[Event]:
        timeout = httpx.Timeout(self._opts.timeout_s, read=None)
        async with self._http.stream("GET", f"v1/tasks/{task_id}/events", timeout=timeout) as response:
            if response.status_code >= 400:
                await response.aread()
                decode(response)
            parser = EventParser()
            async for line in response.aiter_lines():
                if (event := parser.feed(line)) is not None:
                    yield event


class RemoteTask:
    """A task submitted through ``Client``: ``id``, ``task`` (as last seen), and its methods."""

    def __init__(self, client: Client, task: dict[str, Any]) -> None:
        self._client = client
        self.task = task
        self.id: str = task["id"]

    def wait(self, timeout_s: float | None = None) -> dict[str, Any]:
        if not is_final(self.task):
            self.task = self._client.wait(self.id, timeout_s)
        return self.task

    def result(self, timeout_s: float | None = None) -> dict[str, Any]:
        return result_of(self.wait(timeout_s))

    def cancel(self) -> dict[str, Any]:
        self.task = self._client.cancel(self.id)
        return self.task

    def events(self) -> Iterator[Event]:
        return self._client.events(self.id)


class AsyncRemoteTask:
    """A task submitted through ``AsyncClient``."""

    def __init__(self, client: AsyncClient, task: dict[str, Any]) -> None:
        self._client = client
        self.task = task
        self.id: str = task["id"]

    async def wait(self, timeout_s: float | None = None) -> dict[str, Any]:
        if not is_final(self.task):
            self.task = await self._client.wait(self.id, timeout_s)
        return self.task

    async def result(self, timeout_s: float | None = None) -> dict[str, Any]:
        return result_of(await self.wait(timeout_s))

    async def cancel(self) -> dict[str, Any]:
        self.task = await self._client.cancel(self.id)
        return self.task

    def events(self) -> AsyncIterator[Event]:
        return self._client.events(self.id)
