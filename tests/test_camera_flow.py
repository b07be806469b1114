"""The camera node's flow controller (camera_node/flow.py), the real class, driven over a modelled link.

The link is a FIFO of ``rate`` bytes/s with a small fixed delay, optionally with a token bucket in front (as
`tc ... tbf` shapes it in `argusnet bench link`: frames after a pause go faster than the rate for ``burst``
bytes); the broker at its far end returns one credit per frame as it arrives, with a window of 4
(broker.camera_credits). Frame sizes are real:
every frame is a real 720p picture (arcade.mp4) JPEG-encoded with simplejpeg at the quality and longer side the
controller asks for. Time is simulated (10 ms steps, as the node's loop), so a run of a minute takes a second
or two and its outcome does not depend on the machine's load."""

from __future__ import annotations

import collections
import functools
from dataclasses import dataclass, field

import cv2
import numpy as np
import pytest

from camera_node.capture import downscale, encode_jpeg
from camera_node.config import CameraConfig
from camera_node.flow import LATENCY_BUDGET_S, UTILISATION, FlowController
from shared.protocol import Frame, encode

TICK_S = 0.01
WINDOW = 4
N_FRAMES = 12


@functools.lru_cache(maxsize=1)
def _frames() -> tuple[np.ndarray, ...]:
    from tests.conftest import require_data

    cap = cv2.VideoCapture(str(require_data() / "facenet-pytorch" / "arcade.mp4"))
    out = []
    while len(out) < N_FRAMES * 3:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(cv2.resize(frame, (1280, 720), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
    cap.release()
    return tuple(out[::3])


@functools.lru_cache(maxsize=None)
def wire_bytes(index: int, quality: int, side: int) -> int:
    """Bytes on the wire of frame ``index`` at ``quality`` and ``side``: the real JPEG in a real Frame message."""
    small = downscale(_frames()[index % N_FRAMES], side)
    h, w = small.shape[:2]
    return len(encode(Frame(camera_id="c", seq=index, capture_ts=0.0, send_ts=0.0, width=w, height=h,
                            jpeg=encode_jpeg(small, quality))))


@dataclass
class Run:
    """What a simulated run saw, per frame sent and per step."""

    sent: list[tuple[float, int, int, int, float]] = field(default_factory=list)  # t, bytes, quality, side, fps
    arrived: list[tuple[float, float, float]] = field(default_factory=list)  # arrival, capture, send
    in_flight_excess: list[float] = field(default_factory=list)  # bytes in flight over the bound (several frames)
    settings: list[tuple[float, int, int, float]] = field(default_factory=list)  # changes: t, quality, side, fps
    dropped: int = 0

    def since(self, t0: float) -> "Run":
        return Run([s for s in self.sent if s[0] >= t0], [a for a in self.arrived if a[1] >= t0],
                   self.in_flight_excess, [c for c in self.settings if c[0] >= t0], self.dropped)

    def fps(self, t0: float, t1: float) -> float:
        return sum(1 for a in self.arrived if t0 <= a[0] < t1) / (t1 - t0)

    def p95_ms(self) -> float:
        return float(np.percentile([(arr - cap) * 1000 for arr, cap, _ in self.arrived], 95))


class Link:
    """A FIFO link: a frame starts when it reaches the link and the one before has left, and takes bytes / rate;
    with a ``burst``, tokens saved up while the link idles (up to ``burst`` bytes) carry bytes at once."""

    def __init__(self, rate: float, delay_s: float = 0.002, burst: int = 0) -> None:
        self.rate, self.delay_s, self.burst = rate, delay_s, burst
        self.free_at = 0.0
        self.tokens = float(burst)
        self.arrivals: collections.deque[tuple[float, float, float]] = collections.deque()

    def send(self, now: float, nbytes: int, captured: float) -> None:
        start = max(now + self.delay_s / 2, self.free_at)
        self.tokens = min(self.burst, self.tokens + (start - self.free_at) * self.rate)
        at_once = min(self.tokens, nbytes)
        self.tokens -= at_once
        self.free_at = start + (nbytes - at_once) / self.rate
        self.arrivals.append((self.free_at + self.delay_s / 2, captured, now))


def simulate(flow: FlowController, link: Link, seconds: float, run: Run | None = None, t0: float = 0.0,
             queue_len: int = 2) -> Run:
    """Capture on the flow's fps grid, send as the node does (credits, the in-flight bound), credit on arrival."""
    run = run or Run()
    queue: collections.deque[tuple[int, float, int, int]] = collections.deque()  # index, captured, quality, side
    credits, next_due, index, offered = WINDOW, t0, 0, 0
    flow.credited(t0, WINDOW)  # the broker's first grant: its whole window, before any frame
    last = (flow.quality, flow.max_side, flow.fps)
    for step in range(int(seconds / TICK_S)):
        now = t0 + step * TICK_S
        while link.arrivals and link.arrivals[0][0] <= now:
            run.arrived.append(link.arrivals.popleft())
            credits += 1
            flow.credited(now, 1)
        if now >= next_due:
            next_due = max(next_due + 1.0 / flow.fps, now)
            side = min(flow.max_side, 1280)
            queue.append((index, now, flow.quality, side))
            index, offered = index + 1, offered + 1
            if len(queue) > queue_len:
                queue.popleft()
                run.dropped += 1
        flow.update(now, offered)
        while queue and credits > 0:
            frame, captured, quality, side = queue[0]
            nbytes = wire_bytes(frame, quality, side)
            if not flow.may_send(nbytes):
                break
            queue.popleft()
            credits -= 1
            link.send(now, nbytes, captured)
            flow.sent(now, nbytes, quality, side, 1280)
            run.sent.append((now, nbytes, quality, side, flow.fps))
            if len(flow.in_flight) > 1:
                run.in_flight_excess.append(flow.in_flight_bytes - nbytes - flow.in_flight_limit())
        if queue and credits <= 0 and flow.may_send(0):
            flow.credit_starved(now)
        if (flow.quality, flow.max_side, flow.fps) != last:
            last = (flow.quality, flow.max_side, flow.fps)
            run.settings.append((now, *last))
    return run


MBIT = 1e6 / 8


def camera(**settings) -> CameraConfig:
    return CameraConfig(id="c", source="demo", **{"fps": 10.0, "max_side": 1280, "jpeg_quality": 85, **settings})


def test_a_4_mbit_link_lowers_quality_then_resolution_keeps_the_rate_and_bounds_what_is_in_flight():
    flow = FlowController(camera())
    run = simulate(flow, Link(4 * MBIT), 40.0)
    # the order: quality reaches its floor before the resolution moves, the resolution before the frame rate
    first_side = next(t for t, q, side, fps in run.settings if side < 1280)
    assert all(q == 50 for t, q, side, fps in run.settings if t >= first_side)
    assert all(fps == 10.0 for t, q, side, fps in run.settings), "the link carries 10 fps at a smaller size"
    assert 640 <= flow.max_side < 1280 and flow.quality == 50
    late = run.since(20.0)
    assert late.fps(20.0, 40.0) >= 9.0 and late.p95_ms() <= 250.0
    # the bytes the controller sent in the last 20 s stay within its utilisation target of the real rate
    assert sum(s[1] for s in late.sent) / 20.0 <= UTILISATION * 4 * MBIT * 1.1
    # never more in flight than rate x budget, beyond the one frame that may always go
    assert max(run.in_flight_excess, default=0.0) <= 0.0
    assert len(late.settings) <= 2, f"settings swing on a steady link: {late.settings}"


def test_a_2_mbit_link_ends_at_the_smallest_frames_and_the_rate_the_link_carries():
    flow = FlowController(camera(min_fps=1.0))
    run = simulate(flow, Link(2 * MBIT), 40.0)
    assert flow.quality == 50 and flow.max_side == 640
    first_fps = next(t for t, q, side, fps in run.settings if fps < 10.0)
    assert all(side == 640 for t, q, side, fps in run.settings if t >= first_fps), "fps last"
    late = run.since(25.0)
    assert 5.0 <= late.fps(25.0, 40.0) < 10.0 and late.p95_ms() <= 400.0
    assert sum(s[1] for s in late.sent) / 15.0 <= 0.9 * 2 * MBIT


def test_a_faster_link_brings_back_rate_resolution_and_quality_in_that_order():
    flow = FlowController(camera(min_fps=1.0))
    link = Link(1.5 * MBIT)
    run = simulate(flow, link, 30.0)
    assert flow.fps < 10.0 and flow.max_side == 640 and flow.quality == 50
    link.rate = 100 * MBIT
    up = simulate(flow, link, 60.0, Run(), t0=30.0 + TICK_S)
    assert (flow.fps, flow.max_side, flow.quality) == (10.0, 1280, 85)
    ups = up.settings
    back_to_fps = next(t for t, q, side, fps in ups if fps == 10.0)
    back_to_side = next(t for t, q, side, fps in ups if side == 1280)
    assert back_to_fps < back_to_side < next(t for t, q, side, fps in ups if q == 85)
    gaps = np.diff([t for t, *_ in ups])
    assert gaps.min() >= 3.0 - TICK_S, "each step up is held for UP_HOLD_S"
    assert run.dropped + up.dropped < 0.1 * len(run.sent + up.sent)


def test_a_token_bucket_link_that_reads_faster_than_it_is_does_not_swing_the_settings():
    """tbf's burst makes frames after a pause arrive faster than the rate: the measured rate is too high (here
    1.8x), every step up the link then cannot carry is taken back, and the hold before the next one doubles."""
    flow = FlowController(camera(min_fps=1.0))
    run = simulate(flow, Link(2 * MBIT, burst=16 * 1024), 90.0)
    assert flow.link_rate() > 1.5 * 2 * MBIT
    late = run.since(30.0)
    assert len(late.settings) <= 4, f"settings swing: {late.settings}"
    assert late.fps(30.0, 90.0) >= 5.0 and late.p95_ms() <= 400.0 and flow.hold_s > 3.0


def test_an_unshaped_link_keeps_full_quality_resolution_and_rate():
    flow = FlowController(camera())
    run = simulate(flow, Link(100 * MBIT), 20.0)
    assert run.settings == [] and (flow.quality, flow.max_side, flow.fps) == (85, 1280, 10.0)
    assert run.since(5.0).fps(5.0, 20.0) >= 9.5
    assert flow.link_rate() > 50 * MBIT


def test_the_in_flight_bound_follows_the_measured_rate_and_a_new_broker_forgets_it():
    flow = FlowController(camera())
    assert flow.link_rate() is None and flow.may_send(10**6)  # one frame may always go
    flow.credited(0.0, WINDOW)  # a first window times nothing: nothing is in flight
    assert flow.link_rate() is None
    flow.sent(0.0, 100_000, 85, 1280, 1280)
    assert not flow.may_send(100_000)  # the initial bound (128 KiB) until the rate is known
    flow.credited(0.2, 1)  # 100 kB in 0.2 s
    assert flow.link_rate() == pytest.approx(500_000) and flow.in_flight_limit() == pytest.approx(
        500_000 * LATENCY_BUDGET_S)
    flow.sent(1.0, 60_000, 85, 1280, 1280)
    flow.sent(1.0, 60_000, 85, 1280, 1280)  # sent together: the second waited for the first
    flow.credited(1.1, 1)
    flow.credited(1.2, 1)
    assert flow.link_rate() == pytest.approx(220_000 / 0.4)
    flow.sent(2.0, 60_000, 85, 1280, 1280)
    flow.reset()  # failover or a restarted broker: its frames in flight are gone, the link may be another
    assert flow.in_flight_bytes == 0 and flow.link_rate() is None


def test_no_credit_from_the_broker_lowers_the_rate_not_the_quality_and_it_recovers():
    flow = FlowController(camera(min_fps=2.0))
    now = 0.0
    for _ in range(40):
        now += 0.6
        flow.credit_starved(now)
    assert flow.fps == 2.0 and flow.quality == 85 and flow.max_side == 1280
    run = simulate(flow, Link(100 * MBIT), 40.0, t0=now)
    assert flow.fps == 10.0 and run.settings[0][0] >= now + 3.0 - TICK_S
