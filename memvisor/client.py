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

from memvisor.errors import result_of
from memvisor.http import Call, Files, Policy, Retry, Steps, decode, is_final, list_call, submit_call
from memvisor.sse import Event, EventParser

DEFAULT_URL = "http://127.0.0.1:8000"
FIRST_WAIT_S = 30.0  # run() asks the submit itself to wait this long: one request for a short task


class _Base:
    """What both clients hold: the policy (URL, headers, timeout, retries); each drives its steps."""

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
        self._policy = Policy(
            base_url=base_url,
            api_key=api_key,
            token=token,
            timeout_s=timeout_s,
            retries=retries,
            max_retry_wait_s=max_retry_wait_s,
            on_retry=on_retry,
        )
        self._connect()

    def _connect(self) -> None:
        raise NotImplementedError

    def _request_args(self, call: Call) -> dict[str, Any]:
        return {"method": call.method, "url": call.path.lstrip("/"), **call.kwargs(self._policy.timeout_s)}

    def _stream_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self._policy.timeout_s, read=None)  # the server pings an idle stream


def _first_wait_s(wait_timeout_s: float | None) -> float:
    return FIRST_WAIT_S if wait_timeout_s is None else min(FIRST_WAIT_S, wait_timeout_s)


class Client(_Base):
    """A blocking client. Use as a context manager, or call ``close()``."""

    _http: httpx.Client

    def _connect(self) -> None:
        self._http = httpx.Client(base_url=self._policy.base_url, headers=self._policy.headers)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _drive(self, steps: Steps) -> Any:
        outcome: httpx.Response | Exception | None = None
        try:
            while True:
                step = steps.send(outcome)
                if isinstance(step, Call):
                    try:
                        outcome = self._http.request(**self._request_args(step))
                    except httpx.TransportError as exc:
                        outcome = exc
                else:
                    time.sleep(step)
                    outcome = None
        except StopIteration as done:
            return done.value

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
        return RemoteTask(self, self._drive(self._policy.send(call)))

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
        first_s = _first_wait_s(wait_timeout_s)
        call = submit_call(
            kind,
            payload,
            files=files,
            timeout_s=timeout_s,
            ceiling_mb=ceiling_mb,
            wait_s=first_s,
            idempotency_key=None,
        )
        result: dict[str, Any] = self._drive(self._policy.run(call, first_s, wait_timeout_s))
        return result

    def get(self, task_id: str) -> dict[str, Any]:
        task: dict[str, Any] = self._drive(self._policy.send(Call("GET", f"/v1/tasks/{task_id}")))
        return task

    def wait(self, task_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        """The task once final, or as it is when ``timeout_s`` runs out (None: no limit)."""
        task: dict[str, Any] = self._drive(self._policy.wait(task_id, timeout_s))
        return task

    def result(self, task_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        return result_of(self.wait(task_id, timeout_s))

    def cancel(self, task_id: str) -> dict[str, Any]:
        task: dict[str, Any] = self._drive(self._policy.send(Call("DELETE", f"/v1/tasks/{task_id}")))
        return task

    def tasks(
        self, *, state: str | None = None, kind: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        page = self._drive(self._policy.send(list_call(state, kind, limit, offset)))
        items: list[dict[str, Any]] = page["items"]
        return items

    def kinds(self) -> list[dict[str, Any]]:
        kinds: list[dict[str, Any]] = self._drive(self._policy.send(Call("GET", "/v1/kinds")))
        return kinds

    def events(self, task_id: str) -> Iterator[Event]:
        """The task's server-sent events (``state`` with the whole task, ``progress``) until it is final."""
        path = f"v1/tasks/{task_id}/events"
        with self._http.stream("GET", path, timeout=self._stream_timeout()) as response:
            if response.status_code >= 400:
                response.read()
                decode(response)
            parser = EventParser()
            for line in response.iter_lines():
                if (event := parser.feed(line)) is not None:
                    yield event


class AsyncClient(_Base):
    """The asyncio client: the same methods as ``Client``, awaited. ``async with`` or ``aclose()``."""

    _http: httpx.AsyncClient

    def _connect(self) -> None:
        self._http = httpx.AsyncClient(base_url=self._policy.base_url, headers=self._policy.headers)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _drive(self, steps: Steps) -> Any:
        outcome: httpx.Response | Exception | None = None
        try:
            while True:
                step = steps.send(outcome)
                if isinstance(step, Call):
                    try:
                        outcome = await self._http.request(**self._request_args(step))
                    except httpx.TransportError as exc:
                        outcome = exc
                else:
                    await asyncio.sleep(step)
                    outcome = None
        except StopIteration as done:
            return done.value

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
        return AsyncRemoteTask(self, await self._drive(self._policy.send(call)))

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
        first_s = _first_wait_s(wait_timeout_s)
        call = submit_call(
            kind,
            payload,
            files=files,
            timeout_s=timeout_s,
            ceiling_mb=ceiling_mb,
            wait_s=first_s,
            idempotency_key=None,
        )
        result: dict[str, Any] = await self._drive(self._policy.run(call, first_s, wait_timeout_s))
        return result

    async def get(self, task_id: str) -> dict[str, Any]:
        task: dict[str, Any] = await self._drive(self._policy.send(Call("GET", f"/v1/tasks/{task_id}")))
        return task

    async def wait(self, task_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        task: dict[str, Any] = await self._drive(self._policy.wait(task_id, timeout_s))
        return task

    async def result(self, task_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        return result_of(await self.wait(task_id, timeout_s))

    async def cancel(self, task_id: str) -> dict[str, Any]:
        task: dict[str, Any] = await self._drive(self._policy.send(Call("DELETE", f"/v1/tasks/{task_id}")))
        return task

    async def tasks(
        self, *, state: str | None = None, kind: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        page = await self._drive(self._policy.send(list_call(state, kind, limit, offset)))
        items: list[dict[str, Any]] = page["items"]
        return items

    async def kinds(self) -> list[dict[str, Any]]:
        kinds: list[dict[str, Any]] = await self._drive(self._policy.send(Call("GET", "/v1/kinds")))
        return kinds

    async def events(self, task_id: str) -> AsyncIterator[Event]:
        path = f"v1/tasks/{task_id}/events"
        async with self._http.stream("GET", path, timeout=self._stream_timeout()) as response:
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
