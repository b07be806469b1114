"""How much of the distant-face work (`gpu_worker.distant`) a worker can afford now: the fine passes and regions use
spare capacity and give way when the worker falls behind, so that they never cost a camera its real time.

The signal is how far behind the worker is (``DecodedFrame.behind_s``, set by the worker service): the larger of a
frame's age over its camera's usual age when it is taken up (``CameraLateness``: frames that waited in the broker,
which holds what the worker has no credit for, or in the inbox) and how much longer than usual the latest finished
frame took from its arrival to its end (``UsualWait``, the worker's own clock: frames that waited in the detection
pool or for the processing thread, where a backlog builds while frames are still taken up at once; being one
floor for the whole worker, it holds from a new camera's first frame). A worker with spare capacity finishes a
frame soon after it comes; one that is behind lets them queue. The wait is smoothed over frames (WAIT_EMA); at up to
``yield_after_ms`` everything configured is done, from there the budget and the regions shrink linearly, to none at
YIELD_SPAN times that wait (detection as with the passes off). 0 never yields. Offline runs (eval, bench pipeline)
are never behind.
"""

from __future__ import annotations

AGE_FLOOR_RISE_S = 0.0001  # a camera's usual age may rise this much a frame (a lasting 200 ms backlog: seen minutes)
AGE_STEP_S = 1.0  # an age this far over the usual is a camera clock stepped forward: the usual age jumps to it
WAIT_FLOOR_RISE_PER_S = 0.001  # a worker's usual arrival -> finish time may rise this much a second
WAIT_EMA = 0.1  # weight of the latest frame's wait in the moving average
YIELD_SPAN = 3.0  # no distant-face work at all once the average wait reaches this many times yield_after_ms


class SpareCapacity:
    """The share (0..1) of the configured distant-face work to do now, from the frames' waits."""

    def __init__(self, yield_after_ms: float) -> None:
        self.low_s = yield_after_ms / 1000.0
        self.wait_s = 0.0

    def observe(self, behind_s: float) -> float:
        """Fold in how far behind one frame was taken up (seconds); the share to do."""
        self.wait_s += WAIT_EMA * (max(0.0, behind_s) - self.wait_s)
        return self.share

    @property
    def share(self) -> float:
        if self.low_s <= 0.0 or self.wait_s <= self.low_s:
            return 1.0
        return max(0.0, 1.0 - (self.wait_s - self.low_s) / ((YIELD_SPAN - 1.0) * self.low_s))


class CameraLateness:
    """How late frames are at one point of a worker, per camera, over that camera's usual age there: the lowest age
    seen, a floor that rises by AGE_FLOOR_RISE_S a frame and jumps to an age more than AGE_STEP_S over it (a camera
    clock stepped forward; a backlog that large has its frames dropped as stale within a second anyway). Comparing
    a camera's ages with its own floor makes the signal immune to clock offsets between hosts."""

    def __init__(self) -> None:
        self._floor: dict[str, float] = {}

    def late(self, camera: str, age_s: float) -> float:
        """Fold in one frame of ``camera`` ``age_s`` seconds after its capture; how late it is (seconds, >= 0)."""
        floor = min(age_s, self._floor.get(camera, age_s) + AGE_FLOOR_RISE_S)
        floor = age_s if age_s - floor > AGE_STEP_S else floor
        self._floor[camera] = floor
        return age_s - floor


class UsualWait:
    """How much longer than usual a worker took over a frame, arrival to finish (its own clock): over the shortest
    such time seen, a floor that rises by WAIT_FLOOR_RISE_PER_S a second (a lasting 200 ms backlog is seen for
    minutes; a worker whose work got slower for good is followed)."""

    def __init__(self) -> None:
        self._floor: float | None = None
        self._at = 0.0

    def late(self, wait_s: float, now: float) -> float:
        """Fold in one frame that took ``wait_s`` from arrival to finish, finished at ``now``; how late it is."""
        if self._floor is None:
            floor = wait_s
        else:
            floor = min(wait_s, self._floor + WAIT_FLOOR_RISE_PER_S * max(0.0, now - self._at))
        self._floor, self._at = floor, now
        return wait_s - floor
