"""Camera -> worker assignment and liveness bookkeeping for the broker: pure logic, no sockets, no clock.

Every camera is assigned to exactly one live worker, so its frames and its tracker state stay on one worker. A
worker silent for ``dead_after_s`` is dead: its cameras move to the live workers at once. When a worker joins,
cameras without a worker are assigned, then cameras move from the most-loaded worker to the least-loaded one while
their camera counts differ by more than one. Assignment is sticky: the cameras moved away from a worker declared
dead never go straight back to it when it comes back (the same process, revived after a pause): the healthy
workers hold the tracks of those people now, and moving them back would split each person into two tracks. A
revived worker rebalances like a joining one, but only with other cameras. Cameras silent for ``dead_after_s``
are forgotten (a camera heartbeats every interval).

Brokers share one assignment through the workers' claims. Workers serve every broker, and each worker's heartbeat
lists the cameras it processed frames of in the last few seconds (``gpu_worker.served``: SERVED_S, cleared when the
worker was paused long enough to be declared dead, since it then drops every track it held; at most MAX_CAMERAS).
Whenever this broker must choose a worker for a camera that has none here (a camera it has not seen: a new one or
one failing over from another broker; one whose worker died; one left unassigned while no worker was alive), it
prefers a live worker that claims the camera (if several do, which happens only within SERVED_S of a move, the least
loaded of them), but never a worker it was moved away from when that worker was declared dead (the sticky rule);
with no claimant, the least-loaded live worker. So a camera that fails over to the second broker lands on the worker
that holds its tracks. Claims never move a camera that has a live worker here, so two brokers that disagree cannot
drive a camera back and forth: every move is caused by an event (a camera or worker appearing, a worker dying or
joining, or finishing a join's rebalance), never by a claim alone, and a claim only copies a decision already
made. Live tracks keep a camera where it is when a worker joins: each worker's heartbeat also lists the cameras it
holds a live track of (``Heartbeat.tracking``), and the rebalance never moves one of those, so a restarted (or new)
worker never takes a camera where a person is mid-walk (one walk would become two tracks); it takes cameras without
a worker, new cameras, and idle cameras at once, and a tracked camera at a later heartbeat of its worker, once its
tracks ended. The alternative,
rendezvous hashing over the live workers, needs no message but is not sticky: a revived worker would get its hashed cameras
straight back (two tracks per person), every worker-set change moves cameras at once, and two brokers that see
different live workers for a moment disagree; its balance is only statistical.

Restarts are told apart from hiccups by heartbeat sequence numbers: a sender whose ``seq`` goes backwards is a new
process (its credits start afresh), one that continues its sequence after being declared dead is the same process
come back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Iterable

from shared.zmq_defaults import DEAD_AFTER_S


class Seen(Enum):
    """What a message told the routing table about its sender."""

    NEW = "new"              # never heard before (or forgotten)
    RESTARTED = "restarted"  # heard before, but its heartbeat sequence went backwards: a new process
    REVIVED = "revived"      # a worker declared dead that continued its sequence: the same process came back
    KNOWN = "known"          # alive and already known


@dataclass(frozen=True, slots=True)
class Move:
    """Camera ``camera`` changed worker from ``old`` to ``new`` (None: no worker); ``claimed``: ``new`` was chosen
    because it claims the camera (it served it lately, for this broker or another)."""

    camera: str
    old: str | None
    new: str | None
    claimed: bool = False


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
    claims: frozenset[str] = frozenset()  # the cameras its latest heartbeat says it served lately
    tracking: frozenset[str] = frozenset()  # ... and those it holds a live track of now (never moved away)


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
        self._unbalanced = False  # a join left cameras to move that were being tracked: retried at each heartbeat

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

    def claims_of(self, worker: str) -> frozenset[str]:
        """The cameras ``worker`` claimed in its latest heartbeat (empty for an unknown worker)."""
        state = self._workers.get(worker)
        return frozenset() if state is None else state.claims

    # ------------------------------------------------------------------------------------------ updates
    def worker_seen(self, worker: str, seq: int, now: float, claims: Iterable[str] = (),
                    tracking: Iterable[str] = ()) -> tuple[Seen, list[Move]]:
        """Record a heartbeat of ``worker`` with sequence number ``seq``, the cameras it ``claims`` (served
        lately) and those it is ``tracking`` (holds a live track of); a worker that (re)joins takes the cameras
        without a worker and a fair share of the others. Returns what the heartbeat meant and the moves. Claims
        are kept for later choices; a heartbeat moves cameras only to finish a join's rebalance (a camera that was
        being tracked then moves once its worker holds no live track of it)."""
        state = self._workers.get(worker)
        if state is None:
            self._workers[worker] = _Worker(last_seen=now, last_seq=seq, claims=frozenset(claims),
                                            tracking=frozenset(tracking))
            return Seen.NEW, self._on_join()
        restarted = seq <= state.last_seq
        state.last_seen, state.last_seq = now, seq
        if claims or state.claims:
            state.claims = frozenset(claims)
        state.tracking = frozenset(tracking)
        if state.alive:
            return (Seen.RESTARTED if restarted else Seen.KNOWN), (self._rebalance() if self._unbalanced else [])
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
        assigned = {m.camera: m for m in self._assign(orphans)}
        for cam in orphans:
            move = assigned.get(cam)
            moves.append(Move(cam, previous[cam], None if move is None else move.new,
                              claimed=move is not None and move.claimed))
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

    def _claimant(self, camera: str) -> str | None:
        """The least-loaded live worker that claims ``camera``, never the dead worker it was moved away from."""
        avoid = self._cameras[camera].moved_from
        claiming = [(len(w.cameras), wid) for wid, w in self._workers.items()
                    if w.alive and camera in w.claims and wid != avoid]
        return min(claiming)[1] if claiming else None

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
        """Give each camera to a live worker that claims it, else to the least-loaded live worker (no move when
        none is alive)."""
        moves = []
        for cam in cameras:
            claimant = self._claimant(cam)
            target = claimant or self._least_loaded()
            if target is None:
                break
            move = self._set_worker(cam, target)
            moves.append(Move(move.camera, move.old, move.new, claimed=claimant is not None))
        return moves

    def _on_join(self) -> list[Move]:
        """Assign cameras without a worker, then rebalance (``_rebalance``)."""
        return self._assign([cam for cam, c in self._cameras.items() if c.worker is None]) + self._rebalance()

    def _rebalance(self) -> list[Move]:
        """Move cameras from the most- to the least-loaded worker while their counts differ by more than one,
        never a camera back to the dead worker it was moved away from, and never a camera its worker holds a live
        track of (a person mid-walk would become two tracks): such a camera moves at a later heartbeat, once its
        track ended (``_unbalanced`` until the counts are even)."""
        moves: list[Move] = []
        while True:
            live = [(len(w.cameras), wid) for wid, w in self._workers.items() if w.alive]
            if not live:
                self._unbalanced = False
                return moves
            (low, target), (high, source) = min(live), max(live)
            if high - low <= 1:
                self._unbalanced = False
                return moves
            busy = self._workers[source].tracking
            camera = next((c for c in reversed(self._workers[source].cameras)
                           if self._cameras[c].moved_from != target and c not in busy), None)
            if camera is None:
                self._unbalanced = any(c in busy for c in self._workers[source].cameras)
                return moves
            moves.append(self._set_worker(camera, target))
            self._cameras[camera].moved_from = None
