"""OpenCV frame sources: a video file (optionally looping, optionally paced at its own fps), an RTSP/HTTP stream
or a USB device index; plus the built-in ``demo``. ``open_source`` picks one from ``CameraConfig.source``."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import cv2

from camera_node.base import Captured, Source, SourceError, Timeline, _retrieve, to_rgb
from camera_node.config import CameraConfig
from camera_node.demo import DemoSource

DEFAULT_FILE_FPS = 25.0
# A file is read at the camera's rate (10 fps by default), far below what one decoding thread manages at 720p;
# each extra FFmpeg thread holds its own pictures (about 3 MB resident more at 720p with 2 threads, measured)
FILE_DECODE_THREADS = 1
PROBE_TIMEOUT_S = 2.0  # a stream that fails to open: how long a TCP connection to its host may take to say why
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}


class FileSource:
    """A video file: paced (a real-time Timeline at the file's fps; a slow reader skips frames) or as fast as
    read; looping restarts at the end, otherwise ``ended`` becomes True."""

    live = False

    def __init__(self, path: Path, loop: bool, pace: bool, interrupt: threading.Event | None = None) -> None:
        if not path.is_file():
            raise SourceError(f"the video file {path} does not exist")
        self.path, self.loop, self.pace = path, loop, pace
        self.ended = False
        self._cap = self._open()
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 1.0 <= fps <= 240.0 else DEFAULT_FILE_FPS
        self._timeline = Timeline(self.fps, interrupt) if pace else None
        self._position = -1

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, FILE_DECODE_THREADS])
        if not cap.isOpened():
            raise SourceError(f"OpenCV cannot read {self.path} as a video (not a video file, or a format this "
                              "build cannot decode)")
        return cap

    def read(self) -> Captured | None:
        target = self._position + 1
        if self._timeline is not None:
            due = self._timeline.next_index(self._position)
            if due is None:
                return None
            target = due
        while self._position < target - 1 and self._cap.grab():  # skip frames that are already overdue
            self._position += 1
        frame = _retrieve(self._cap, self._cap.grab())
        if frame is None:
            return self._at_end()
        self._position = target
        return Captured(to_rgb(frame), time.time())

    def _at_end(self) -> Captured | None:
        if not self.loop:
            self.ended = True
            return None
        self._cap.release()
        self._cap = self._open()
        self._position = -1
        if self._timeline is not None:
            self._timeline.restart()
        return self.read()

    def close(self) -> None:
        self._cap.release()


class StreamSource:
    """A live source (RTSP/HTTP URL or USB device index): frames at the device's own rate."""

    live = True

    def __init__(self, source: str) -> None:
        self.ended = False
        target: str | int = int(source) if source.isdigit() else source
        self._cap = cv2.VideoCapture(target)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(stream_failure(source))
        self.source = source

    def read(self) -> Captured | None:
        frame = _retrieve(self._cap, self._cap.grab())
        return None if frame is None else Captured(to_rgb(frame), time.time())

    def close(self) -> None:
        self._cap.release()


def shown_source(source: str) -> str:
    """``source`` for logs and messages: a URL without the password in it."""
    if "://" not in source:
        return source
    parts = urlsplit(source)
    if parts.password is None:
        return source
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def stream_failure(source: str) -> str:
    """Why a stream or device did not open, as far as can be told: OpenCV says nothing, so for a URL a TCP
    connection to its host tells a refused port or an unknown host from a server that answered but sent no video."""
    if "://" not in source:
        return f"no video device {source} (or it is busy)"
    parts = urlsplit(source)
    port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    if not parts.hostname or port is None:
        return "OpenCV cannot open this stream"
    try:
        with socket.create_connection((parts.hostname, port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        return f"cannot connect to {parts.hostname}:{port} ({exc.strerror or exc})"
    return f"{parts.hostname}:{port} answers but OpenCV gets no video stream from it"


def probe_file(path: Path) -> str | None:
    """Why a local file cannot be a camera's source (missing, not a video OpenCV can decode), or None."""
    if not path.is_file():
        return "is a directory, not a video file" if path.is_dir() else "does not exist"
    cap = cv2.VideoCapture(str(path), cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, FILE_DECODE_THREADS])
    try:
        if not cap.isOpened() or not cap.grab():
            return "is not a video OpenCV can read (not a video file, or a format this build cannot decode)"
    finally:
        cap.release()
    return None


def file_path(source: str) -> Path | None:
    """The local video file a ``CameraConfig.source`` names; None for ``demo``, a USB index or a URL."""
    if source == "demo" or source.isdigit() or "://" in source:
        return None
    return Path(source)


def open_source(cfg: CameraConfig, interrupt: threading.Event | None = None) -> Source:
    """The source named by ``cfg.source``: ``demo``, a digit string (USB index), a URL, or a file path."""
    if cfg.source == "demo":
        return DemoSource(cfg.fps, interrupt)
    path = file_path(cfg.source)
    if path is None:
        return StreamSource(cfg.source)
    return FileSource(path, cfg.loop, cfg.pace, interrupt)
