"""Reading a `text/event-stream` (Server-Sent Events) line by line.

Only what the push channel needs from the WHATWG format: `data:` lines (several are joined
with newlines), `event:` and `id:`; comment lines (`: heartbeat`) and `retry:` are read and
dropped; a blank line ends an event. A stream that ends in the middle of an event drops that
event, as a browser's `EventSource` does.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

__all__ = ["Event", "events"]


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event: its type (`message` when not named), data and id."""

    event: str
    data: str
    id: str | None


async def events(lines: AsyncIterable[str]) -> AsyncIterator[Event]:
    """The events of a stream given as lines (without their line ends)."""
    data: list[str] = []
    name = ""
    event_id: str | None = None
    async for line in lines:
        if not line:
            if data:
                yield Event(name or "message", "\n".join(data), event_id)
            data, name, event_id = [], "", None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
        elif field == "id" and "\0" not in value:
            event_id = value
