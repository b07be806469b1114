"""`argusnet events --from-store` as a real process over a local store's event log: stopped (SIGINT) and started
again with the same cursor file, it writes every event once, in order, including those logged while it was down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from argusnet.events import load_cursor
from shared.errors import InputError
from shared.protocol import TrackEvent
from store import GalleryConfig, LocalStoreConfig, open_store
from store.types import EventRecord
from tests.processes import REPO, wait_until

MODEL, DIM = "test-model", 8
STOP_WAIT_S = 15


def event(track: int) -> TrackEvent:
    now = time.time()
    return TrackEvent(type="track_started", camera="cam", track=track, name=None, similarity=None, margin=None,
                      ts=now, capture_ts=now, box=None, time_to_name_ms=None, duration_s=None, visitor=False)


def append(directory: Path, tracks: range) -> list[int]:
    store = open_store(LocalStoreConfig(path=directory), GalleryConfig(), MODEL, DIM, create=True)
    try:
        return store.events.append([EventRecord(event(t), worker="w1") for t in tracks])
    finally:
        store.close()


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def start(tmp: Path, gallery: Path, cursor: Path, jsonl: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUSNET__")}
    log = open(tmp / "events.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "argusnet", "--log-level", "INFO", "events", "--from-store",
                             "--cursor", str(cursor), "--jsonl", str(jsonl), "--gallery", str(gallery)], cwd=REPO,
                            env=env, stdout=log, stderr=log)


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=STOP_WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_printer_that_was_down_catches_up_every_event_once_in_order(tmp_path):
    gallery, cursor, jsonl = tmp_path / "store", tmp_path / "cursor.json", tmp_path / "events.jsonl"
    ids = append(gallery, range(0, 700))  # more than one read batch
    proc = start(tmp_path, gallery, cursor, jsonl)
    try:
        assert wait_until(lambda: len(lines(jsonl)) == 700, 30, 0.1), (tmp_path / "events.log").read_text()
        ids += append(gallery, range(700, 750))  # while it runs: picked up by polling
        assert wait_until(lambda: len(lines(jsonl)) == 750, 10, 0.1)
    finally:
        assert stop(proc) == 0, (tmp_path / "events.log").read_text()
    assert load_cursor(cursor) == ids[-1]
    ids += append(gallery, range(750, 900))  # while it is down
    proc = start(tmp_path, gallery, cursor, jsonl)
    try:
        assert wait_until(lambda: len(lines(jsonl)) >= 900, 30, 0.1), (tmp_path / "events.log").read_text()
        time.sleep(1.0)  # two more polls: nothing is written twice
    finally:
        assert stop(proc) == 0
    written = lines(jsonl)
    assert [r["id"] for r in written] == ids
    assert [r["track"] for r in written] == list(range(900))
    assert load_cursor(cursor) == ids[-1]


def test_a_bad_cursor_file_is_refused(tmp_path):
    path = tmp_path / "cursor.json"
    path.write_text("not json")
    with pytest.raises(InputError, match="not a cursor file"):
        load_cursor(path)
    path.write_text('{"after_id": -3}')
    with pytest.raises(InputError, match="integer >= 0"):
        load_cursor(path)
    assert load_cursor(tmp_path / "missing.json") is None
