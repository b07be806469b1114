"""The event printer over a real PUB socket on loopback: a JSONL file that cannot be written for a while costs no
event (every event lands in the file once, in order, when it can be written again)."""

from __future__ import annotations

import io
import json
import threading
import time

import zmq

from argusnet.events import EventPrinter
from argusnet.launcher import free_port
from shared.protocol import ProtocolConfig, TrackEvent, encode


def event(track: int) -> TrackEvent:
    now = time.time()
    return TrackEvent(type="track_started", camera="cam", track=track, name=None, similarity=None, margin=None,
                      ts=now, capture_ts=now, box=None, time_to_name_ms=None, duration_s=None, visitor=False)


def publish(pub: zmq.Socket, tracks: range) -> None:
    for track in tracks:
        pub.send_multipart([b"cam", encode(event(track))])
        time.sleep(0.02)


def test_an_unwritable_events_file_loses_nothing_and_duplicates_nothing(tmp_path):
    ctx = zmq.Context()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    pub = ctx.socket(zmq.PUB)
    pub.bind(endpoint)
    path = tmp_path / "events.jsonl"
    printer = EventPrinter(endpoint, ProtocolConfig(), io.StringIO(), path, context=ctx)
    stop = threading.Event()
    thread = threading.Thread(target=printer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        time.sleep(0.5)  # the subscription reaches the publisher
        publish(pub, range(0, 10))
        time.sleep(0.3)
        path.rename(tmp_path / "aside.jsonl")
        path.mkdir()  # the path cannot be opened as a file now (as root, permissions would not stop a write)
        publish(pub, range(10, 30))
        time.sleep(0.3)
        assert printer.jsonl.failing and len(printer.jsonl.pending) == 20
        path.rmdir()  # writable again, as a new file (a rotated log): the printer follows the path
        publish(pub, range(30, 35))
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(timeout=5)
        pub.close(0)
        ctx.term()
    def tracks(p):
        return [json.loads(line)["track"] for line in p.read_text().splitlines()]

    assert tracks(tmp_path / "aside.jsonl") == list(range(10))  # written before the path went away
    assert tracks(path) == list(range(10, 35))  # the kept lines first, in order, then the new ones; none twice
