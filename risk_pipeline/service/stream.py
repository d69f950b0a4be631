"""The live stream of the risk service: a broker that fans events out to server-sent-event clients.

The watcher thread (``core.Watcher``) publishes events (trading-state changes, new breaches, hedge
recommendations, alerts, manual controls, new valuations) with ``publish``; every connected client
has a bounded asyncio queue on the server's event loop. A client that falls more than
``QUEUE_SIZE`` events behind is disconnected with an ``overflow`` event rather than slowing others.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

QUEUE_SIZE = 1000
#: Seconds between keep-alive comments on an idle stream (proxies close silent connections).
KEEPALIVE_SECONDS = 15.0


@dataclass(eq=False)
class _Subscriber:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[dict[str, Any] | None]
    types: frozenset[str] | None
    overflowed: bool = field(default=False)


class Broker:
    """Thread-safe fan-out of events to the connected stream clients."""

    def __init__(self) -> None:
        self._subscribers: set[_Subscriber] = set()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, event_type: str, data: dict[str, Any]) -> None:
        """Send an event to every subscriber (callable from any thread)."""
        event = {"id": next(self._ids), "type": event_type, "data": data}
        with self._lock:
            targets = list(self._subscribers)
        for sub in targets:
            if sub.types is None or event_type in sub.types:
                sub.loop.call_soon_threadsafe(self._offer, sub, event)

    @staticmethod
    def _offer(sub: _Subscriber, event: dict[str, Any]) -> None:
        if sub.overflowed:
            return
        try:
            sub.queue.put_nowait(event)
        except asyncio.QueueFull:
            sub.overflowed = True
            sub.queue._queue.clear()  # type: ignore[attr-defined]  # drop the backlog, then say so
            sub.queue.put_nowait(None)

    async def events(self, types: frozenset[str] | None) -> AsyncIterator[str]:
        """Server-sent-event frames for one client until it disconnects."""
        sub = _Subscriber(asyncio.get_running_loop(), asyncio.Queue(QUEUE_SIZE), types)
        with self._lock:
            self._subscribers.add(sub)
        try:
            yield ": connected\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if event is None:
                    yield frame(0, "overflow", {"detail": f"more than {QUEUE_SIZE} events behind; reconnect"})
                    return
                yield frame(event["id"], event["type"], event["data"])
        finally:
            with self._lock:
                self._subscribers.discard(sub)


def frame(event_id: int, event_type: str, data: dict[str, Any]) -> str:
    """One server-sent event."""
    return f"id: {event_id}\nevent: {event_type}\ndata: {json.dumps(data, default=str, sort_keys=True)}\n\n"
