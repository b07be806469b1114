"""Batches in flight (`worker.detect_threads`, gpu_worker/inflight.py): detections of different batches run at once
on the pool, batches are finished strictly in the order they came, and a worker service with several detection
threads serving several cameras over real ZeroMQ sockets finishes every camera's frames in their order."""

from __future__ import annotations

import threading
import time

import pytest
import simplejpeg
import zmq
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from argusnet.commands.demo import enrol_demo_person
from argusnet.launcher import free_port
from broker.config import BrokerConfig
from camera_node.demo import render
from gpu_worker.config import WorkerConfig
from gpu_worker.inflight import DetectionPool, InFlight, chunks
from gpu_worker.service import WorkerService
from gpu_worker.tracked import TrackedProcessor
from shared import metrics as m
from shared.protocol import Frame, ProtocolConfig, encode
from store.config import LocalStoreConfig


def item(*plan) -> InFlight:
    return InFlight(list(plan), list(plan), list(plan), time.time())


def test_two_detections_run_at_once_and_are_handed_back_in_order():
    pool = DetectionPool(2, "t")
    both = threading.Barrier(2, timeout=10)  # broken (an error) unless the two run at the same time
    second_done = threading.Event()

    def detect(part):
        both.wait()
        if part == ["first"]:
            second_done.wait(10)  # the second batch finishes first...
        else:
            second_done.set()
        return [f"{tag} detected" for tag in part]

    try:
        pool.submit(item("first"), detect)
        pool.submit(item("second"), detect)
        assert second_done.wait(10)
        assert [done.found() for done in pool.drain()] == [["first detected"], ["second detected"]]  # ...not first
    finally:
        pool.close()


def test_a_batch_is_detected_in_chunks_on_every_thread_and_comes_back_whole_and_in_order():
    pool = DetectionPool(2, "t")
    both = threading.Barrier(2, timeout=10)
    threads = set()

    def detect(part):
        both.wait()  # the two chunks of one batch run at the same time
        threads.add(threading.current_thread().name)
        return [tag * 10 for tag in part]

    try:
        pool.submit(item(1, 2, 3, 4, 5), detect)
        (done,) = list(pool.drain())
        assert len(done.futures) == 2 and done.found() == [10, 20, 30, 40, 50] and len(threads) == 2
    finally:
        pool.close()
    assert chunks([1, 2, 3, 4, 5], 2) == [[1, 2, 3], [4, 5]] and chunks([1], 4) == [[1]] and chunks([], 2) == []


def test_the_pool_holds_at_most_threads_plus_one_and_ready_stops_at_the_oldest_still_running():
    pool = DetectionPool(1, "t")
    release = threading.Event()
    try:
        pool.submit(item(1), lambda part: [release.wait(10)])
        pool.submit(item(2))  # nothing to detect: ready at once, but behind the first
        assert pool.full and len(pool) == 2
        assert list(pool.ready(0.0)) == [] and list(pool.ready(0.01)) == []
        release.set()
        assert [done.batch for done in pool.ready(None)] == [[1], [2]]
        assert len(pool) == 0 and not pool.full
    finally:
        pool.close()


def test_a_failed_detection_is_handed_back_with_its_error():
    pool = DetectionPool(2, "t")
    try:
        pool.submit(item(1), lambda part: [1 / 0])
        (done,) = list(pool.drain())
        with pytest.raises(ZeroDivisionError):
            done.found()
    finally:
        pool.close()


def test_detect_threads_is_bounded():
    for bad in (0, 65):
        with pytest.raises(ValidationError):
            WorkerConfig(detect_threads=bad)


def test_a_service_with_two_detection_threads_finishes_every_cameras_frames_in_order(engine, tmp_path):
    store = enrol_demo_person(engine, LocalStoreConfig(path=tmp_path / "gallery"))
    finished: list[tuple[str, int]] = []
    processor = TrackedProcessor(engine, store, engine.cfg, worker="w1",
                                 on_tracks=lambda frame, boxes: finished.append((frame.camera, frame.seq)))
    ctx = zmq.Context()
    backend, events = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    router = ctx.socket(zmq.ROUTER)
    router.bind(backend)
    registry = CollectorRegistry()
    cfg = WorkerConfig(detect_threads=2, capacity=64)  # batches of up to 4, detected in 2 chunks, several in flight
    service = WorkerService("w1", processor, cfg, BrokerConfig(backend=backend, events_in=events), ProtocolConfig(),
                            registry, ctx)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    cameras, per_camera = ("a", "b", "c"), 12
    try:
        thread.start()
        identity, _ = router.recv_multipart()  # the worker's first heartbeat
        for seq in range(per_camera):
            image, _ = render(2.0 + seq / 10.0)
            jpeg = simplejpeg.encode_jpeg(image, quality=85, colorspace="RGB")
            for camera in cameras:
                now = time.time()
                frame = Frame(camera_id=camera, seq=seq, capture_ts=now, send_ts=now, width=image.shape[1],
                              height=image.shape[0], jpeg=jpeg)
                router.send_multipart([identity, encode(frame)])
        deadline = time.monotonic() + 60
        while len(finished) < len(cameras) * per_camera and time.monotonic() < deadline:
            while router.poll(50):
                router.recv_multipart()  # heartbeats with credits: read and ignore
    finally:
        stop.set()
        thread.join(timeout=20)
        router.close(0)
        ctx.term()
        store.close()
    for camera in cameras:
        assert [seq for cam, seq in finished if cam == camera] == list(range(per_camera)), camera
    processed = {camera: registry.get_sample_value(m.FRAMES_OUT, {"camera": camera}) for camera in cameras}
    assert processed == {camera: per_camera for camera in cameras}
