"""Camera -> worker assignment and liveness bookkeeping for the broker: pure logic, no sockets, no clock.

Every camera is assigned to exactly one live worker (the one with the fewest cameras when the camera is first
seen), so its frames and its tracker state stay on one worker. A worker silent for ``dead_after_s`` is dead: its
cameras move to the live workers at once (least loaded first). When a worker joins, cameras without a worker are
assigned, then cameras move from the most-loaded worker to the least-loaded one while their camera counts differ
by more than one. Assignment is sticky: the cameras moved away from a worker declared dead never go straight back
to it when it comes back (the same process, revived after a pause): the healthy workers hold the tracks of those
people now, and moving them back would split each person into two tracks. A revived worker rebalances like a
joining one, but only with other cameras. Cameras silent for ``dead_after_s`` are forgotten (a camera heartbeats
every interval).

Restarts are told apart from hiccups by heartbeat sequence numbers: a sender whose ``seq`` goes backwards is a new
process (its credits start afresh), one that continues its sequence after being declared dead is the same process
come back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from shared.zmq_defaults import DEAD_AFTER_S


class Seen(Enum):
    """What a message told the routing table about its sender."""

    NEW = "new"              # never heard before (or forgotten)
    RESTARTED = "restarted"  # heard before, but its heartbeat sequence went backwards: a new process
    REVIVED = "revived"      # a worker declared dead that continued its sequence: the same process came back
    KNOWN = "known"          # alive and already known


@dataclass(frozen=True, slots=True)
class Move:
    """Camera ``camera`` changed worker from ``old`` to ``new`` (None: no worker)."""

    camera: str
    old: str | None
    new: str | None


@dataclass(frozen=True, slots=True)
class Expired:
    """What one liveness check found: workers now dead, cameras forgotten, and the camera moves that followed."""

    dead_workers: tuple[str, ...]
    gone_cameras: tuple[str, ...]
    moves: tuple[Move, ...]


@dataclass(slots=True)
class _Worker:
    last_seen: float
    last_seq: int
    alive: bool = True
    cameras: dict[str, None] = field(default_factory=dict)  # insertion-ordered set


@dataclass(slots=True)
class _Camera:
    last_seen: float
    last_seq: int | None
    worker: str | None = None
    moved_from: str | None = None  # the dead worker it was moved away from (it never goes straight back there)


class Routing:
    """The broker's camera -> worker table. Times are seconds of any monotonic clock, passed in by the caller."""

    def __init__(self, dead_after_s: float = DEAD_AFTER_S) -> None:
        if not dead_after_s > 0:
            raise ValueError(f"dead_after_s must be > 0, got {dead_after_s!r}")
        self.dead_after_s = dead_after_s
        self._workers: dict[str, _Worker] = {}
        self._cameras: dict[str, _Camera] = {}

    # ------------------------------------------------------------------------------------------ queries
    def worker_of(self, camera: str) -> str | None:
        """The live worker serving ``camera``, or None (unknown camera or no live worker)."""
        state = self._cameras.get(camera)
        return None if state is None else state.worker

    def live_workers(self) -> list[str]:
        """Ids of the live workers, in the order they were first heard."""
        return [wid for wid, w in self._workers.items() if w.alive]

    def cameras_of(self, worker: str) -> tuple[str, ...]:
        """Cameras assigned to ``worker`` (empty for an unknown or dead worker), oldest assignment first."""
        state = self._workers.get(worker)
        return () if state is None else tuple(state.cameras)

    def cameras(self) -> list[str]:
        """Every known camera."""
        return list(self._cameras)

    def load(self) -> dict[str, int]:
        """Camera count per live worker."""
        return {wid: len(w.cameras) for wid, w in self._workers.items() if w.alive}

    def is_alive(self, worker: str) -> bool:
        state = self._workers.get(worker)
        return state is not None and state.alive

    # ------------------------------------------------------------------------------------------ updates
    def worker_seen(self, worker: str, seq: int, now: float) -> tuple[Seen, list[Move]]:
        """Record a heartbeat of ``worker`` with sequence number ``seq``; a worker that (re)joins takes the
        cameras without a worker and a fair share of the others. Returns what the heartbeat meant and the moves."""
        state = self._workers.get(worker)
        if state is None:
            self._workers[worker] = _Worker(last_seen=now, last_seq=seq)
            return Seen.NEW, self._on_join()
        restarted = seq <= state.last_seq
        state.last_seen, state.last_seq = now, seq
        if state.alive:
            return (Seen.RESTARTED if restarted else Seen.KNOWN), []
        state.alive = True
        return (Seen.RESTARTED if restarted else Seen.REVIVED), self._on_join()

    def camera_seen(self, camera: str, now: float, heartbeat_seq: int | None = None) -> tuple[Seen, list[Move]]:
        """Record a message from ``camera`` (``heartbeat_seq`` for a heartbeat, None for a frame). A new camera is
        assigned to the least-loaded live worker; the returned moves say where (empty when no worker is alive)."""
        state = self._cameras.get(camera)
        if state is None:
            self._cameras[camera] = _Camera(last_seen=now, last_seq=heartbeat_seq)
            return Seen.NEW, self._assign([camera])
        state.last_seen = now
        seen = Seen.KNOWN
        if heartbeat_seq is not None:
            if state.last_seq is not None and heartbeat_seq <= state.last_seq:
                seen = Seen.RESTARTED
            state.last_seq = heartbeat_seq
        return seen, []

    def expire(self, now: float) -> Expired:
        """Declare dead the workers silent for more than ``dead_after_s`` (moving their cameras) and forget the
        cameras silent that long."""
        dead = [wid for wid, w in self._workers.items() if w.alive and now - w.last_seen > self.dead_after_s]
        previous: dict[str, str] = {}
        for wid in dead:
            state = self._workers[wid]
            state.alive = False
            for cam in state.cameras:
                previous[cam] = wid
                self._cameras[cam].worker = None
            state.cameras.clear()
        gone = [cam for cam, c in self._cameras.items() if now - c.last_seen > self.dead_after_s]
        moves = [Move(cam, self._forget_camera(cam) or previous.get(cam), None) for cam in gone]
        orphans = [cam for cam in previous if cam in self._cameras]
        for cam in orphans:
            self._cameras[cam].moved_from = previous[cam]
        assigned = {m.camera: m.new for m in self._assign(orphans)}
        moves += [Move(cam, previous[cam], assigned.get(cam)) for cam in orphans]
        return Expired(tuple(dead), tuple(gone), tuple(moves))

    # ------------------------------------------------------------------------------------------ internals
    def _forget_camera(self, camera: str) -> str | None:
        state = self._cameras.pop(camera)
        if state.worker is not None:
            del self._workers[state.worker].cameras[camera]
        return state.worker

    def _least_loaded(self) -> str | None:
        live = [(len(w.cameras), wid) for wid, w in self._workers.items() if w.alive]
        return min(live)[1] if live else None

    def _set_worker(self, camera: str, worker: str | None) -> Move:
        state = self._cameras[camera]
        old = state.worker
        if old is not None:
            del self._workers[old].cameras[camera]
        state.worker = worker
        if worker is not None:
            self._workers[worker].cameras[camera] = None
        return Move(camera, old, worker)

    def _assign(self, cameras: list[str]) -> list[Move]:
        """Give each camera to the least-loaded live worker (no move when none is alive)."""
        moves = []
        for cam in cameras:
            target = self._least_loaded()
            if target is None:
                break
            moves.append(self._set_worker(cam, target))
        return moves

    def _on_join(self) -> list[Move]:
        """Assign cameras without a worker, then move cameras from the most- to the least-loaded worker while
        their counts differ by more than one, never a camera back to the dead worker it was moved away from."""
        moves = self._assign([cam for cam, c in self._cameras.items() if c.worker is None])
        while True:
            live = [(len(w.cameras), wid) for wid, w in self._workers.items() if w.alive]
            (low, target), (high, source) = min(live), max(live)
            if high - low <= 1:
                return moves
            camera = next((c for c in reversed(self._workers[source].cameras)
                           if self._cameras[c].moved_from != target), None)
            if camera is None:
                return moves
            moves.append(self._set_worker(camera, target))
            self._cameras[camera].moved_from = None
