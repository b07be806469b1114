"""The camera node's parts: the demo source (a real detector finds the face where the source says it is), the
file source, the motion gate and the drop-oldest queue (flow control: tests/test_camera_flow.py); and `argusnet
camera` stopping on SIGINT."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq

from camera_node.base import Captured, SourceError
from camera_node.capture import CapturedFrame, FrameQueue, MotionGate, downscale
from camera_node.config import CameraConfig
from camera_node.demo import PERIOD_S, render
from camera_node.sources import FileSource, open_source
from shared.protocol import Frame, Heartbeat, decode, encode
from shared.types import iou_matrix
from tests.processes import REPO


def test_demo_face_is_found_where_the_source_draws_it_and_leaves_and_returns(engine):
    visible_found, absent = 0, 0
    for t in np.arange(0, 2 * PERIOD_S, 0.5):
        image, pose = render(float(t))
        faces = engine.detector.detect([image])[0]
        if pose.face_visible:
            best = iou_matrix(np.array([pose.face_box], np.float32), faces.boxes).max() if len(faces) else 0.0
            visible_found += int(best >= 0.5)
        elif pose.face_box == (0.0, 0.0, 0.0, 0.0):
            absent += 1
            assert len(faces) == 0
    assert visible_found >= 25 and absent >= 6


def test_file_source_loops_and_ends(data_dir):
    arcade = data_dir / "facenet-pytorch" / "arcade.mp4"
    once = FileSource(arcade, loop=False, pace=False)
    frames = 0
    while once.read() is not None:
        frames += 1
    assert frames == 105 and once.ended
    looping = open_source(CameraConfig(id="x", source=str(arcade), loop=True, pace=False))
    assert all(looping.read() is not None for _ in range(130)) and not looping.ended
    looping.close()


def test_paced_file_source_follows_real_time(data_dir):
    source = FileSource(data_dir / "facenet-pytorch" / "arcade.mp4", loop=False, pace=True)
    start = time.monotonic()
    for _ in range(10):
        assert source.read() is not None
    assert time.monotonic() - start >= 9 / 25 * 0.9


def test_queue_drops_oldest_and_motion_gate_keeps_alive():
    q = FrameQueue(2)
    items = [CapturedFrame(i, 0.0, b"\xff\xd8", 0.0, 2, 2, 85, 2) for i in range(3)]
    assert q.put(items[0]) is None and q.put(items[1]) is None
    assert q.put(items[2]).seq == 0 and [q.get().seq, q.get().seq] == [1, 2] and q.get() is None
    gate = MotionGate(threshold=2.0, keepalive_s=5.0)
    still = np.full((480, 640, 3), 100, np.uint8)
    assert gate.passes(still, 0.0) and not gate.passes(still, 1.0) and gate.passes(still, 5.5)
    moved = still.copy()
    moved[100:300, 100:300] = 200
    assert gate.passes(moved, 6.0)
    assert downscale(still, 320).shape == (240, 320, 3) and downscale(still, 1280) is still


def test_camera_command_sends_credited_frames_and_stops_on_sigint(tmp_path):
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-m", "argusnet", "camera", "--source", "demo", "--id", "t1",
                             "--broker", f"tcp://127.0.0.1:{port}", "--fps", "10", "--metrics-port", "0"],
                            cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        frames, identity, beats = [], None, 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(frames) < 3:
            if not router.poll(200):
                continue
            identity, data = router.recv_multipart()
            msg = decode(data, 1 << 24)
            if isinstance(msg, Heartbeat):  # answer every heartbeat (a silent broker is dead); grant 3 frames once
                beats += 1
                grant = Heartbeat(sender="test-broker", role="broker", seq=beats, ts=time.time(),
                                  credits=3 if beats == 1 else 0, cameras=())
                router.send_multipart([identity, encode(grant)])
            elif isinstance(msg, Frame):
                frames.append(msg)
        assert identity == b"cam:t1" and len(frames) == 3
        assert [f.seq for f in frames] == sorted(f.seq for f in frames) and frames[0].jpeg[:2] == b"\xff\xd8"
        time.sleep(1.0)  # no more credits: no more frames
        while router.poll(50):
            assert not isinstance(decode(router.recv_multipart()[1], 1 << 24), Frame)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        assert '"sent": 3' in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        router.close(0)


def test_stream_source_reads_an_http_url(tmp_path):
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    import cv2

    from camera_node.sources import StreamSource

    writer = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (960, 540))
    for i in range(20):
        writer.write(cv2.cvtColor(render(i / 10)[0], cv2.COLOR_RGB2BGR))
    writer.release()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        source = open_source(CameraConfig(id="s", source=f"http://127.0.0.1:{httpd.server_address[1]}/clip.avi"))
        assert isinstance(source, StreamSource) and source.live
        frames = [source.read() for _ in range(5)]
        assert all(f is not None and f.image.shape == (540, 960, 3) for f in frames)
        source.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
    with pytest.raises(SourceError, match=r"cannot connect to 127\.0\.0\.1:1 \(Connection refused\)"):
        StreamSource("http://127.0.0.1:1/none.avi")


def test_lost_source_is_reopened_with_backoff_and_capture_goes_on(tmp_path, monkeypatch):
    import shutil
    import threading

    import camera_node.capture as capture
    from camera_node.capture import CaptureLoop

    monkeypatch.setattr(capture, "REOPEN_BACKOFF_S", (0.05,))
    clip = tmp_path / "later.avi"
    cfg = CameraConfig(id="r", source=str(clip), loop=True, pace=False, fps=50)
    counts: dict[str, int] = {}
    queue = FrameQueue(2)
    loop = CaptureLoop(cfg, lambda: open_source(cfg), queue, lambda: 50.0,
                       lambda outcome: counts.__setitem__(outcome, counts.get(outcome, 0) + 1))
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    time.sleep(0.3)  # the file does not exist yet: the loop keeps retrying
    assert thread.is_alive() and counts.get("captured", 0) == 0
    import cv2

    writer = cv2.VideoWriter(str(tmp_path / "tmp.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for i in range(10):
        writer.write(np.full((240, 320, 3), 20 * i, np.uint8))
    writer.release()
    shutil.move(tmp_path / "tmp.avi", clip)
    try:
        assert wait_for(lambda: counts.get("captured", 0) >= 5)
        assert counts.get("reopened", 0) == 1 and len(queue) <= 2
    finally:
        stop.set()
        thread.join(timeout=5)


class FlakySource:
    """A pull source whose every 5th frame cannot be delivered (as `to_rgb` refuses a frame of the wrong shape)."""

    live, ended = False, False

    def __init__(self, reads: list[int]) -> None:
        self.reads = reads

    def read(self) -> Captured:
        self.reads.append(1)
        if len(self.reads) % 5 == 0:
            raise SourceError("frame 4 of the stream has shape (240, 320, 4), expected (H, W, 3)")
        return Captured(np.zeros((240, 320, 3), np.uint8), time.time())

    def close(self) -> None:
        self.reads.append(0)


def test_a_frame_the_source_cannot_deliver_reopens_it_and_capture_goes_on():
    import threading

    from camera_node.capture import CaptureLoop

    cfg = CameraConfig(id="r", source="flaky", fps=100)
    counts: dict[str, int] = {}
    reads: list[int] = []
    loop = CaptureLoop(cfg, lambda: FlakySource(reads), FrameQueue(2), lambda: 100.0,
                       lambda outcome: counts.__setitem__(outcome, counts.get(outcome, 0) + 1))
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: counts.get("read_error", 0) >= 2 and counts.get("captured", 0) >= 10)
        assert thread.is_alive()
        assert reads.count(0) >= 2  # the failed source was closed each time before it was reopened
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()


class SlowSource:
    """A pull source whose every read takes 40 ms (a paced file waiting for its next frame, a slow decode)."""

    live, ended = False, False

    def read(self) -> Captured:
        time.sleep(0.04)
        return Captured(np.zeros((72, 128, 3), np.uint8), time.time())

    def close(self) -> None:
        pass


def test_a_pull_source_is_read_on_the_rate_grid_whatever_a_read_takes():
    """Reads follow a grid of 1 / fps: a 40 ms read does not stretch the period (scheduled from the end of each
    read, 10 fps would come out at 1 / 0.14 s = 7 fps)."""
    import threading

    from camera_node.capture import CaptureLoop

    counts: dict[str, int] = {}
    loop = CaptureLoop(CameraConfig(id="g", source="slow", fps=10), SlowSource, FrameQueue(64), lambda: 10.0,
                       lambda outcome: counts.__setitem__(outcome, counts.get(outcome, 0) + 1))
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    time.sleep(3.0)
    stop.set()
    thread.join(timeout=5)
    assert 27 <= counts.get("captured", 0) <= 32


def wait_for(check, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_keys_gen_command(cli, tmp_path):
    r = cli("keys", "gen", "--name", "cam1", "--dir", tmp_path)
    assert r.code == 0 and (tmp_path / "cam1.key").is_file() and (tmp_path / "cam1.key_secret").is_file()
    again = cli("keys", "gen", "--name", "cam1", "--dir", tmp_path)
    assert again.code == 2 and "already exists" in again.err
