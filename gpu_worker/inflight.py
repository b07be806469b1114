"""Batches in flight: the worker's detection step runs on a pool of threads while its one processing thread plans
the next batches and finishes (tracks, recognises, publishes) the earlier ones, strictly in the order they came.

ONNX Runtime and OpenCV release the GIL, so detections of different batches run on different cores at once; what
keeps state (the processor's per-camera trackers, schedulers, the store) is only ever touched by the processing
thread, so each camera's frames are tracked one by one in their order. A pool of one thread still overlaps one
batch's detection with the previous batch's recognition.

A batch is detected in up to ``threads`` chunks at once (on a CPU, batching frames in one detector call gains
nothing, and one call of four frames on one core would leave the other cores idle). At most ``threads + 1`` batches
are in flight (one waits in the pool while the processing thread finishes another), so frames wait in the worker's
inbox, where the stale-work checks see them, not here.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

POLL_S = 0.002  # while batches are in flight and the pool has room, how often the inbox is looked at again


@dataclass
class InFlight:
    """One batch on its way: the frames taken off the inbox, those still fresh, the processor's plan for them (one
    entry per fresh frame) and the futures of its chunks' detections (none: nothing to detect, or planning
    failed)."""

    batch: list
    fresh: list
    plan: Any
    started: float  # wall clock when it left the inbox (for the stale check after processing)
    futures: list[cf.Future] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return all(f.done() for f in self.futures)

    def found(self) -> list:
        """The chunks' detections in order (raises what a chunk raised)."""
        return [found for future in self.futures for found in future.result()]


def chunks(items: list, parts: int) -> list[list]:
    """``items`` in at most ``parts`` consecutive chunks of nearly equal length."""
    size = -(-len(items) // max(1, parts)) if items else 1
    return [items[i:i + size] for i in range(0, len(items), size)]


class DetectionPool:
    """A FIFO of ``InFlight`` batches whose detection runs on ``threads`` threads."""

    def __init__(self, threads: int, name: str) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = threads
        self.depth = threads + 1
        self._pool = cf.ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._flight: deque[InFlight] = deque()

    def __len__(self) -> int:
        return len(self._flight)

    @property
    def full(self) -> bool:
        return len(self._flight) >= self.depth

    def submit(self, item: InFlight, detect: Callable[[list], list] | None = None) -> None:
        """Queue ``item``; ``detect`` (when given) runs on the pool on each chunk of ``item.plan`` (a list), at most
        ``threads`` chunks."""
        item.futures = [] if detect is None else [self._pool.submit(detect, part)
                                                   for part in chunks(list(item.plan), self.threads)]
        self._flight.append(item)

    def ready(self, wait_s: float | None = 0.0) -> Iterator[InFlight]:
        """The batches whose detection is over, oldest first, stopping at the first one still running. The oldest
        is waited for up to ``wait_s`` seconds (None: until it is done)."""
        if self._flight and self._flight[0].futures and wait_s != 0.0:
            cf.wait(self._flight[0].futures, timeout=wait_s)
        while self._flight and self._flight[0].done:
            yield self._flight.popleft()

    def drain(self) -> Iterator[InFlight]:
        """Every batch in flight, oldest first, each once its detection is over."""
        while self._flight:
            yield from self.ready(None)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
