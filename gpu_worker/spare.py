"""How much of the distant-face work (`gpu_worker.distant`) a worker can afford now: the fine passes and regions use
spare capacity and give way when the worker falls behind, so that they never cost a camera its real time.

The signal is how far behind the worker takes frames up: each frame's age when it is planned over its camera's
usual age (``DecodedFrame.behind_s``, set by the worker service; frames wait mostly in the broker, which holds what
the worker has no credit for). A worker with spare capacity takes a frame up as soon as it comes; one that is behind
lets them queue. The wait is smoothed over frames (WAIT_EMA); at up to ``yield_after_ms`` everything configured is
done, from there the budget and the regions shrink linearly, to none at YIELD_SPAN times that wait (detection as
with the passes off). 0 never yields. Offline runs (eval, bench pipeline) are never behind.
"""

from __future__ import annotations

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
