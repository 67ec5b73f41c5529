"""A parser of ``text/event-stream`` lines (the WHATWG server-sent events format), fed one line at a time."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    """One server-sent event: ``event`` is its name (``state``, ``progress``), ``data`` its JSON value
    (the raw text where it is not JSON)."""

    event: str
    data: Any
    id: str | None = None


class EventParser:
    """Collects ``field: value`` lines; a blank line ends an event. Comments (``: ping``) are skipped."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> Event | None:
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None  # "retry" and unknown fields are ignored, as the standard says

    def _dispatch(self) -> Event | None:
        if not self._data:
            self._event = ""
            return None
        text = "\n".join(self._data)
        try:
            data: Any = json.loads(text)
        except ValueError:
            data = text
        event = Event(self._event or "message", data, self._id)
        self._event, self._data = "", []
        return event
