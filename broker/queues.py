"""The broker's per-camera frame queues and its credit ledger: pure logic, no sockets.

``FrameQueues`` holds at most ``maxlen`` frames per camera (a full queue drops its oldest frame) and, for each
worker, a ring of its cameras that have frames waiting: ``pop(worker)`` takes the oldest frame of the camera at the
front of the ring and puts that camera at the back, so a worker's cameras are served round-robin and none starves.

``Credits`` keeps the flow-control books. Cameras: a camera first heard (or restarted) is owed its whole window;
each credited frame that leaves its queue (dispatched or dropped) earns it one credit back. Frames a camera sends
without holding a credit (a misbehaving node, or frames in flight across a restart) are accepted but earn nothing
back, so a camera never has more than its window in flight. Workers: a heartbeat's credits are a grant of that many
more frames; each dispatched frame uses one.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from shared.protocol import MAX_CREDITS


@dataclass(slots=True)
class Queued:
    """A frame waiting at the broker: its camera, the payload to forward as received, when it arrived
    (``time.perf_counter()``), and the credit epoch it was sent under (None: sent without a credit)."""

    camera: str
    payload: Any
    received: float
    epoch: int | None = None


class FrameQueues:
    """Bounded drop-oldest queues per camera with round-robin dispatch across each worker's cameras."""

    def __init__(self, maxlen: int) -> None:
        if not isinstance(maxlen, int) or maxlen < 1:
            raise ValueError(f"maxlen must be a positive integer, got {maxlen!r}")
        self.maxlen = maxlen
        self._queues: dict[str, deque[Queued]] = {}
        self._owner: dict[str, str] = {}          # camera -> worker whose ring may hold it
        self._rings: dict[str, deque[str]] = {}    # worker -> cameras with frames waiting, next turn first
        self._ringed: set[str] = set()             # cameras currently in some ring

    def depth(self, camera: str) -> int:
        """Frames waiting for ``camera``."""
        queue = self._queues.get(camera)
        return 0 if queue is None else len(queue)

    def has_work(self, worker: str) -> bool:
        """Whether any camera of ``worker`` has a frame waiting."""
        return bool(self._rings.get(worker))

    def push(self, item: Queued, worker: str) -> Queued | None:
        """Queue ``item`` for ``worker`` (the camera's worker); returns the oldest frame it displaced, if any."""
        if self._owner.get(item.camera) != worker:
            self._unring(item.camera)
            self._owner[item.camera] = worker
        queue = self._queues.setdefault(item.camera, deque())
        dropped = queue.popleft() if len(queue) >= self.maxlen else None
        queue.append(item)
        self._ring(item.camera, front=False)
        return dropped

    def pop(self, worker: str) -> Queued | None:
        """The next frame for ``worker``, round-robin across its cameras; None when none is waiting."""
        ring = self._rings.get(worker)
        while ring:
            camera = ring.popleft()
            queue = self._queues.get(camera)
            if queue:
                item = queue.popleft()
                if queue:
                    ring.append(camera)
                else:
                    self._ringed.discard(camera)
                return item
            self._ringed.discard(camera)
        return None

    def unpop(self, item: Queued) -> None:
        """Put back a frame that ``pop`` returned but could not be sent; it keeps its place and its turn."""
        queue = self._queues.setdefault(item.camera, deque())
        queue.appendleft(item)
        self._unring(item.camera)
        self._ring(item.camera, front=True)

    def reassign(self, camera: str, worker: str | None) -> list[Queued]:
        """``camera`` now belongs to ``worker``; with None (no worker) its waiting frames are removed and returned."""
        self._unring(camera)
        if worker is None:
            self._owner.pop(camera, None)
            queue = self._queues.pop(camera, deque())
            return list(queue)
        self._owner[camera] = worker
        self._ring(camera, front=False)
        return []

    def _ring(self, camera: str, front: bool) -> None:
        if camera in self._ringed or not self._queues.get(camera) or camera not in self._owner:
            return
        ring = self._rings.setdefault(self._owner[camera], deque())
        if front:
            ring.appendleft(camera)
        else:
            ring.append(camera)
        self._ringed.add(camera)

    def _unring(self, camera: str) -> None:
        if camera in self._ringed:
            self._rings[self._owner[camera]].remove(camera)
            self._ringed.discard(camera)


class Credits:
    """Credits owed to cameras and granted by workers (see the module docstring)."""

    def __init__(self, camera_window: int) -> None:
        if not isinstance(camera_window, int) or not 1 <= camera_window <= MAX_CREDITS:
            raise ValueError(f"camera_window must be an integer in [1, {MAX_CREDITS}], got {camera_window!r}")
        self.camera_window = camera_window
        self._held: dict[str, int] = {}    # camera -> credits it holds as far as we know (granted, not yet used)
        self._owed: dict[str, int] = {}    # camera -> credits to grant at the next flush (only cameras owed > 0)
        self._deferred: dict[str, int] = {}  # camera -> owed credits whose sending failed
        self._epoch: dict[str, int] = {}   # camera -> session number; frames of an older session earn nothing
        self._workers: dict[str, int] = {}

    # ------------------------------------------------------------------------------------------ cameras
    def open_camera(self, camera: str) -> None:
        """A camera first heard or restarted: it holds nothing and is owed its whole window."""
        self._epoch[camera] = self._epoch.get(camera, 0) + 1
        self._held[camera] = 0
        self._deferred.pop(camera, None)
        self._owed[camera] = self.camera_window

    def close_camera(self, camera: str) -> None:
        """Forget a camera (gone silent); frames of it still queued earn nothing."""
        self._held.pop(camera, None)
        self._owed.pop(camera, None)
        self._deferred.pop(camera, None)
        self._epoch[camera] = self._epoch.get(camera, 0) + 1

    def frame_arrived(self, camera: str) -> int | None:
        """Use one of the camera's credits; returns the epoch to store with the frame, or None if it held none."""
        held = self._held.get(camera, 0)
        if held <= 0:
            return None
        self._held[camera] = held - 1
        return self._epoch[camera]

    def frame_left(self, item: Queued) -> None:
        """A frame left the broker's queue (dispatched or dropped): a credited one earns its camera a credit."""
        if item.epoch is not None and item.epoch == self._epoch.get(item.camera):
            self._owed[item.camera] = self._owed.get(item.camera, 0) + 1

    def take_grants(self, deferred: bool = True) -> list[tuple[str, int]]:
        """The (camera, credits) grants to send now; they count as held until ``return_grant`` says otherwise.
        Grants that failed to go out before are included only with ``deferred`` (retried once per interval, not
        on every loop turn, while their camera is unreachable)."""
        if deferred:
            for camera, n in self._deferred.items():
                self._owed[camera] = self._owed.get(camera, 0) + n
            self._deferred.clear()
        grants = list(self._owed.items())
        self._owed.clear()
        for camera, n in grants:
            self._held[camera] = self._held.get(camera, 0) + n
        return grants

    def return_grant(self, camera: str, n: int) -> None:
        """A grant from ``take_grants`` could not be sent: defer it (unless the camera was forgotten meanwhile)."""
        if camera not in self._held:
            return
        self._held[camera] -= n
        self._deferred[camera] = self._deferred.get(camera, 0) + n

    # ------------------------------------------------------------------------------------------ workers
    def worker_grant(self, worker: str, n: int, reset: bool = False) -> None:
        """Add a worker's grant of ``n`` frames; ``reset`` first zeroes its credits (a new worker process)."""
        current = 0 if reset else self._workers.get(worker, 0)
        self._workers[worker] = min(MAX_CREDITS, current + n)

    def worker_credits(self, worker: str) -> int:
        return self._workers.get(worker, 0)

    def use_worker_credit(self, worker: str) -> None:
        """One frame was sent to ``worker``."""
        credits = self._workers.get(worker, 0)
        if credits <= 0:
            raise ValueError(f"worker {worker!r} has no credit left to use")
        self._workers[worker] = credits - 1
