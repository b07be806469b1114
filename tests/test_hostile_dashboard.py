"""Hostile users against a real `argusnet dashboard` process (issue 24): a login storm, bodies sent before
authentication or past the limit, sessions revoked by logout, password change and removal (their live stream
closes), no-store caching of personal data, the off-loopback warning without Secure cookies, and audited reads.

Two clients are told apart by their loopback source address (127.0.0.1 and 127.0.0.2 ...: all of 127/8 reaches
the server on 127.0.0.1); the dashboard does not trust X-Forwarded-For from them."""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import yaml

from argusnet.launcher import free_port
from dashboard.users import UserFile
from store import open_store
from store.config import GalleryConfig, LocalStoreConfig
from store.local.gallery import USERS_FILE
from store.types import EventRecord
from tests.processes import REPO, scrape, total, wait_until
from tests.test_dashboard_api import DIM, PASSWORD, _cli, _event, _face

ADMIN_ADDRESS = "127.0.0.2"
SMALL_UPLOAD = 64 * 1024  # dashboard.max_upload_bytes in these tests: bodies up to 128 KiB


class Browser:
    """HTTP with a cookie jar from one loopback source address."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.port = port
        self.source = source
        self.cookies: dict[str, str] = {}
        self.csrf: str | None = None

    def connect(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout, source_address=(self.source, 0))

    def headers(self, extra: dict | None = None) -> dict:
        hdrs = dict(extra or {})
        if self.cookies:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return hdrs

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        conn = self.connect()
        conn.request(method, path, body=body, headers=self.headers(headers))
        resp = conn.getresponse()
        data = resp.read()
        for header, value in resp.getheaders():
            if header.lower() == "set-cookie":
                name, _, rest = value.partition("=")
                cookie = rest.split(";", 1)[0].strip('"')
                if cookie:
                    self.cookies[name] = cookie
                else:
                    self.cookies.pop(name, None)
        conn.close()
        return resp, data

    def login(self, user: str, password: str) -> int:
        body = urllib.parse.urlencode({"username": user, "password": password}).encode()
        resp, _ = self.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"})
        if resp.status == 303:
            self.csrf = json.loads(self.request("GET", "/api/session")[1])["csrf"]
        return resp.status

    def status(self, path: str) -> int:
        return self.request("GET", path)[0].status

    def stolen(self, source: str = "127.0.0.3") -> Browser:
        """Another client holding a copy of this one's cookie."""
        other = Browser(self.port, source)
        other.cookies = dict(self.cookies)
        return other


class Dashboard:
    """A seeded local store with an admin (alice) and a viewer (victor), and `argusnet dashboard` serving it."""

    def __init__(self, tmp: Path, listen_host: str = "127.0.0.1", env: dict | None = None) -> None:
        self.tmp = tmp
        self.dir = tmp / "store"
        _seed(self.dir)
        users = UserFile(self.dir / USERS_FILE)  # as `dashboard user add` writes it (that CLI: add_user below)
        for name, role in (("alice", "admin"), ("victor", "viewer")):
            users.add(name, role, PASSWORD)
        self.port = free_port()
        self.log = tmp / "dashboard.log"
        full_env = {**os.environ, "ARGUSNET__DASHBOARD__MAX_UPLOAD_BYTES": str(SMALL_UPLOAD), **(env or {})}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "argusnet", "dashboard", "--gallery", str(self.dir),
                                          "--listen", f"{listen_host}:{self.port}"], stdout=log, stderr=log,
                                         env=full_env, cwd=REPO)
        up = wait_until(lambda: self.proc.poll() is not None or self._healthy(), 60)
        assert up and self.proc.poll() is None, self.log.read_text()

    def _healthy(self) -> bool:
        try:
            return Browser(self.port).status("/healthz") == 200
        except OSError:
            return False

    def add_user(self, name: str, role: str, password: str, replace: bool = False) -> None:
        pw = self.tmp / f"{name}.pw"
        pw.write_text(password + "\n")
        r = _cli("dashboard", "user", "add", name, "--role", role, "--password-file", pw, "--gallery", self.dir,
                 *(["--replace"] if replace else []))
        assert r.returncode == 0, r.stderr

    def metric(self, name: str, **labels: str) -> float:
        return total(scrape(self.port), name, **labels)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _seed(directory: Path) -> None:
    store = open_store(LocalStoreConfig(path=directory), GalleryConfig(), "test_model", DIM, create=True)
    now = time.time()
    store.persons.add_person("Ann", [_face(1)])
    crop = store.media.put_crop("cam1", 7, np.full((32, 32, 3), 200, np.uint8))
    store.events.append([EventRecord(_event("track_started", 7, None, now - 30)),
                         EventRecord(_event("track_identified", 7, "Ann", now - 29, similarity=0.95)),
                         EventRecord(_event("track_ended", 7, "Ann", now - 20), crop=crop)])
    store.close()


@pytest.fixture
def dash(tmp_path):
    d = Dashboard(tmp_path)
    yield d
    d.stop()


def _concurrently(n: int, attempt) -> list:
    """``attempt(i)`` in ``n`` threads released together; their results."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        results[i] = attempt(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


# --- the login throttle ----------------------------------------------------------------------------------------------

def test_a_login_storm_gets_no_more_checks_than_its_allowance_and_never_locks_the_admin_out(dash):
    storm = Browser(dash.port, "127.0.0.1")
    admin = Browser(dash.port, ADMIN_ADDRESS)
    statuses = _concurrently(17, lambda i: admin.login("alice", PASSWORD) if i == 16
                             else storm.login("alice", f"wrong-guess-{i:04d}"))
    assert statuses[16] == 303  # the admin's right password during the storm
    assert sorted(set(statuses[:16])) == [401, 429]
    # every attempt was counted before its password was checked: a burst gets the allowance (3), no more
    checked = dash.metric("argusnet_dashboard_logins_total", outcome="wrong")
    assert 1 <= checked <= 3 and statuses[:16].count(401) == checked
    assert dash.metric("argusnet_dashboard_logins_total", outcome="throttled") == 16 - checked
    assert Browser(dash.port, ADMIN_ADDRESS).login("alice", PASSWORD) == 303  # and after it
    assert storm.login("alice", "one-more-wrong-guess") in (401, 429)  # its allowance used up either way
    assert storm.login("alice", PASSWORD) == 429  # the failing address waits, even with the right password
    # uvicorn believes X-Forwarded-For from 127.0.0.1 unless told otherwise: here no proxy is trusted, so a
    # forged header does not make the failing address a new one
    forged = {"Content-Type": "application/x-www-form-urlencoded", "X-Forwarded-For": "10.9.8.7"}
    body = urllib.parse.urlencode({"username": "alice", "password": PASSWORD}).encode()
    assert storm.request("POST", "/login", body, forged)[0].status == 429


def test_password_checks_run_a_few_at_a_time_and_the_excess_is_refused_fast(tmp_path):
    d = Dashboard(tmp_path, env={"ARGUSNET__DASHBOARD__MAX_LOGIN_CHECKS": "1"})
    try:
        # 40 addresses that never failed, one guess each: one check at a time, 8 waiting, the rest 503
        statuses = _concurrently(40, lambda i: Browser(d.port, f"127.0.1.{i + 1}").login("alice", f"guess-{i:04d}"))
        assert set(statuses) == {401, 503} and statuses.count(503) >= 1
        assert d.metric("argusnet_dashboard_logins_total", outcome="busy") == statuses.count(503)
        assert d.metric("argusnet_dashboard_logins_total", outcome="wrong") == statuses.count(401)
        # a refused attempt did not count against its address
        busy = statuses.index(503)
        assert Browser(d.port, f"127.0.1.{busy + 1}").login("alice", PASSWORD) == 303
        assert "max_login_checks" in d.log.read_text()
    finally:
        d.stop()


# --- bodies ----------------------------------------------------------------------------------------------------------

def _raw(port: int, head: str, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock.sendall(head.encode())
    return sock


def _status_of(sock: socket.socket) -> int:
    """The status of the response on ``sock`` (read within its timeout: the server must answer unprompted)."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    sock.close()
    return int(data.split(b" ", 2)[1])


def _head(method: str, path: str, length: int | None, cookie: str | None = None,
          content_type: str = "multipart/form-data; boundary=xyz") -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {content_type}"]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    if cookie:
        lines.append(f"Cookie: argusnet_session={cookie}")
    return "\r\n".join(lines) + "\r\n\r\n"


def _multipart(files: int) -> bytes:
    parts = [b'--xyz\r\nContent-Disposition: form-data; name="name"\r\n\r\nMallory\r\n']
    parts += [f'--xyz\r\nContent-Disposition: form-data; name="photos"; filename="{i}.jpg"\r\n'
              f'Content-Type: image/jpeg\r\n\r\n\xff\xd8\r\n'.encode("latin-1") for i in range(files)]
    return b"".join(parts) + b"--xyz--\r\n"


def test_bodies_are_refused_before_they_are_read(dash):
    # without a session: a 1001-file upload is answered 401 before a byte of it is sent (so never parsed)
    upload = _multipart(1001)
    assert _status_of(_raw(dash.port, _head("POST", "/api/persons", len(upload)))) == 401
    assert _status_of(_raw(dash.port, _head("POST", "/api/visitors/v-1/name", 20, content_type="application/json"))) \
        == 401
    # the login form is small
    assert _status_of(_raw(dash.port, _head("POST", "/login", 100_000,
                                            content_type="application/x-www-form-urlencoded"))) == 413
    admin = Browser(dash.port)
    assert admin.login("alice", PASSWORD) == 303
    cookie = admin.cookies["argusnet_session"]
    # a logged-in user's body past the limit: by its Content-Length, before it is sent
    assert _status_of(_raw(dash.port, _head("POST", "/api/persons", 50_000_000, cookie))) == 413
    # and streamed without one: refused as soon as the counted bytes pass it, long before the 64 MiB end
    sock = _raw(dash.port, _head("POST", "/api/persons", None, cookie))
    start = b'--xyz\r\nContent-Disposition: form-data; name="photos"; filename="big.jpg"\r\n\r\n'
    sock.sendall(b"%x\r\n%s\r\n" % (len(start), start))
    chunk = b"%x\r\n%s\r\n" % (65536, b"\xff" * 65536)
    sent = 0
    while sent < 64 * 1024 * 1024 and not select.select([sock], [], [], 0)[0]:
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += 65536
    assert sent < 16 * 1024 * 1024
    assert _status_of(sock) == 413
    assert dash.metric("argusnet_dashboard_refused_total", reason="body_without_session") == 2
    assert dash.metric("argusnet_dashboard_refused_total", reason="body_too_large") == 3
    assert "refused a request body" in dash.log.read_text()
    assert admin.status("/api/events") == 200  # the dashboard serves on


# --- sessions --------------------------------------------------------------------------------------------------------

class Stream:
    """``/api/stream`` held open by ``browser``; ``ended`` when the server closes it."""

    def __init__(self, browser: Browser) -> None:
        self.conn = browser.connect(timeout=30)
        self.conn.request("GET", "/api/stream", headers=browser.headers())
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200
        assert self.resp.readline() == b"retry: 1000\n"

    def ends_within(self, seconds: float) -> bool:
        """Whether the stream ends (EOF) within ``seconds``."""
        self.conn.sock.settimeout(seconds)
        start = time.monotonic()
        try:
            while self.resp.readline():
                if time.monotonic() - start > seconds:
                    return False
        except TimeoutError:
            return False
        finally:
            self.conn.close()
        return True


def test_logout_password_change_and_removal_revoke_the_sessions_and_close_their_live_streams(dash):
    victor = Browser(dash.port)
    assert victor.login("victor", PASSWORD) == 303
    thief = victor.stolen()
    stream = Stream(thief)
    resp, _ = victor.request("POST", "/logout", urllib.parse.urlencode({"csrf_token": victor.csrf}).encode(),
                             {"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 303
    assert thief.status("/api/events") == 401  # the copied cookie died with the logout
    assert stream.ends_within(5)
    assert victor.login("victor", PASSWORD) == 303 and victor.status("/api/events") == 200  # a new login works

    alice = Browser(dash.port, ADMIN_ADDRESS)
    assert alice.login("alice", PASSWORD) == 303
    stream = Stream(alice)
    dash.add_user("alice", "admin", PASSWORD + "-new", replace=True)  # a password change
    assert alice.status("/api/events") == 401
    assert stream.ends_within(5)
    assert alice.login("alice", PASSWORD + "-new") == 303

    stream = Stream(victor)
    assert _cli("dashboard", "user", "remove", "victor", "--gallery", dash.dir).returncode == 0
    assert stream.ends_within(5)  # the removed user's live stream stops feeding him
    assert victor.status("/api/events") == 401
    assert dash.metric("argusnet_dashboard_refused_total", reason="revoked") >= 3


def test_logouts_survive_a_restart(tmp_path):
    d = Dashboard(tmp_path)
    victor = Browser(d.port)
    assert victor.login("victor", PASSWORD) == 303
    thief = victor.stolen()
    victor.request("POST", "/logout", urllib.parse.urlencode({"csrf_token": victor.csrf}).encode(),
                   {"Content-Type": "application/x-www-form-urlencoded"})
    d.stop()
    port = d.port
    proc = subprocess.Popen([sys.executable, "-m", "argusnet", "dashboard", "--gallery", str(d.dir), "--listen",
                             f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        assert wait_until(lambda: d._healthy(), 60)
        assert thief.status("/api/events") == 401
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- caching, Secure cookies -----------------------------------------------------------------------------------------

def test_faces_crops_and_every_personal_answer_are_no_store(dash):
    victor = Browser(dash.port)
    assert victor.login("victor", PASSWORD) == 303
    ann = json.loads(victor.request("GET", "/api/identities/Ann")[1])
    for path in (ann["faces"][0]["url"], "/api/crops/cam1/7.jpg", "/api/identities/Ann", "/api/events",
                 "/api/persons", "/identity/Ann", "/live"):
        resp, _ = victor.request("GET", path)
        assert resp.status == 200 and resp.getheader("Cache-Control") == "no-store", path


def test_listening_off_loopback_without_secure_cookies_warns(tmp_path, dash):
    assert "secure_cookies" not in dash.log.read_text()  # on loopback: no warning
    wide = Dashboard(tmp_path / "wide", listen_host="0.0.0.0")
    try:
        assert "without dashboard.secure_cookies" in wide.log.read_text()
    finally:
        wide.stop()


@pytest.mark.parametrize("site", ["config/site.yaml", "k8s/base/site.yaml", "k8s/overlays/external-redis/site.yaml"])
def test_the_shipped_sites_send_secure_cookies(site):
    dashboard = yaml.safe_load((REPO / "deploy" / site).read_text())["dashboard"]
    assert dashboard["secure_cookies"] is True
    assert str(dashboard["revoked_file"]).startswith("/tmp/")  # writable in the read-only containers


# --- audited reads ---------------------------------------------------------------------------------------------------

def test_reads_of_a_persons_timeline_faces_and_crops_are_audited_once_a_minute(dash):
    victor = Browser(dash.port)
    assert victor.login("victor", PASSWORD) == 303
    for _ in range(3):
        ann = json.loads(victor.request("GET", "/api/identities/Ann")[1])
        assert victor.status(ann["faces"][0]["url"]) == 200
        assert victor.status("/api/crops/cam1/7.jpg") == 200
        assert victor.status("/api/events?identity=Ann") == 200
        assert victor.status("/api/events") == 200  # everybody's events: not one person's read
    alice = Browser(dash.port, ADMIN_ADDRESS)
    assert alice.login("alice", PASSWORD) == 303
    assert alice.status("/api/identities/Ann") == 200
    audit = _cli("audit", "list", "--json", "--gallery", dash.dir)
    reads = [(r["actor"], r["subject"], r["details"]["kind"]) for r in json.loads(audit.stdout)["records"]
             if r["action"] == "read"]
    assert sorted(reads) == [("dashboard:alice", "Ann", "timeline"), ("dashboard:victor", "Ann", "crop"),
                             ("dashboard:victor", "Ann", "faces"), ("dashboard:victor", "Ann", "timeline")]
    assert _cli("audit", "verify", "--gallery", dash.dir).returncode == 0
