"""The live feed: one task tails the store's durable event log (oldest first after a cursor, every
``dashboard.poll_s``) and hands each new event to every connected browser's bounded queue, as Server-Sent Events.

Reading the log rather than the broker's PUB socket means every event a browser sees has its log id (a browser
that reconnects sends ``Last-Event-ID`` and gets what it missed from the log), its crop key, and the name after any
merge; and the dashboard needs no socket to the broker. A browser that falls ``QUEUE`` events behind is dropped
(counted) and reconnects, catching up from its last id.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from shared.errors import ArgusError
from store.types import EventQuery, LoggedEvent

log = logging.getLogger(__name__)
QUEUE = 1000
BATCH = 500


class Subscriber:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[LoggedEvent | None] = asyncio.Queue(QUEUE)
        self.dropped = False


class EventFeed:
    def __init__(self, read: Callable[[EventQuery], list[LoggedEvent]], poll_s: float,
                 on_error: Callable[[Exception], None]) -> None:
        self._read = read  # a blocking store read, run in a thread
        self.poll_s = poll_s
        self.on_error = on_error
        self.subscribers: set[Subscriber] = set()
        self.last_id = 0
        self.lagged = 0  # subscribers dropped for falling behind

    async def start_cursor(self) -> None:
        newest = await asyncio.to_thread(self._read, EventQuery(limit=1))
        self.last_id = newest[0].id if newest else 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                batch = await asyncio.to_thread(self._read, EventQuery(after_id=self.last_id, oldest_first=True,
                                                                       limit=BATCH))
            except (ArgusError, OSError) as exc:  # a store outage: counted, logged once, tried again
                self.on_error(exc)
                batch = []
            for event in batch:
                self.last_id = max(self.last_id, event.id)
                self._publish(event)
            if len(batch) < BATCH:
                try:
                    await asyncio.wait_for(stop.wait(), self.poll_s)
                except asyncio.TimeoutError:
                    pass

    def _publish(self, event: LoggedEvent) -> None:
        for sub in list(self.subscribers):
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.dropped = True
                self.subscribers.discard(sub)
                self.lagged += 1
                sub.queue.get_nowait()
                sub.queue.put_nowait(None)  # tells the stream to end: the browser reconnects from its last id

    def subscribe(self) -> Subscriber:
        sub = Subscriber()
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
