"""The dashboard in a real browser (headless Debian Chromium through Playwright) against a real `argusnet up`: a
broker, a worker, the built-in `demo` camera (Eileen Collins) and a file camera on a clip of arcade.mp4 whose
strangers become visitors, and the dashboard `up` starts with its first admin.

Logged out, pages redirect to /login and the API answers 401; as the admin, Eileen's track shows on the Live page
within 10 s of her `track_identified` event, in Recognitions and on her timeline (with a stored face); the admin
names a visitor of the second camera on its identity page and the store holds the new person; a person enrolled as
``<img src=x onerror=alert(1)>`` shows as literal text (no dialog, no such element) on every page; a viewer's
POSTs answer 403. Screenshots of each page go to out/dashboard-*.png (git-ignored: they show frames of
../shared/data; the README's picture, docs/dashboard-live.png, shows only the public-domain demo camera).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

import cv2
import pytest
import yaml

from argusnet.launcher import free_port
from tests.browser import chromium
from tests.conftest import REPO, require_data, run_cli

# a hang (a page that never draws, `up` that never stops) fails the test after 5 minutes; the fixture then kills
# `up` and every child it started
pytestmark = [pytest.mark.slow, pytest.mark.data, pytest.mark.timeout(300)]

XSS = "<img src=x onerror=alert(1)>"
EILEEN = "Eileen Collins"
NEW_NAME = "Arcade Walker"
LIVE_WITHIN_S = 10.0
OUT = REPO / "out"
PASSWORD_LINE = re.compile(r"dashboard login \(shown once[^)]*\): user (\S+), password (\S+)")
CLIP_SIDE = (960, 540)  # arcade.mp4 is 1920x1080: half size keeps the worker's share of 2 cores small


def cut_clip(source: Path, target: Path) -> Path:
    """arcade.mp4 at half size (MJPG AVI, every frame: 4.2 s at 25 fps, looped by the camera)."""
    cap = cv2.VideoCapture(str(source))
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"MJPG"), cap.get(cv2.CAP_PROP_FPS) or 25,
                             CLIP_SIDE)
    frames = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        writer.write(cv2.resize(frame, CLIP_SIDE, interpolation=cv2.INTER_AREA))
        frames += 1
    cap.release()
    writer.release()
    assert frames > 50, f"read only {frames} frames from {source}"
    return target


def site_config(tmp: Path, store: Path, clip: Path) -> tuple[Path, int]:
    """tmp/site.yaml with every listening port picked free here; the dashboard's port."""
    ports = {k: free_port() for k in ("frontend", "backend", "events_in", "events_out", "broker", "worker", "demo",
                                      "arcade", "dashboard")}
    tcp = {k: f"tcp://127.0.0.1:{ports[k]}" for k in ("frontend", "backend", "events_in", "events_out")}
    cfg = {"broker": {**tcp, "metrics_port": ports["broker"]},
           "worker": {"metrics_port": ports["worker"]},
           "runtime": {"threads": 1},  # 2 shared cores: one ONNX thread per session
           "store": {"type": "local", "path": str(store)},
           "up": {"workers": 1, "cameras": [
               {"id": "demo", "source": "demo", "metrics_port": ports["demo"]},
               {"id": "arcade", "source": str(clip), "loop": True, "fps": 5, "metrics_port": ports["arcade"]}]},
           "dashboard": {"listen": f"127.0.0.1:{ports['dashboard']}"}}
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, ports["dashboard"]


@dataclass
class Up:
    proc: subprocess.Popen
    base: str
    config: Path
    store: Path
    logs: Path
    stderr: list[str] = field(default_factory=list)

    def admin_password(self, timeout: float = 60) -> tuple[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.stderr):
                found = PASSWORD_LINE.search(line)
                if found:
                    return found.group(1), found.group(2)
            assert self.proc.poll() is None, "`up` exited:\n" + "".join(self.stderr)
            time.sleep(0.1)
        raise AssertionError("no admin password on `up`'s stderr:\n" + "".join(self.stderr))

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            assert self.proc.poll() is None, "`up` exited:\n" + "".join(self.stderr)
            time.sleep(0.2)
        raise AssertionError(f"the dashboard never answered /healthz:\n{self.log('dashboard')}")

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"

    def stop(self) -> int:
        """SIGINT (Ctrl-C), as an operator stops it; every child is killed if it does not stop in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError("`up` did not stop within 40 s of SIGINT")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def start_up(config: Path, store: Path, port: int, tmp: Path) -> Up:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUSNET__")}
    proc = subprocess.Popen([sys.executable, "-m", "argusnet", "--config", str(config), "up", "--logs",
                             str(tmp / "logs")], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    up = Up(proc, f"http://127.0.0.1:{port}", config, store, tmp / "logs")

    def read() -> None:
        for line in proc.stderr:
            up.stderr.append(line)
    threading.Thread(target=read, daemon=True).start()
    return up


@pytest.fixture
def site(tmp_path):
    """The running `up` (stopped with SIGINT at the end of the test, killed if it hangs), its store holding Eileen
    Collins (the demo's portrait, as `up` enrols it) and XSS (enrolled with the CLI from another identity's
    photo) before it starts."""
    clip = cut_clip(require_data("facenet-pytorch", "arcade.mp4"), tmp_path / "arcade.avi")
    photo = require_data("facenet-pytorch", "test_images", "angelina_jolie", "1.jpg")
    store = tmp_path / "store"
    config, port = site_config(tmp_path, store, clip)
    for args in (("demo", "--gallery", store), ("enroll", XSS, photo, "--gallery", store)):
        r = run_cli("--config", config, *args, timeout=120)
        assert r.code == 0, r.err
    up = start_up(config, store, port, tmp_path)
    try:
        yield up
    finally:
        up.kill()


def shot(page, name: str, full_page: bool = True) -> Path:
    OUT.mkdir(exist_ok=True)
    path = OUT / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def watch_dialogs(context, opened: list[str]) -> None:
    """Every dialog (alert, confirm, ...) any page of ``context`` opens is recorded and dismissed."""
    def on_dialog(dialog) -> None:
        opened.append(f"{dialog.type}: {dialog.message} on {dialog.page.url if dialog.page else '?'}")
        dialog.dismiss()
    context.on("dialog", on_dialog)


def log_in(browser, base: str, user: str, password: str, dialogs: list[str]):
    context = browser.new_context(base_url=base, viewport={"width": 1280, "height": 900})
    watch_dialogs(context, dialogs)
    page = context.new_page()
    page.goto("/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url("**/live")
    return context, page


def check_logged_out(browser, base: str, dialogs: list[str]) -> None:
    context = browser.new_context(base_url=base)
    watch_dialogs(context, dialogs)
    page = context.new_page()
    page.goto("/live")
    assert re.search(r"/login\?next=(%2F|/)live$", page.url), page.url
    assert page.locator("input[name=username]").is_visible()
    shot(page, "login")
    assert context.request.get("/api/events").status == 401
    assert context.request.get("/api/persons").status == 401
    context.close()


# A MutationObserver on the Live page's track table: the first time (performance.timeOrigin + now(), ms since the
# epoch) each (camera, track) shows with a name
OBSERVE_LIVE = """() => {
  window.seenAt = {};
  const note = () => {
    const now = performance.timeOrigin + performance.now();
    for (const tr of document.querySelectorAll("#live-tracks tbody tr")) {
      const key = tr.dataset.camera + "/" + tr.dataset.track + "/" + tr.dataset.name;
      if (tr.dataset.name && !(key in window.seenAt)) window.seenAt[key] = now;
    }
  };
  new MutationObserver(note).observe(document.querySelector("#live-tracks tbody"), {childList: true, subtree: true});
  note();
  return performance.timeOrigin + performance.now();
}"""


def eileen_on_live(context, page, up: Up) -> float:
    """Seconds from a fresh `track_identified` event of Eileen (one emitted after the page started watching) to
    her named track showing on the Live page."""
    watching_since = page.evaluate(OBSERVE_LIVE) / 1000.0
    deadline = time.monotonic() + 75
    while time.monotonic() < deadline:
        events = context.request.get(f"/api/events?identity={quote(EILEEN)}&limit=50").json()["events"]
        fresh = [e for e in events if e["type"] == "track_identified" and e["ts"] > watching_since]
        seen = page.evaluate("() => window.seenAt")
        for event in sorted(fresh, key=lambda e: e["ts"]):
            at = seen.get(f"{event['camera']}/{event['track']}/{EILEEN}")
            if at is not None:
                return at / 1000.0 - event["ts"]
            late = time.time() - event["ts"]
            assert late < LIVE_WITHIN_S, (f"track {event['camera']}/{event['track']} identified {late:.1f} s ago is "
                                          f"not on the Live page; rows seen: {seen}")
        time.sleep(0.2)
    raise AssertionError(f"no track_identified of {EILEEN} within 75 s:\n{up.log('worker-1')}\n{up.log('dashboard')}")


PREVIEWS_LOADED = """() => {
  const imgs = [...document.querySelectorAll("#cameras img.preview")];
  return imgs.length >= 2 && imgs.every((i) => i.complete && i.naturalWidth > 0);
}"""


def check_live(context, page, up: Up) -> None:
    lag = eileen_on_live(context, page, up)
    print(f"Eileen Collins on the Live page {lag * 1000:.0f} ms after her track_identified event")
    assert -1.0 < lag < LIVE_WITHIN_S, lag
    page.wait_for_timeout(3000)  # the picture: she has walked into view, her box named in the preview
    page.locator(f'#live-tracks tbody tr[data-name="{EILEEN}"]').wait_for(timeout=20_000)
    page.wait_for_function(PREVIEWS_LOADED, timeout=10_000)
    tiles = page.locator("#cameras .tile.online")
    assert sorted(tiles.evaluate_all("ts => ts.map(t => t.dataset.camera)")) == ["arcade", "demo"]
    shot(page, "live", full_page=False)  # shows frames of ../shared/data: stays in out/, never in the repository


def check_eileen_pages(page) -> None:
    page.goto("/recognitions")
    page.locator(f'#events tbody tr[data-type="track_identified"][data-name="{EILEEN}"]').first.wait_for()
    shot(page, "recognitions", full_page=False)  # the newest rows: the history is long
    page.goto(f"/identity/{quote(EILEEN)}")
    page.locator("#timeline tbody tr").first.wait_for()
    assert page.locator("#identity-kind").inner_text().startswith("Enrolled person")
    page.wait_for_function("() => [...document.querySelectorAll('#faces img')].some(i => i.complete && "
                           "i.naturalWidth > 0)", timeout=10_000)
    rows = page.locator("#timeline tbody tr").evaluate_all("rs => rs.map(r => r.cells[1].textContent)")
    assert "demo" in rows, rows
    shot(page, "identity")


def arcade_visitor(context) -> str:
    """A visitor a track of the second camera was named as, that the store still holds."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        events = context.request.get("/api/events?camera=arcade&limit=500").json()["events"]
        named = {e["name"] for e in events if e["type"] == "track_identified" and e["visitor"]}
        held = {v["visitor"] for v in context.request.get("/api/persons").json()["visitors"] if v["faces"] > 0}
        if named & held:
            return sorted(named & held)[0]
        time.sleep(0.5)
    raise AssertionError(f"no visitor from camera arcade: events {events}")


def check_name_visitor(context, page, up: Up) -> None:
    visitor = arcade_visitor(context)
    page.goto(f"/identity/{visitor}")
    page.locator("#name-visitor").wait_for()
    page.fill("#visitor-new-name", NEW_NAME)
    page.click("#name-visitor")
    page.wait_for_url(lambda url: unquote(urlparse(url).path) == f"/identity/{NEW_NAME}")
    r = run_cli("gallery", "list", "--json", "--gallery", up.store, timeout=60)
    assert r.code == 0, r.err
    persons = {p["name"]: p["faces"] for p in json.loads(r.out)["persons"]}
    assert persons.get(NEW_NAME, 0) >= 1 and {EILEEN, XSS} <= set(persons), persons
    visitors = {v["visitor"] for v in context.request.get("/api/persons").json()["visitors"]}
    assert visitor not in visitors, f"{visitor} is still a visitor after it was named"


def assert_literal(page, where: str) -> None:
    """The XSS name is text on the page: no element made from it, its markup escaped in the DOM."""
    assert page.locator("img[src='x']").count() == 0, where
    assert page.locator("img[onerror]").count() == 0, where
    assert "<img src=x" not in page.content(), where


def check_xss(page) -> None:
    page.goto("/people")
    link = page.locator("#persons tbody a.name", has_text=XSS)
    link.wait_for()
    assert link.inner_text() == XSS
    page.locator("#persons tbody a.name", has_text=NEW_NAME).wait_for()
    assert_literal(page, "people")
    shot(page, "people")
    link.click()
    page.wait_for_url(lambda url: unquote(urlparse(url).path) == f"/identity/{XSS}")
    page.locator("#faces img").first.wait_for()
    assert page.locator("#identity-name").inner_text() == XSS
    assert page.title().startswith(XSS)
    assert_literal(page, "identity of XSS")
    for path, drawn in (("/live", "#cameras .tile"), ("/recognitions", "#events tbody tr")):
        page.goto(path)
        page.locator(drawn).first.wait_for()
        assert_literal(page, path)


POST_AS_PAGE = """async ([url, body]) => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const r = await fetch(url, {method: "POST", credentials: "same-origin",
                              headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
                              body: JSON.stringify(body)});
  return r.status;
}"""


def check_viewer(browser, up: Up, tmp: Path, dialogs: list[str]) -> None:
    password = tmp / "viewer.pw"
    password.write_text("viewer-password-0123\n")
    r = run_cli("dashboard", "user", "add", "viewer1", "--role", "viewer", "--password-file", password,
                "--gallery", up.store, timeout=60)
    assert r.code == 0, r.err
    context, page = log_in(browser, up.base, "viewer1", "viewer-password-0123", dialogs)
    page.goto("/recognitions")
    page.locator("#events tbody tr").first.wait_for()
    assert page.locator("#events button").count() == 0, "a viewer is offered admin actions"
    assert context.request.get("/api/events?limit=1").status == 200
    events = context.request.get("/api/events?camera=demo&limit=50").json()["events"]
    named = next(e for e in events if e["type"] == "track_identified")
    for url, body in ((f"/api/visitors/{quote('visitor-1')}/name", {"name": "Not Allowed"}),
                      (f"/api/tracks/demo/{named['track']}/reject", {"name": EILEEN}),
                      (f"/api/persons/{quote(EILEEN)}/remove", {})):
        assert page.evaluate(POST_AS_PAGE, [url, body]) == 403, url
    context.close()


def test_dashboard_in_a_browser_against_a_real_up(site, tmp_path):
    started = time.monotonic()
    user, password = site.admin_password()
    assert user == "admin" and len(password) >= 12
    site.wait_healthy()
    dialogs: list[str] = []
    with chromium() as browser:
        check_logged_out(browser, site.base, dialogs)
        context, page = log_in(browser, site.base, user, password, dialogs)
        check_live(context, page, site)
        check_eileen_pages(page)
        check_name_visitor(context, page, site)
        check_xss(page)
        context.close()
        check_viewer(browser, site, tmp_path, dialogs)
    assert dialogs == [], dialogs
    assert site.stop() == 0, "".join(site.stderr)
    print(f"browser test took {time.monotonic() - started:.1f} s after the store was prepared")
