"""The dashboard's HTTP contract against a real `argusnet dashboard` process on a real local store (seeded through
the store interface, as workers write it): auth (401/redirect/403, CSRF, throttling, removed users), the JSON API
(events, live, cameras, previews, crops, identities), the admin actions and the live stream."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
import urllib.parse

import numpy as np
import pytest

from argusnet.launcher import free_port
from dashboard.users import UserFile
from shared.protocol import TrackEvent
from store import open_store
from store.config import GalleryConfig, LocalStoreConfig
from store.local.gallery import USERS_FILE
from store.types import CameraStatus, EventQuery, EventRecord, FaceSample, LiveTrack

PASSWORD = "correct-horse-battery-staple"
XSS = "<img src=x onerror=alert(1)>"
DIM = 8


def _event(kind, track, name, ts, visitor=False, camera="cam1", similarity=None):
    return TrackEvent(type=kind, camera=camera, track=track, name=name, similarity=similarity, margin=None, ts=ts + 0.05,
                      capture_ts=ts, box=(1.0, 2.0, 50.0, 60.0), time_to_name_ms=None, duration_s=0.0, visitor=visitor)


def _face(seed: int) -> FaceSample:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return FaceSample(v / np.linalg.norm(v), np.full((40, 40, 3), 120, np.uint8), np.zeros((5, 2), np.float32), "t")


class Client:
    """HTTP on loopback with a cookie jar (one browser)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}
        self.csrf: str | None = None

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        hdrs = dict(headers or {})
        if self.cookies:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        for header, value in resp.getheaders():
            if header.lower() == "set-cookie":
                name, _, rest = value.partition("=")
                self.cookies[name] = rest.split(";", 1)[0].strip('"')
                if rest.split(";", 1)[0] in ('""', ""):
                    self.cookies.pop(name)
        conn.close()
        return resp, data

    def get_json(self, path: str):
        resp, data = self.request("GET", path)
        return resp.status, (json.loads(data) if data else None)

    def login(self, user: str, password: str):
        body = urllib.parse.urlencode({"username": user, "password": password, "next": "/recognitions"}).encode()
        resp, data = self.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"})
        if resp.status == 303:
            self.csrf = self.get_json("/api/session")[1]["csrf"]
        return resp, data

    def post_json(self, path: str, obj: dict, csrf: bool = True):
        headers = {"Content-Type": "application/json"}
        if csrf and self.csrf:
            headers["X-CSRF-Token"] = self.csrf
        resp, data = self.request("POST", path, json.dumps(obj).encode(), headers)
        return resp.status, (json.loads(data) if data else None)


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "argusnet", *map(str, args)], capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def site(tmp_path):
    """A seeded local store, two users and a running dashboard on a free port."""
    directory = tmp_path / "store"
    store = open_store(LocalStoreConfig(path=directory), GalleryConfig(), "test_model", DIM, create=True)
    now = time.time()
    store.persons.add_person("Ann", [_face(1)])
    store.persons.add_person(XSS, [_face(2)])
    store.negatives.add(XSS, [_face(4)])  # an operator once said a track named so was not them
    visitor = store.visitors.match_or_create([_face(3)], 0.9, 5).visitor
    crop = store.media.put_crop("cam1", 7, np.full((32, 32, 3), 200, np.uint8))
    store.events.append([EventRecord(_event("track_started", 7, None, now - 30)),
                         EventRecord(_event("track_identified", 7, "Ann", now - 29, similarity=0.95)),
                         EventRecord(_event("track_ended", 7, "Ann", now - 20), crop=crop),
                         EventRecord(_event("track_identified", 8, visitor, now - 10, visitor=True, camera="cam2")),
                         EventRecord(_event("track_identified", 9, XSS, now - 5, similarity=0.5))])
    store.live.put(LiveTrack("cam1", 11, "Ann", False, 0.97, (1, 2, 3, 4), now - 2, now), ttl_s=600)
    store.live.put_camera(CameraStatus("cam1", "worker-1", 9.5, 100, 3, 1, 640, 480, now), b"\xff\xd8fake", 600)
    store.close()
    users = UserFile(directory / USERS_FILE)  # what `argusnet dashboard user add` writes (its CLI: test_hostile_up)
    for name, role in (("alice", "admin"), ("victor", "viewer")):
        users.add(name, role, PASSWORD)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "argusnet", "dashboard", "--gallery", str(directory), "--listen",
                             f"127.0.0.1:{port}"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            if Client(port).request("GET", "/healthz")[0].status == 200:
                break
        except OSError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "timeout"
        time.sleep(0.1)
    yield {"port": port, "dir": directory, "visitor": visitor, "tmp": tmp_path}
    proc.terminate()
    proc.wait(timeout=10)


def test_without_a_session_pages_redirect_and_the_api_answers_401(site):
    c = Client(site["port"])
    resp, _ = c.request("GET", "/live")
    assert resp.status == 303 and resp.getheader("Location") == "/login?next=/live"
    for path in ("/api/events", "/api/live", "/api/cameras", "/api/crops/cam1/7.jpg", "/api/stream"):
        assert c.get_json(path)[0] == 401, path
    assert c.request("GET", "/healthz")[0].status == 200
    resp, data = c.request("GET", "/metrics")
    assert resp.status == 200 and b'argusnet_dashboard_logins_total{outcome="wrong"} 0.0' in data
    c.cookies["argusnet_session"] = "eyJ1IjoiYWxpY2UiLCJyIjoiYWRtaW4iLCJlIjo5OTk5OTk5OTk5LCJzIjoieCJ9.forged"
    assert c.get_json("/api/events")[0] == 401  # a forged cookie is no session
    assert c.request("GET", "/openapi.json")[0].status == 200


def test_login_sets_a_strict_httponly_cookie_and_wrong_passwords_are_slowed(site):
    c = Client(site["port"])
    for _ in range(3):
        assert c.login("alice", "wrong-password-123")[0].status == 401
    resp, _ = c.login("alice", PASSWORD)
    assert resp.status == 429 and int(resp.getheader("Retry-After")) >= 1  # even the right password waits
    other = Client(site["port"])
    resp, _ = other.request("POST", "/login", urllib.parse.urlencode(
        {"username": "victor", "password": PASSWORD, "next": "//evil.example/"}).encode(),
        {"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 429  # the same client address is slowed for every name
    time.sleep(2.1)
    resp, _ = c.login("alice", PASSWORD)
    assert resp.status == 303 and resp.getheader("Location") == "/recognitions"
    cookie = resp.getheader("Set-Cookie")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    resp, _ = other.request("POST", "/login", urllib.parse.urlencode(
        {"username": "victor", "password": PASSWORD, "next": "//evil.example/"}).encode(),
        {"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 303 and resp.getheader("Location") == "/live"  # never an open redirect
    audit = _cli("audit", "list", "--json", "--gallery", site["dir"])
    actions = [r["action"] for r in json.loads(audit.stdout)["records"]]
    assert actions.count("login_failed") == 3 and actions.count("login") == 2


def test_events_live_cameras_and_media(site):
    c = Client(site["port"])
    c.login("victor", PASSWORD)
    status, data = c.get_json("/api/events?limit=10")
    events = data["events"]
    assert status == 200 and [e["track"] for e in events] == [9, 8, 7, 7, 7]  # newest first
    assert {"type", "camera", "track", "name", "similarity", "margin", "ts", "capture_ts", "box", "time_to_name_ms",
            "duration_s", "visitor", "merged_visitor", "latency_ms", "id", "crop_url"} <= set(events[0])
    ended = next(e for e in events if e["type"] == "track_ended")
    assert ended["crop_url"] == "/api/crops/cam1/7.jpg"
    resp, jpeg = c.request("GET", ended["crop_url"])
    assert resp.status == 200 and jpeg[:2] == b"\xff\xd8"
    assert [e["track"] for e in c.get_json("/api/events?camera=cam2")[1]["events"]] == [8]
    assert [e["type"] for e in c.get_json("/api/events?identity=Ann")[1]["events"]] == ["track_ended",
                                                                                        "track_identified"]
    assert [e["track"] for e in c.get_json("/api/events?min_similarity=0.9")[1]["events"]] == [7]
    assert c.get_json("/api/events?limit=0")[0] == 422
    (live,) = c.get_json("/api/live")[1]["tracks"]
    assert (live["camera"], live["track"], live["name"]) == ("cam1", 11, "Ann")
    cams = {x["camera"]: x for x in c.get_json("/api/cameras")[1]["cameras"]}
    assert cams["cam1"]["status"] == "online" and cams["cam1"]["fps"] == 9.5 and cams["cam1"]["dropped"] == 3
    resp, preview = c.request("GET", cams["cam1"]["preview_url"])
    assert resp.status == 200 and preview == b"\xff\xd8fake"
    assert c.get_json("/api/crops/cam1/99.jpg")[0] == 404
    tl = c.get_json("/api/identities/Ann")[1]
    assert tl["kind"] == "person" and tl["timeline"][0]["track"] == 7 and len(tl["faces"]) == 1
    assert c.request("GET", tl["faces"][0]["url"])[0].status == 200
    assert c.get_json("/api/identities/Nobody")[0] == 404


def test_every_page_escapes_names(site):
    c = Client(site["port"])
    c.login("victor", PASSWORD)
    for path in ("/identity/" + urllib.parse.quote(XSS, safe=""), "/recognitions", "/people", "/live"):
        resp, html = c.request("GET", path)
        assert resp.status == 200 and b"<img src=x" not in html, path
    resp, html = c.request("GET", "/identity/" + urllib.parse.quote(XSS, safe=""))
    assert b"&lt;img src=x onerror=alert(1)&gt;" in html
    assert "script-src 'self'" in resp.getheader("Content-Security-Policy")  # no inline script can run either


def test_actions_need_admin_and_csrf_and_change_the_store(site):
    viewer, admin = Client(site["port"]), Client(site["port"])
    viewer.login("victor", PASSWORD)
    admin.login("alice", PASSWORD)
    visitor = site["visitor"]
    path = f"/api/visitors/{visitor}/name"
    assert viewer.post_json(path, {"name": "Carol"})[0] == 403  # a viewer
    assert admin.post_json(path, {"name": "Carol"}, csrf=False)[0] == 403  # no CSRF token
    assert Client(site["port"]).post_json(path, {"name": "Carol"})[0] == 401  # no session
    status, body = admin.post_json(path, {"name": "Carol"})
    assert status == 200 and body["faces_added"] == 1 and body["events_renamed"] == 1
    assert admin.post_json("/api/visitors/visitor-999/name", {"name": "X"})[0] == 400
    store = open_store(LocalStoreConfig(path=site["dir"]), GalleryConfig())
    with store:  # a track with no stored face: its events are unnamed, no face to keep as negative evidence
        store.events.append([EventRecord(_event("track_identified", 12, "Ann", time.time(), similarity=0.95)),
                             EventRecord(_event("track_ended", 12, "Ann", time.time()))])
    status, body = admin.post_json("/api/tracks/cam1/12/reject", {"name": "Ann"})
    assert status == 200 and body["events_unnamed"] == 2 and body["negatives_added"] == 0
    status, body = admin.post_json("/api/tracks/cam1/12/reject", {"name": "Ann"})
    assert status == 404 and "no event naming 'Ann'" in body["detail"]
    status, body = admin.post_json(f"/api/persons/{urllib.parse.quote(XSS, safe='')}/remove", {})
    assert status == 200 and body["faces_removed"] == 1 and body["negatives_removed"] == 1
    store = open_store(LocalStoreConfig(path=site["dir"]), GalleryConfig())
    try:
        assert sorted(p.name for p in store.persons.persons()) == ["Ann", "Carol"]
        assert store.negatives.counts() == {}
        assert [e.event.name for e in store.events.query(EventQuery(camera="cam2"))] == ["Carol"]
        assert not any(e.event.name == "Ann" and e.event.track == 12 for e in store.events.query(EventQuery()))
    finally:
        store.close()
    actions = [r["action"] for r in json.loads(_cli("audit", "list", "--json", "--gallery", site["dir"]).stdout)[
        "records"]]
    assert {"name_visitor", "reject", "remove"} <= set(actions)
    r = _cli("dashboard", "user", "remove", "alice", "--gallery", site["dir"])
    assert r.returncode == 0, r.stderr
    assert admin.get_json("/api/events")[0] == 401  # a removed user's session ends at once


def test_unmerge_action_needs_admin_and_csrf_and_restores_the_visitor(site):
    viewer, admin = Client(site["port"]), Client(site["port"])
    viewer.login("victor", PASSWORD)
    admin.login("alice", PASSWORD)
    visitor = site["visitor"]
    path = f"/api/visitors/{visitor}/unmerge"
    status, body = admin.post_json(path, {})
    assert status == 400 and f"{visitor} is not merged into anyone" in body["detail"]
    assert admin.post_json(f"/api/visitors/{visitor}/name", {"name": XSS})[0] == 200
    tl = viewer.get_json(f"/api/identities/{visitor}")[1]
    assert (tl["kind"], tl["merged_into"], tl["unmerge"], tl["faces"]) == ("merged", XSS, True, [])
    status, body = admin.post_json(f"/api/visitors/{visitor}/name", {"name": "Dora"})
    assert status == 400 and "merged into" in body["detail"]  # a merged visitor cannot be named again
    assert viewer.post_json(path, {})[0] == 403  # a viewer
    assert admin.post_json(path, {}, csrf=False)[0] == 403  # no CSRF token
    assert Client(site["port"]).post_json(path, {})[0] == 401  # no session
    status, body = admin.post_json(path, {})
    assert status == 200 and body == {"visitor": visitor, "person": XSS, "faces_restored": 1,
                                      "person_faces_removed": 1, "events": 1, "live_tracks": 0}
    assert admin.post_json(path, {})[0] == 400  # nothing left to undo
    tl = viewer.get_json(f"/api/identities/{visitor}")[1]
    assert (tl["kind"], tl["merged_into"], len(tl["faces"])) == ("visitor", None, 1)
    (event,) = viewer.get_json("/api/events?camera=cam2")[1]["events"]
    assert (event["name"], event["visitor"], event["visitor_exists"]) == (visitor, True, True)
    persons = viewer.get_json("/api/persons")[1]
    assert {p["name"]: p["faces"] for p in persons["persons"]} == {"Ann": 1, XSS: 1}  # the visitor's face went
    store = open_store(LocalStoreConfig(path=site["dir"]), GalleryConfig())
    try:
        store.events.append([EventRecord(_event("track_identified", 3, "visitor-77", time.time(), visitor=True,
                                                camera="cam3"))])
    finally:
        store.close()
    (gone,) = viewer.get_json("/api/events?camera=cam3")[1]["events"]
    assert gone["visitor_exists"] is False  # the page offers no "Name" for it
    assert viewer.get_json("/api/identities/visitor-77")[1]["kind"] == "expired"
    records = json.loads(_cli("audit", "list", "--json", "--gallery", site["dir"]).stdout)["records"]
    assert [(r["action"], r["actor"]) for r in records if r["action"] == "unmerge"] == [("unmerge", "dashboard:alice")]
    resp, data = admin.request("GET", "/metrics")
    assert b'argusnet_dashboard_actions_total{action="unmerge"} 1.0' in data


def test_the_stream_pushes_new_events_and_catches_up_from_last_event_id(site):
    c = Client(site["port"])
    c.login("victor", PASSWORD)
    conn = http.client.HTTPConnection("127.0.0.1", site["port"], timeout=20)
    conn.request("GET", "/api/stream", headers={"Cookie": f"argusnet_session={c.cookies['argusnet_session']}",
                                                 "Last-Event-ID": "3"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/event-stream")
    store = open_store(LocalStoreConfig(path=site["dir"]), GalleryConfig())
    try:
        (new_id,) = store.events.append([EventRecord(_event("track_started", 42, None, time.time()))])
    finally:
        store.close()
    ids = []
    while new_id not in ids:  # the read times out (20 s) and fails the test if it never comes
        line = resp.fp.readline().decode()
        if line.startswith("id: "):
            ids.append(int(line[4:]))
    conn.close()
    assert ids == [4, 5, new_id]  # the two after Last-Event-ID from the log, then the new one live
