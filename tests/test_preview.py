"""Camera previews and statuses written by a worker for the dashboard (gpu_worker.preview) on a real local store."""

from __future__ import annotations

import numpy as np
import simplejpeg

from gpu_worker.preview import PreviewBox, PreviewConfig, PreviewPublisher, ascii_label, render
from store import open_store
from store.config import GalleryConfig, LocalStoreConfig


def test_render_downscales_and_draws_the_boxes():
    image = np.zeros((720, 1280, 3), np.uint8)
    jpeg = render(image, [PreviewBox((100.0, 100.0, 300.0, 300.0), "Ann 0.91", True)], 640, 80)
    out = simplejpeg.decode_jpeg(jpeg)
    assert out.shape == (360, 640, 3)
    assert out[50:150, 49:52].max() > 100  # the box's left edge, at half scale, in colour
    assert out[200:300, 200:300].max() < 30  # nothing drawn elsewhere
    assert ascii_label("Zoë <b>") == "Zo? <b>"


def test_publisher_writes_status_with_fps_and_drops_once_per_interval(tmp_path):
    store = open_store(LocalStoreConfig(path=tmp_path / "s"), GalleryConfig(), "m", 8, create=True)
    failures = []
    pub = PreviewPublisher(PreviewConfig(interval_s=1.0), store.live, "worker-1", lambda op, exc: failures.append(op))
    image = np.zeros((480, 640, 3), np.uint8)
    drawn = []

    def boxes():
        drawn.append(1)
        return [PreviewBox((10.0, 10.0, 50.0, 50.0), "?", False)]

    assert pub.frame("cam", 0, image, boxes, now=100.0)  # the first frame of a camera is shown at once
    for i, seq in enumerate([1, 2, 5, 6, 7, 8, 9, 10, 11]):  # 3 and 4 never arrived
        assert not pub.frame("cam", seq, image, boxes, now=100.1 + i * 0.1)
    assert pub.frame("cam", 12, image, boxes, now=101.0)
    assert len(drawn) == 2 and failures == []
    (status,) = store.live.cameras()
    assert (status.camera, status.worker, status.frames, status.dropped, status.tracks) == ("cam", "worker-1", 11, 2, 1)
    assert status.fps == 10.0 and (status.width, status.height) == (640, 480)
    assert simplejpeg.decode_jpeg(store.live.preview("cam")).shape == (480, 640, 3)
    store.close()


def test_interval_zero_writes_nothing(tmp_path):
    store = open_store(LocalStoreConfig(path=tmp_path / "s"), GalleryConfig(), "m", 8, create=True)
    pub = PreviewPublisher(PreviewConfig(interval_s=0), store.live, None, lambda op, exc: None)
    assert not pub.frame("cam", 0, np.zeros((8, 8, 3), np.uint8), list)
    assert store.live.cameras() == []
    store.close()
