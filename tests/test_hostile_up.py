"""`argusnet up` and the set-up commands against hostile set-ups (issue 24): a folder in the working directory named
like a package, a crash-looping child, two `up`s on one site at once, cameras whose source cannot be opened, and
the README's set-up commands in either order on a fresh machine. Every test runs the real CLI and its children."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import yaml

from argusnet.launcher import free_port
from argusnet.site_lock import SiteLock, site_targets
from shared.errors import GalleryExistsError, InputError
from store.config import GalleryConfig, LocalStoreConfig, RedisStoreConfig
from store.local.gallery import DB_FILE, Gallery
from tests.processes import scrape, total, wait_until

REPO = Path(__file__).resolve().parents[1]
OPEN_FAILURES = "argusnet_camera_open_failures_total"
PASSWORD = "correct horse battery staple\n"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_gallery(tmp_path_factory, engine):
    from argusnet.commands.demo import enrol_demo_person

    directory = tmp_path_factory.mktemp("hostile-up") / "gallery"
    enrol_demo_person(engine, LocalStoreConfig(path=directory)).close()
    return directory


def site_config(path: Path, gallery: Path | None, cameras: list[dict], dashboard: dict | None = None) -> Path:
    """A site on free loopback ports: one worker, these cameras, the dashboard only when ``dashboard`` is given
    (its section; it listens on a free port)."""
    ports = {k: free_port() for k in ("frontend", "backend", "events_in", "events_out", "metrics")}
    cfg: dict = {"broker": {**{k: f"tcp://127.0.0.1:{ports[k]}" for k in ("frontend", "backend", "events_in",
                                                                          "events_out")},
                            "metrics_port": ports["metrics"]},
                 "up": {"workers": 1, "cameras": cameras, "dashboard": dashboard is not None},
                 "worker": {"metrics_port": 0}, "runtime": {"threads": 1}}
    if gallery is not None:
        cfg["up"]["gallery"] = str(gallery)
    if dashboard is not None:
        cfg["dashboard"] = {"listen": f"127.0.0.1:{free_port()}", **dashboard}
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli_env(**extra: str) -> dict[str, str]:
    """This checkout's code for a CLI run from any folder: `python -P` leaves the working directory off the module
    path of the command itself, PYTHONPATH names the checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUSNET__")}
    env.update(PYTHONPATH=str(REPO), **extra)
    return env


class Up:
    """A real `argusnet up` (its own process group) whose stderr is collected as it comes."""

    def __init__(self, *args: str | Path, cwd: Path = REPO, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-P", "-m", "argusnet", *map(str, args)], cwd=cwd,
                                     env=env or cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(stream, into), daemon=True)
                         for stream, into in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    def interrupt(self, timeout: float = 40) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.wait(timeout)

    def kill(self) -> None:
        """After a failed test: `up` and every child it started, so none outlives the test."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def test_folders_named_like_packages_in_the_working_directory_do_not_break_up(tmp_path, demo_gallery):
    """A `store/` (a data folder, say), `shared/` and `broker/` where `up` runs: every child still imports ArgusNet's
    own packages (they used to crash-loop with an ImportError)."""
    site = tmp_path / "site"
    for name in ("store", "shared", "broker", "gpu_worker"):
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text("raise ImportError('the working directory shadows ArgusNet')\n")
    config = site_config(tmp_path / "site.yaml", demo_gallery, [{"id": "demo", "source": "demo", "fps": 5}])
    events = tmp_path / "events.jsonl"
    up = Up("up", "--config", config, "--events-jsonl", events, "--logs", tmp_path / "logs", cwd=site)
    try:
        started = wait_until(lambda: events.exists() and '"track_started"' in events.read_text()
                             or up.proc.poll() is not None, 120, 0.3)
        assert started and up.proc.poll() is None, up.stderr
        assert up.interrupt() == 0, up.stderr
        assert "exited with code" not in up.stderr and "shadows ArgusNet" not in up.stderr, up.stderr
        assert "shadows ArgusNet" not in (tmp_path / "logs" / "worker-1.log").read_text()
    finally:
        up.kill()


def test_a_crash_looping_child_shows_its_last_error_once_per_crash(tmp_path, demo_gallery):
    """A dashboard whose session key file is too short exits at each start: the console says why, one line per
    crash, with no traceback (it used to say only "exited with code 2; restarting")."""
    key = tmp_path / "short.key"
    key.write_text("short")
    config = site_config(tmp_path / "site.yaml", demo_gallery, [], dashboard={"session_key_file": str(key)})
    up = Up("up", "--config", config, "--logs", tmp_path / "logs")
    reason = f"its last error: argusnet: error: dashboard.session_key_file {key}: expected at least 32 bytes"
    try:
        assert wait_until(lambda: up.stderr.count(reason) >= 2 or up.proc.poll() is not None, 90, 0.2), up.stderr
        up.interrupt()
        crashes = [line for line in up.stderr.splitlines() if "dashboard exited with code" in line]
        assert len(crashes) >= 2 and all(reason in line for line in crashes), up.stderr
        assert "dashboard exited with code 2; restarting in 1 s; " + reason in up.stderr
        assert "Traceback" not in up.stderr
    finally:
        up.kill()


def test_two_ups_on_one_site_at_once_one_runs_the_other_refuses(tmp_path):
    """Started together on a store nobody made yet: one enrols the demo face, prints one admin password and runs;
    the other exits 2 at once naming the site and the first one's pid (both used to run)."""
    gallery = tmp_path / "gallery"
    config = site_config(tmp_path / "site.yaml", gallery, [{"id": "demo", "source": "demo", "fps": 5}],
                         dashboard={})
    ups = [Up("up", "--config", config, "--duration", "1", "--logs", tmp_path / f"logs-{i}") for i in range(2)]
    try:
        codes = [u.wait(120) for u in ups]
        assert sorted(codes) == [0, 2], [u.stderr for u in ups]
        winner, loser = (ups[0], ups[1]) if codes[0] == 0 else (ups[1], ups[0])
        message = (f"argusnet: error: site {gallery} is already run by another `argusnet up` (pid {winner.proc.pid}, "
                   f"holding its store {gallery})")
        assert loser.stderr.startswith(message) and len(loser.stderr.splitlines()) == 1, loser.stderr
        both = winner.stderr + loser.stderr
        assert both.count("enrolled Eileen Collins") == 1 and both.count("dashboard login") == 1, both
    finally:
        for u in ups:
            u.kill()


def test_a_file_that_is_not_a_video_is_refused_at_start(tmp_path, demo_gallery):
    fake = tmp_path / "door.mp4"
    fake.write_text("this is text, not a video\n")
    config = site_config(tmp_path / "site.yaml", demo_gallery, [{"id": "demo", "source": "demo"},
                                                                 {"id": "door", "source": str(fake)}])
    up = Up("up", "--config", config)
    try:
        assert up.wait(60) == 2
        assert f"up.cameras[1].source {str(fake)!r}: the file is not a video OpenCV can read" in up.stderr, up.stderr
        assert "Traceback" not in up.stderr and "argusnet up:" not in up.stderr
    finally:
        up.kill()


def test_a_dead_stream_is_named_on_the_console_and_its_failed_opens_counted(tmp_path, demo_gallery):
    """A camera on a closed RTSP port: `up` keeps running (the stream may come up), its console names the camera,
    the source and the reason once (again each minute), and the camera counts each failed open."""
    closed = free_port()
    source = f"rtsp://127.0.0.1:{closed}/x"
    metrics = free_port()
    config = site_config(tmp_path / "site.yaml", demo_gallery,
                         [{"id": "door", "source": source, "metrics_port": metrics}])
    up = Up("up", "--config", config, "--logs", tmp_path / "logs")
    said = (f"argusnet up: camera-door: camera door cannot open its source {source}: cannot connect to "
            f"127.0.0.1:{closed}")
    try:
        assert wait_until(lambda: said in up.stderr or up.proc.poll() is not None, 120, 0.2), up.stderr
        assert wait_until(lambda: total(scrape(metrics), OPEN_FAILURES, camera="door") >= 3, 30, 0.2)
        assert up.proc.poll() is None
        assert up.interrupt() == 0, up.stderr
        assert up.stderr.count("cannot open its source") == 1, up.stderr
    finally:
        up.kill()


def test_a_camera_counts_the_failed_opens_of_a_file_that_is_not_a_video(tmp_path):
    fake = tmp_path / "door.mp4"
    fake.write_text("this is text, not a video\n")
    metrics = free_port()
    camera = Up("camera", "--id", "door", "--source", fake, "--broker", f"tcp://127.0.0.1:{free_port()}",
                "--metrics-port", str(metrics))
    try:
        assert wait_until(lambda: total(scrape(metrics), OPEN_FAILURES, camera="door") >= 2, 60, 0.2), camera.stderr
        assert camera.interrupt() == 0
        assert f"camera door cannot open its source {fake}: OpenCV cannot read {fake} as a video" in camera.stderr
    finally:
        camera.kill()


@pytest.mark.parametrize("user_first", [True, False], ids=["user-add-then-up", "up-then-user-add"])
def test_the_readmes_set_up_commands_work_in_either_order(tmp_path, user_first):
    """On a fresh machine (an empty user data directory, the default store): `argusnet dashboard user add` and
    `argusnet up` in either order. User add first used to leave a folder `up` refused as "not an ArgusNet
    gallery"."""
    env = cli_env(XDG_DATA_HOME=str(tmp_path / "data"), HOME=str(tmp_path / "home"))
    config = site_config(tmp_path / "site.yaml", None, [{"id": "demo", "source": "demo", "fps": 5}], dashboard={})
    password = tmp_path / "password"
    password.write_text(PASSWORD)
    user_add = ("--config", config, "dashboard", "user", "add", "ops", "--role", "admin", "--password-file", password)
    steps = [user_add, ("--config", config, "up", "--duration", "1", "--logs", tmp_path / "logs")]
    for args in steps if user_first else reversed(steps):
        run = Up(*args, env=env)
        try:
            assert run.wait(180) == 0, run.stderr + "".join(run.out)
            assert "Traceback" not in run.stderr
        finally:
            run.kill()
        if "up" in args:
            assert "enrolled Eileen Collins" in run.stderr
            assert ("dashboard login" in run.stderr) is not user_first, run.stderr
    listed = Up("--config", config, "dashboard", "user", "list", env=env)
    assert listed.wait(60) == 0
    users = "".join(listed.out)
    assert "ops (admin)" in users and ("admin (admin)" in users) is not user_first, users
    assert (tmp_path / "data" / "argusnet" / "gallery" / "gallery.sqlite").is_file()


def test_a_site_lock_refuses_a_second_holder_of_its_store_or_of_any_of_its_ports(tmp_path, monkeypatch):
    """flock locks belong to an open file, so a second SiteLock in this process is refused as another `up` is."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # this test's own folder of port locks
    redis = RedisStoreConfig(url="redis://127.0.0.1:6399/0", prefix="site-a")
    first = SiteLock("a", site_targets(redis, [15001, 15002])).acquire()
    try:
        for store, ports, held in ((redis, [16000], "store redis://127.0.0.1:6399/0 (prefix site-a)"),
                                   (LocalStoreConfig(path=tmp_path / "b"), [15002], "port 15002")):
            with pytest.raises(InputError, match=rf"site b is already run by another `argusnet up` "
                               rf"\(pid {os.getpid()}, holding its {re.escape(held)}\)"):
                SiteLock("b", site_targets(store, ports)).acquire()
        with SiteLock("c", site_targets(RedisStoreConfig(url=redis.url, prefix="site-c"), [16000])):
            pass  # another prefix and other ports: another site
    finally:
        first.release()
    with SiteLock("a", site_targets(redis, [15001, 15002])):
        pass  # released


def test_a_gallery_is_created_among_set_up_files_but_not_among_other_files(tmp_path):
    setup = tmp_path / "setup"
    setup.mkdir()
    for name in ("dashboard-users.json", "audit.jsonl", "argusnet-up.lock"):
        (setup / name).write_text("{}")
    Gallery.create(setup, "m", 4, GalleryConfig()).close()
    assert (setup / DB_FILE).is_file() and (setup / "dashboard-users.json").read_text() == "{}"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a staging folder was left behind"
    with pytest.raises(GalleryExistsError):
        Gallery.create(setup, "m", 4, GalleryConfig())
    other = tmp_path / "other"
    other.mkdir()
    (other / "dashboard-users.json").write_text("{}")
    (other / "notes.txt").write_text("mine")
    with pytest.raises(GalleryExistsError, match="exists and is not an empty directory"):
        Gallery.create(other, "m", 4, GalleryConfig())


def test_on_the_console_a_crashing_childs_traceback_is_cut_to_its_exception(capfd):
    """Without --logs the children write to this console through `up`: a traceback shows as its last line, and
    the crash message repeats it; the lines around it pass unchanged."""
    from argusnet import launcher

    code = "import sys; print('before', file=sys.stderr); raise ValueError('boom')"
    supervisor = launcher.Supervisor([launcher.ChildSpec("crasher", (), 0)], None, None, "INFO")
    supervisor._command = lambda spec: [sys.executable, "-c", code]  # a real process that crashes at once
    assert supervisor.run(threading.Event(), 2.5) in (0, 1)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "raise ValueError" not in err, err
    assert err.count("before\n") >= 2
    assert "ValueError: boom (in crasher; its traceback is left out: run with --logs DIR to keep it)" in err, err
    assert "crasher exited with code 1; restarting in 1 s; its last error: ValueError: boom\n" in err, err


def test_a_worker_says_when_its_cameras_exceed_what_it_sustains(caplog):
    """The worker's load monitor (its processing thread reports idle waits and finished frames): a window in which
    it was idle under 5% logs one warning naming its cameras and the rate it sustains, once a minute at most, and
    sets argusnet_worker_busy_ratio; a window with room to spare logs nothing. (A clock passed in: the windows are
    judged on what the thread reported, not on how loaded this machine is.)"""
    from prometheus_client import CollectorRegistry

    from gpu_worker.load import LOAD_WINDOW_S, LoadMonitor

    now = [0.0]
    registry = CollectorRegistry()
    monitor = LoadMonitor("w1", registry, clock=lambda: now[0])

    def window(idle_s: float, frames: int, cameras: int) -> None:
        for i in range(frames):
            now[0] += (LOAD_WINDOW_S - idle_s) / frames
            monitor.finished([f"cam{i % cameras}"])
        now[0] += idle_s + 0.01  # the window closes at the first report LOAD_WINDOW_S or more after it began
        monitor.idle(idle_s)

    with caplog.at_level("WARNING", logger="gpu_worker.load"):
        window(idle_s=4.0, frames=60, cameras=2)  # 40% idle: keeps up
        assert not [r for r in caplog.records if "cannot keep up" in r.message]
        assert 0.55 <= registry.get_sample_value("argusnet_worker_busy_ratio") <= 0.65
        window(idle_s=0.1, frames=80, cameras=6)  # 1% idle: saturated
        window(idle_s=0.1, frames=80, cameras=6)  # again, within the minute: not repeated
    lines = [r.getMessage() for r in caplog.records if "cannot keep up" in r.getMessage()]
    assert len(lines) == 1, lines
    assert re.search(r"worker w1 cannot keep up with its 6 camera\(s\): busy 99% of the last 1\d s, processing "
                     r"[\d.]+ frames/s", lines[0]), lines[0]
    assert registry.get_sample_value("argusnet_worker_busy_ratio") >= 0.95
