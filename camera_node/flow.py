"""Flow control on the node: send what the link carries, at the best quality that fits, rather than queue.

What is measured: every frame sent is timed until the broker's credit for it comes back (the broker returns a
camera's credits in the order its frames arrive, so the n credits of a grant belong to the n oldest frames in
flight). A frame's transfer time is its credit's arrival minus the later of its sending and the previous credit
(a frame sent while the one before was still on its way waited for it); the link's rate is the bytes of the
last ``RATE_SAMPLES`` frames over their transfer times. What it drives, from the broker's credits down:

- bytes in flight (sent, not yet credited) stay under rate x ``LATENCY_BUDGET_S`` (one frame may always go;
  ``INITIAL_IN_FLIGHT_BYTES`` until the rate is known): frames wait on the node, where the newest replaces the
  oldest, not in the TCP send buffer, where they would all arrive late;
- the frames' byte rate (their size at the current settings x the rate frames are offered) stays under
  ``UTILISATION`` of the link's rate. Over it, the JPEG quality comes down first (``QUALITY_STEP`` at a time, to
  ``min_jpeg_quality``), then the resolution (the longer side x ``SIDE_STEP``, to ``min_max_side``), then the
  frame rate (to what the link carries at the smallest settings, not below ``min_fps``); several steps at once
  when the excess is large, at most one decision per ``STEP_S``;
- back up in the reverse order (frame rate, resolution, quality), one step at a time, only once the next step's
  predicted byte rate has fitted within ``UP_MARGIN`` of that budget for the hold time and no step down happened
  for as long: ``UP_HOLD_S``, doubled (up to ``MAX_HOLD_S``) each time a step up has to be taken back within two
  hold times, and back to ``UP_HOLD_S`` after ``CALM_S`` without a step down (the hysteresis that keeps a link
  near a step's edge from swinging);
- no credit while the bytes in flight are under their bound is the broker (or its workers) holding back, not the
  link: then the frame rate comes down (x ``FPS_DOWN`` per ``STEP_S``), as smaller frames would not help.

Limits: a link's round-trip time counts as transfer time, so a link with a long round trip (tens of ms) reads as
slower than it is and gets smaller frames than it could carry; on a LAN or a shaped Wi-Fi link it is a few ms.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from camera_node.config import CameraConfig

STEP_S = 0.5  # at most one decision this often
UP_HOLD_S = 3.0  # a step up needs this long with room, and this long since the last step down
MAX_HOLD_S = 30.0  # ... doubled after each step up taken back soon, up to this
CALM_S = 60.0  # ... and back to UP_HOLD_S after this long without a step down
LATENCY_BUDGET_S = 0.25  # bytes in flight <= link rate x this
INITIAL_IN_FLIGHT_BYTES = 128 * 1024  # until the link's rate is known (one frame may always go)
UTILISATION = 0.75  # the frames' byte rate stays under this share of the link's rate
UP_MARGIN = 0.8  # a step up only when its predicted byte rate is under this share of that budget
RATE_SAMPLES = 10  # frames the link's rate is measured over
SIZE_SAMPLES = 8  # frames the JPEG size at the current settings is averaged over
MIN_SIZE_SAMPLES = 2  # frames at new settings before the next decision
OFFERED_WINDOW_S = 2.0  # the rate frames are offered at is measured over this long
MAX_STEPS_DOWN = 4  # quality / resolution steps in one decision
QUALITY_STEP = 5
SIDE_STEP = 0.8  # the longer side is multiplied by this per resolution step
FPS_DOWN, FPS_UP = 0.8, 1.1
# predicted JPEG size ratios of one step (measured on 720p street scenes: q85 -> q50 is about 0.55 in 7 steps of
# 5, and a 0.8 side step about 0.7); a step's real effect is measured before the next decision
QUALITY_STEP_RATIO = 0.92
SIDE_STEP_RATIO = 0.7


@dataclass(frozen=True)
class InFlight:
    """A frame sent and not yet credited: when (monotonic) and its bytes on the wire."""

    sent_at: float
    nbytes: int


class FlowController:
    """The node's current settings (``fps``, ``quality``, ``max_side``), its view of the link (``link_rate()``,
    ``in_flight_bytes``) and the policy above. Fed by the sender: ``sent``, ``credited``, ``update``,
    ``credit_starved`` and ``reset``; all times are monotonic seconds. Not thread-safe: the sender calls it; the
    capture thread only reads the three settings."""

    def __init__(self, cfg: CameraConfig) -> None:
        self.cfg = cfg
        self.fps = cfg.fps
        self.quality = cfg.jpeg_quality
        self.max_side = cfg.max_side
        self.min_quality = min(cfg.min_jpeg_quality, cfg.jpeg_quality)
        self.min_side = min(cfg.min_max_side, cfg.max_side)
        self.min_fps = min(cfg.min_fps, cfg.fps)
        self.source_side: int | None = None  # the longer side of the source's frames (from the frames sent)
        self.in_flight: collections.deque[InFlight] = collections.deque()
        self.in_flight_bytes = 0
        self._rate: collections.deque[tuple[int, float]] = collections.deque(maxlen=RATE_SAMPLES)
        self._last_credit = float("-inf")
        self._sizes: collections.deque[int] = collections.deque(maxlen=SIZE_SAMPLES)
        self._offered: collections.deque[tuple[float, int]] = collections.deque()
        self._last_decision = float("-inf")
        self._last_down = float("-inf")
        self._last_up = float("-inf")
        self.hold_s = UP_HOLD_S
        self._room_since: float | None = None

    # ------------------------------------------------------------------------------------------ measurements
    def link_rate(self) -> float | None:
        """The link's rate (bytes/s) over the last credited frames; None before the first."""
        if not self._rate:
            return None
        return sum(n for n, _ in self._rate) / max(sum(t for _, t in self._rate), 1e-6)

    def in_flight_limit(self) -> float:
        rate = self.link_rate()
        return INITIAL_IN_FLIGHT_BYTES if rate is None else rate * LATENCY_BUDGET_S

    def may_send(self, nbytes: int) -> bool:
        """Whether a frame of ``nbytes`` may go now (credits aside): nothing in flight, or room under the bound."""
        return not self.in_flight or self.in_flight_bytes + nbytes <= self.in_flight_limit()

    def sent(self, now: float, nbytes: int, quality: int, side: int, source_side: int) -> None:
        """A frame of ``nbytes`` went out, encoded at ``quality`` with ``side`` its longer side (``source_side``
        before downscaling). Only frames made at the current settings measure their JPEG size."""
        self.in_flight.append(InFlight(now, nbytes))
        self.in_flight_bytes += nbytes
        self.source_side = source_side
        if quality == self.quality and side == min(self.max_side, source_side):
            self._sizes.append(nbytes)

    def credited(self, now: float, n: int) -> None:
        """The broker granted ``n`` credits: the ``n`` oldest frames in flight arrived (grants beyond the frames
        in flight, as a new broker's first window, time nothing)."""
        for _ in range(min(n, len(self.in_flight))):
            frame = self.in_flight.popleft()
            self.in_flight_bytes -= frame.nbytes
            started = max(frame.sent_at, self._last_credit)
            self._rate.append((frame.nbytes, max(now - started, 1e-4)))
            self._last_credit = now

    def reset(self) -> None:
        """A new broker (or none): frames in flight are gone with the old one, and the link may be another."""
        self.in_flight.clear()
        self.in_flight_bytes = 0
        self._rate.clear()
        self._last_credit = float("-inf")

    def _offered_fps(self, now: float, offered_total: int) -> float:
        """Frames offered per second over the last OFFERED_WINDOW_S (capped at ``fps``); ``fps`` until measured."""
        self._offered.append((now, offered_total))
        while len(self._offered) > 2 and now - self._offered[1][0] >= OFFERED_WINDOW_S:
            self._offered.popleft()
        t0, n0 = self._offered[0]
        if now - t0 < OFFERED_WINDOW_S / 2:
            return self.fps
        return min(self.fps, (offered_total - n0) / (now - t0))

    def _sides(self) -> list[int]:
        """The resolution ladder, largest first: the longer side frames come out at (the source's own when it is
        smaller than ``max_side``), x SIDE_STEP per step, ending at ``min_max_side``."""
        top = self.cfg.max_side if self.source_side is None else min(self.cfg.max_side, self.source_side)
        sides = [top]
        while round(sides[-1] * SIDE_STEP) > self.min_side:
            sides.append(round(sides[-1] * SIDE_STEP))
        return sides + [self.min_side] if sides[-1] > self.min_side else sides

    def _side_now(self) -> int:
        """The longer side frames come out at now."""
        return self.max_side if self.source_side is None else min(self.max_side, self.source_side)

    # ------------------------------------------------------------------------------------------ decisions
    def update(self, now: float, offered_total: int) -> None:
        """Decide (at most once per STEP_S); ``offered_total``: frames the capture loop has offered so far."""
        offered = self._offered_fps(now, offered_total)
        rate = self.link_rate()
        if rate is None or len(self._sizes) < MIN_SIZE_SAMPLES or now - self._last_decision < STEP_S:
            return
        self._last_decision = now
        if now - self._last_down >= CALM_S:
            self.hold_s = UP_HOLD_S
        size = sum(self._sizes) / len(self._sizes)
        budget = UTILISATION * rate
        demand = size * max(offered, self.min_fps)
        if demand > budget:
            self._down(now, budget, demand, size)
        else:
            self._maybe_up(now, budget, demand, size)

    def credit_starved(self, now: float) -> None:
        """A frame waits, the bytes in flight are under their bound, and no credit is held: slow down."""
        if now - self._last_decision < STEP_S:
            return
        self._last_decision = self._last_down = now
        self._room_since = None
        self.fps = max(self.min_fps, self.fps * FPS_DOWN)

    def _down(self, now: float, budget: float, demand: float, size: float) -> None:
        predicted, steps = demand, 0
        while predicted > budget and steps < MAX_STEPS_DOWN:
            ratio = self._step_down()
            if ratio is None:
                break
            predicted *= ratio
            steps += 1
        if steps == 0:  # quality and resolution at their floors: the frame rate the link carries at this size
            self.fps = max(self.min_fps, min(self.fps, budget / size))
        if now - self._last_up < 2 * self.hold_s:  # the last step up did not hold: wait longer for the next
            self.hold_s = min(MAX_HOLD_S, 2 * self.hold_s)
        self._last_down = now
        self._room_since = None

    def _step_down(self) -> float | None:
        """One step down (quality, else resolution); its predicted size ratio, or None at the floor."""
        if self.quality > self.min_quality:
            self.quality = max(self.min_quality, self.quality - QUALITY_STEP)
            self._sizes.clear()
            return QUALITY_STEP_RATIO
        smaller = [side for side in self._sides() if side < self._side_now()]
        if smaller:
            self.max_side = smaller[0]
            self._sizes.clear()
            return SIDE_STEP_RATIO
        return None

    def _maybe_up(self, now: float, budget: float, demand: float, size: float) -> None:
        ratio = self._up_ratio()
        if ratio is None or demand * ratio > UP_MARGIN * budget:
            self._room_since = None
            return
        if self._room_since is None:
            self._room_since = now
        if now - self._room_since >= self.hold_s and now - self._last_down >= self.hold_s:
            self._step_up(budget, size)
            self._last_up = now
            self._room_since = None  # each step up is held for again

    def _up_ratio(self) -> float | None:
        """The predicted byte-rate ratio of the next step up, or None at the top."""
        if self.fps < self.cfg.fps:
            return min(self.cfg.fps, self.fps * FPS_UP) / self.fps
        if self._side_now() < self._sides()[0]:
            return 1.0 / SIDE_STEP_RATIO
        if self.quality < self.cfg.jpeg_quality:
            return 1.0 / QUALITY_STEP_RATIO
        return None

    def _step_up(self, budget: float, size: float) -> None:
        if self.fps < self.cfg.fps:  # straight to the rate that fits (within the margin), at least one step
            fits = UP_MARGIN * budget / max(size, 1.0)
            self.fps = min(self.cfg.fps, max(self.fps * FPS_UP, fits))
            return
        self._sizes.clear()
        sides = self._sides()
        if self._side_now() < sides[0]:
            larger = [side for side in sides if side > self._side_now()]
            self.max_side = self.cfg.max_side if larger[-1] == sides[0] else larger[-1]
            return
        self.quality = min(self.cfg.jpeg_quality, self.quality + QUALITY_STEP)
