"""The deployment files (Dockerfile, deploy/compose.yaml, deploy/k8s/, the site configurations) checked without a
Docker daemon or a cluster: `docker-compose config` (Debian's), the Redis commands and healthchecks run against a
real redis-server, the broker started with the compose site configuration and probed with its healthcheck, every
site configuration loaded by ArgusNet's own loader, and every Kubernetes object of the base and each overlay,
rendered by a small kustomize for the subset these kustomizations use, validated against the Kubernetes 1.30
schemas (strict) and compared with `kubectl kustomize` where kubectl is installed."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.parse
import zipfile
from pathlib import Path
from typing import Any, Iterator

import kubernetes_validate
import pytest
import redis
import yaml

from argusnet.config import ArgusConfig, load_config
from argusnet.launcher import free_port
from store.audit import AuditKey
from store.crypto import load_key

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
SITE = DEPLOY / "config" / "site.yaml"
K8S = DEPLOY / "k8s"
K8S_BUILDS = {"base": K8S / "base", "gpu": K8S / "overlays" / "gpu",
              "external-redis": K8S / "overlays" / "external-redis"}
K8S_VERSION = "1.30.0"
CONFIG_ARG = "--config"
ARGUSNET_SERVICES = {"broker", "worker", "worker-gpu", "dashboard"}
ONE_SHOT = {"store-init"}  # runs to completion before the services that need the store
COMPOSE_SERVICES = ARGUSNET_SERVICES | ONE_SHOT | {"redis", "prometheus", "grafana"}
COMMANDS = {"broker", "worker", "dashboard"}


def no_argusnet_env() -> dict[str, str]:
    """This environment without ARGUSNET_* / ARGUSNET__* variables (a developer's overrides)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ARGUSNET")}


def config_paths(cfg: ArgusConfig, command: str) -> dict[str, Path]:
    """The files and folders ``argusnet COMMAND`` reads besides its configuration, by config field."""
    paths: dict[str, Path | None] = {}
    if command == "broker":
        paths = {"security.broker_secret_key": cfg.security.broker_secret_key,
                 "security.allowed_keys_dir": cfg.security.allowed_keys_dir,
                 "security.worker_keys_dir": cfg.security.worker_keys_dir}
    if command in ("worker", "dashboard"):
        paths.update({"store.password_file": cfg.store.password_file,
                      "store.encryption_key_file": cfg.store.encryption_key_file,  # encryption at rest: on
                      "store.audit_key_file": cfg.store.audit_key_file})  # the audit chain keyed
    if command == "worker":  # CurveZMQ on the worker and event sockets: the worker's key pair, the broker's key
        paths.update({"security.worker_secret_key": cfg.security.worker_secret_key,
                      "security.broker_public_key": cfg.security.broker_public_key})
    if command == "dashboard":
        paths.update({"dashboard.users_file": cfg.dashboard.users_file,
                      "dashboard.session_key_file": cfg.dashboard.session_key_file})
    missing = sorted(k for k, v in paths.items() if v is None)
    assert not missing, f"{command}: {missing} not set in the site configuration"
    return {k: v for k, v in paths.items() if v is not None}


# --- site configurations -------------------------------------------------------------------------------------------

SITE_FILES = [SITE, K8S / "base" / "site.yaml", K8S / "overlays" / "external-redis" / "site.yaml"]


@pytest.mark.parametrize("path", SITE_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_site_configuration_loads_and_serves_containers(path: Path) -> None:
    """Each site file passes ArgusNet's own validation, keeps its secrets in files and listens beyond loopback."""
    cfg = load_config(path, environ={})
    assert cfg.store.type == "redis" and cfg.store.password_file is not None
    assert cfg.store.encryption_key_file is not None, "encryption at rest is on in the shipped site files"
    assert cfg.store.audit_key_file is not None, "the audit chain is keyed in the shipped site files"
    assert cfg.store.audit_key_file.parent != cfg.store.encryption_key_file.parent or \
        cfg.store.audit_key_file.parent == Path("/run/secrets"), "the audit key is a secret of its own"
    assert urllib.parse.urlsplit(cfg.store.url).password is None
    assert cfg.security.curve, "frames cross the network: CurveZMQ on the cameras' port"
    for name in ("frontend", "backend", "events_in", "events_out"):
        assert getattr(cfg.broker, name).startswith("tcp://*:"), f"broker.{name} binds every interface"
    assert all(e.startswith("tcp://broker:") for e in cfg.broker.worker_backends + cfg.broker.worker_events_in)
    assert cfg.broker.worker_backends and cfg.broker.worker_events_in
    assert cfg.broker.metrics_host == "0.0.0.0" and cfg.worker.metrics_host == "0.0.0.0"
    assert cfg.dashboard.listen.startswith("0.0.0.0:")
    assert not cfg.up.dashboard and [c.id for c in cfg.up.cameras]
    for command in COMMANDS:
        config_paths(cfg, command)


def test_external_redis_site_differs_from_the_base_only_in_its_store() -> None:
    base = yaml.safe_load((K8S / "base" / "site.yaml").read_text())
    external = yaml.safe_load((K8S / "overlays" / "external-redis" / "site.yaml").read_text())
    assert base.pop("store") != external.pop("store")
    assert base == external


def test_a_bad_site_configuration_is_refused(tmp_path: Path) -> None:
    """The loader the site tests rely on refuses an unknown key (so a misspelt one in a site file fails them)."""
    data = yaml.safe_load(SITE.read_text())
    data["broker"]["metrics_hots"] = "0.0.0.0"
    bad = tmp_path / "site.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(Exception, match="metrics_hots"):
        load_config(bad, environ={})


# --- Dockerfile ----------------------------------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined and comments dropped (as Docker does)."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or (not pending and not line.strip()):
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        text = (pending + line).strip()
        pending = ""
        instruction, _, args = text.partition(" ")
        out.append((instruction.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def copied_sources(steps: list[tuple[str, str]]) -> set[str]:
    """What the COPY instructions take from the build context (every argument but the destination)."""
    return {src for i, a in steps if i == "COPY" and not a.startswith("--from") for src in a.split()[:-1]}


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def requirement_name(spec: str) -> str:
    return re.split(r"[=<>\[;]", spec, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_dockerfile_builds_the_pinned_tree_as_a_non_root_argusnet_entrypoint() -> None:
    steps = dockerfile_instructions()
    args = dict(a.split("=", 1) for i, a in steps if i == "ARG" and "=" in a)
    froms = [a for i, a in steps if i == "FROM"]
    assert args["PYTHON_IMAGE"] == "python:3.11-slim-bookworm"
    assert all(f.split()[0] == "${PYTHON_IMAGE}" for f in froms) and len(froms) == 2
    final = steps[max(n for n, (i, _) in enumerate(steps) if i == "FROM"):]
    user = [a for i, a in final if i == "USER"]
    assert user and user[-1].split(":")[0].isdigit() and int(user[-1].split(":")[0]) > 0
    assert json.loads(dict(final)["ENTRYPOINT"]) == ["argusnet"]
    runs = [a for i, a in steps if i == "RUN"]
    assert any("pip install --no-deps -r /tmp/runtime.lock" in r for r in runs)
    assert any("pip install --no-deps --no-build-isolation ." in r for r in runs)
    copied = copied_sources(steps)
    packages = {p.rstrip("*") for p in pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages | {"pyproject.toml", "README.md", "requirements.lock"} <= copied
    for run in runs:  # every RUN is valid sh, every python -c snippet valid Python
        check = subprocess.run(["sh", "-n", "-c", run], capture_output=True, text=True)
        assert check.returncode == 0, f"{run}\n{check.stderr}"
        for snippet in re.findall(r'python (?:-P )?-c "([^"]*)"', run):
            compile(snippet, "Dockerfile", "exec")


def test_dockerfile_leaves_out_exactly_the_test_tools_and_pins_the_gpu_extra() -> None:
    run = next(a for i, a in dockerfile_instructions() if i == "RUN" and "runtime.lock" in a)
    grep = run.split(">", 1)[0]
    assert grep.startswith("grep ")
    kept = subprocess.run(["sh", "-c", grep], cwd=REPO, capture_output=True, text=True, check=True).stdout
    lock = {requirement_name(x): x for x in (REPO / "requirements.lock").read_text().split()}
    kept_names = {requirement_name(x) for x in kept.split()}
    project = pyproject()["project"]
    extras = project["optional-dependencies"]
    assert set(lock) - kept_names == {requirement_name(x) for x in extras["test"]}
    runtime = project["dependencies"] + extras["worker"] + [x for x in extras["dashboard"] if "[" not in x]
    for spec in runtime:
        pinned = lock[requirement_name(spec)].split("==")[1]
        assert pinned == spec.split("==")[1], f"{spec} pinned otherwise in the lock ({pinned})"
    gpu_run = next(a for i, a in dockerfile_instructions() if i == "RUN" and "requirements-gpu.lock" in a)
    assert "pip uninstall -y onnxruntime" in gpu_run and "--no-deps -r requirements-gpu.lock" in gpu_run
    gpu_lock = [x for x in (REPO / "requirements-gpu.lock").read_text().splitlines() if x and x[0] != "#"]
    assert gpu_lock[0] == extras["gpu"][0] and all("==" in x for x in gpu_lock)
    assert not {requirement_name(x) for x in gpu_lock} & set(lock), "the GPU lock repeats the CPU tree"


def test_dockerfile_converts_dlib_into_a_cache_the_containers_user_can_read(tmp_path: Path) -> None:
    """The build step that converts dlib's network (run here into a temporary cache) leaves files every user can
    read: the containers run as uid 10001 on a read-only file system and would otherwise convert again, and fail."""
    steps = dockerfile_instructions()
    cache = dict((a.split("=", 1)[0], a.split("=", 1)[1]) for i, a in steps if i == "ENV" and
                 a.startswith("XDG_CACHE_HOME="))["XDG_CACHE_HOME"]
    run = next(a for i, a in steps if i == "RUN" and "cached_onnx" in a)
    env = {**no_argusnet_env(), "XDG_CACHE_HOME": str(tmp_path),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["sh", "-c", run.replace(cache, str(tmp_path))], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    files = list((tmp_path / "argusnet" / "models").iterdir())
    assert {p.suffix for p in files} == {".onnx", ".sha256"}
    assert all(p.stat().st_mode & 0o004 for p in files), "not readable by the containers' user"


def test_dockerignore_sends_only_what_the_image_needs() -> None:
    lines = [x.strip() for x in (REPO / ".dockerignore").read_text().splitlines()]
    rules = [x for x in lines if x and not x.startswith("#")]
    assert rules[0] == "*", "an allow-list: nothing enters the build context unless named"
    allowed = {x[1:].rstrip("/") for x in rules if x.startswith("!")}
    needed = copied_sources(dockerfile_instructions())
    assert needed <= allowed
    assert not {".venv", ".git", "deploy", "tests", "out"} & allowed


def test_the_wheel_the_image_installs_holds_the_dashboard_assets(tmp_path: Path) -> None:
    """The image installs the project as a wheel (`pip install .`), not editable: the dashboard's templates and
    static files must be package data, or the dashboard cannot render a page in the container."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for package in pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]:
        name = package.rstrip("*")
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(src)], check=True, timeout=300,
                   capture_output=True)
    wheel = next((tmp_path / "dist").glob("argusnet-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {f"dashboard/{p.relative_to(REPO / 'dashboard')}" for folder in ("templates", "static")
              for p in (REPO / "dashboard" / folder).rglob("*") if p.is_file()}
    assert wanted and not wanted - names, f"missing from the wheel: {sorted(wanted - names)}"


# --- compose -------------------------------------------------------------------------------------------------------

def compose_config(secrets_dir: Path) -> dict[str, Any]:
    """`docker-compose -f deploy/compose.yaml config` (no daemon needed), with the secrets folder ``secrets_dir``."""
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is not installed: `make test` installs it (apt-get install docker-compose)")
    env = {**no_argusnet_env(), "ARGUSNET_SECRETS": str(secrets_dir)}
    done = subprocess.run([exe, "-f", str(COMPOSE), "config"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"docker-compose config failed:\n{done.stderr}"
    return yaml.safe_load(done.stdout)


SECRET_FILES = ("redis_password", "broker.key_secret", "broker.key", "worker.key_secret", "dashboard-users.json",
                "dashboard-session.key", "grafana_admin_password", "store-encryption.key", "audit.key")


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The resolved compose file, its secrets folder laid out as deploy/README.md makes it."""
    secrets_dir = tmp_path_factory.mktemp("secrets")
    (secrets_dir / "cameras").mkdir()
    (secrets_dir / "workers").mkdir()
    for name in SECRET_FILES:
        (secrets_dir / name).write_text("placeholder\n")
    cfg = compose_config(secrets_dir)
    cfg["_secrets_dir"] = secrets_dir
    return cfg


def volumes(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read-only) of each volume, from compose v1's SRC:DST[:MODE] or v2's long syntax."""
    out = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            out.append((str(volume.get("source", "")), volume["target"], bool(volume.get("read_only"))))
        else:
            parts = volume.split(":")
            out.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return out


def ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, published port, container port) of each published port (v1 strings or dicts, v2 dicts)."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((port.get("host_ip", ""), int(port["published"]), int(port["target"])))
        else:
            *host, published, target = port.split("/")[0].split(":")
            out.append((host[0] if host else "", int(published), int(target)))
    return out


def unescape(text: str) -> str:
    """What the container runs: compose's ``$$`` is a literal ``$``."""
    return text.replace("$$", "$")


def test_compose_services_each_with_a_healthcheck(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == COMPOSE_SERVICES
    for name, service in services.items():
        if name in ONE_SHOT:
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
    assert services["worker"]["deploy"]["replicas"] == 2
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"] and gpu["build"]["args"]["EXTRAS"] == "gpu"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert gpu["environment"] == {"ARGUSNET__RUNTIME__REQUIRE_PROVIDER": "cuda"}  # no silent CPU fall-back
    assert load_config(SITE, environ=gpu["environment"]).runtime.require_provider == "cuda"
    assert "environment" not in services["worker"]
    assert services["worker"]["build"]["args"]["EXTRAS"] == ""
    assert services["redis"]["image"].startswith("redis:7")
    assert services["dashboard"]["healthcheck"]["test"][-1].count("/healthz") == 1


def test_compose_runs_argusnet_from_the_read_only_site_configuration(compose: dict[str, Any]) -> None:
    cfg = load_config(SITE, environ={})
    listen = {"broker": cfg.broker.metrics_port, "worker": cfg.worker.metrics_port,
              "dashboard": int(cfg.dashboard.listen.rsplit(":", 1)[1])}
    for name in ARGUSNET_SERVICES:
        service = compose["services"][name]
        assert service["build"]["context"] == str(REPO) and service["build"]["dockerfile"] == "Dockerfile"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        command = service["command"]
        assert command[:2] == [CONFIG_ARG, "/etc/argusnet/site.yaml"] and command[2] in COMMANDS
        assert (str(SITE), "/etc/argusnet/site.yaml", True) in volumes(service)
        assert f"127.0.0.1:{listen[command[2]]}/" in service["healthcheck"]["test"][-1]
        secrets = {s["source"] for s in service.get("secrets", [])}
        targets = [target for _, target, _ in volumes(service)]
        for field, path in config_paths(cfg, command[2]).items():
            in_secret = path.parent == Path("/run/secrets") and path.name in secrets
            in_volume = any(path == Path(t) or Path(t) in path.parents for t in targets)
            assert in_secret or in_volume, f"{name}: {field} {path} is neither a secret nor a mounted volume"
    assert ports(compose["services"]["dashboard"]) == [("127.0.0.1", 8080, listen["dashboard"])]
    assert ports(compose["services"]["broker"]) == [("", 5555, int(cfg.broker.frontend.rsplit(":", 1)[1]))]
    assert not any(ports(compose["services"][name]) for name in ("worker", "worker-gpu", "redis"))


def test_compose_creates_the_store_before_the_workers_and_the_dashboard(compose: dict[str, Any]) -> None:
    services = compose["services"]
    init = services["store-init"]
    assert init["command"] == [CONFIG_ARG, "/etc/argusnet/site.yaml", "store", "init"]
    assert init["restart"] == "no" and init["read_only"] is True and {"redis_password", "store_encryption_key",
                                                                       "audit_key"} <= {
        s["source"] for s in init["secrets"]}  # it creates the store encrypted, and opens it with both keys
    for name in ("worker", "worker-gpu", "dashboard"):
        assert services[name]["depends_on"]["store-init"] == {"condition": "service_completed_successfully"}, name


def readme_secret_commands() -> list[str]:
    """The shell lines of deploy/README.md's Secrets block (continuations joined)."""
    text = (DEPLOY / "README.md").read_text()
    block = text.split("## Secrets", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip() and not line.startswith("#")]


def test_the_readme_makes_both_store_keys(compose: dict[str, Any], tmp_path: Path) -> None:
    """The two store keys compose reads are made by lines of the README's Secrets block; those lines, run here
    with this checkout's `argusnet` in place of the image, make keys that ArgusNet loads (encryption at rest and
    the audit key are made by the deploy steps: no default key exists)."""
    lines = readme_secret_commands()
    image = re.compile(r"^docker run .*argusnet:cpu ")
    keygens = [line for line in lines if image.match(line) and " store keygen " in line]
    made = {line.rsplit("/", 1)[1] for line in keygens}
    assert made == {Path(compose["secrets"][name]["file"]).name for name in ("store_encryption_key", "audit_key")}
    (tmp_path / "secrets").mkdir()
    for line in keygens:
        args = shlex.split(image.sub("", line).replace("/secrets/", f"{tmp_path}/secrets/"))
        done = subprocess.run([sys.executable, "-m", "argusnet", *args], cwd=REPO, env=no_argusnet_env(),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    assert len(load_key(tmp_path / "secrets" / "store-encryption.key")) == 32
    assert AuditKey.from_file(tmp_path / "secrets" / "audit.key").id
    model_fields = type(load_config(SITE, environ={}).store).model_fields
    fields = {f for f in model_fields if f.endswith("_key_file")}
    assert fields == {"encryption_key_file", "audit_key_file"}
    assert all(model_fields[f].default is None for f in fields)


def test_compose_secrets_are_files_never_values(compose: dict[str, Any]) -> None:
    declared = compose["secrets"]
    secrets_dir = compose["_secrets_dir"]
    assert all(Path(s["file"]).parent == secrets_dir for s in declared.values())
    for name, service in compose["services"].items():
        assert {s["source"] for s in service.get("secrets", [])} <= set(declared), name
        for key in service.get("environment", {}):
            if re.search("PASSWORD|SECRET|TOKEN", key):
                assert key.endswith("__FILE"), f"{name}: {key} holds a secret value"
    grafana = compose["services"]["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert {s["source"] for s in grafana["secrets"]} == {"grafana_admin_password"}
    text = COMPOSE.read_text()
    assert "requirepass" not in text.replace("requirepass \"%s\"", ""), "only the secret file's line"


def test_compose_mounts_prometheus_and_provisions_grafana(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    assert (str(DEPLOY / "prometheus"), "/etc/prometheus", True) in volumes(prometheus)
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    grafana = volumes(compose["services"]["grafana"])
    assert (str(DEPLOY / "grafana" / "provisioning"), "/etc/grafana/provisioning", True) in grafana
    dashboards = [t for s, t, ro in grafana if s == str(DEPLOY / "grafana" / "argusnet.json") and ro]
    providers = [p for f in (DEPLOY / "grafana" / "provisioning" / "dashboards").glob("*.yaml")
                 for p in yaml.safe_load(f.read_text())["providers"]]
    assert len(dashboards) == 1 and str(Path(dashboards[0]).parent) in {p["options"]["path"] for p in providers}
    sources = [d for f in (DEPLOY / "grafana" / "provisioning" / "datasources").glob("*.yaml")
               for d in yaml.safe_load(f.read_text())["datasources"]]
    assert {urllib.parse.urlsplit(d["url"]).hostname for d in sources} <= set(compose["services"])


# --- Redis: the compose and StatefulSet commands against a real redis-server ---------------------------------------

class ShellRedis:
    """A Redis started by a deployment's own shell command, on a free loopback port in ``directory``."""

    def __init__(self, command: str, secret: str, password_file: Path, directory: Path) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed: `make test` installs it (apt-get install redis-server)")
        self.port = free_port()
        self.secret, self.password_file = secret, password_file
        # the data folder here (a --dir given twice: redis changes into the first one already)
        script = re.sub(r"--dir \S+", "", self.local(command))
        script += f" --port {self.port} --bind 127.0.0.1 --dir {directory}"
        # own process group: the shell's pipeline child is the server
        self.process = subprocess.Popen(["sh", "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        start_new_session=True)

    def local(self, command: str) -> str:
        """The command with the secret file's path here; the official image's entrypoint only drops root (gosu
        redis) before running its arguments: here they run as they are."""
        return command.replace(self.secret, str(self.password_file)).replace(
            "docker-entrypoint.sh redis-server", "redis-server")

    def client(self, password: str | None) -> redis.Redis:
        return redis.Redis(port=self.port, password=password, socket_timeout=2, socket_connect_timeout=2)

    def wait(self, password: str) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if self.client(password).ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        pytest.fail(f"redis did not start: {self.process.stderr.read().decode() if self.process.poll() else ''}")

    def check(self, command: str) -> int:
        """Run a healthcheck / probe command against this server; its exit code."""
        script = self.local(command).replace("redis-cli ping", f"redis-cli -p {self.port} ping")
        return subprocess.run(["sh", "-c", script], capture_output=True, timeout=10).returncode

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process.stderr.close()


def check_password_server(server: ShellRedis, password: str, probes: list[str]) -> None:
    """The server wants the file's password, writes an fsync'd AOF, keeps no RDB; each probe passes, and fails
    once the file holds another password; ArgusNet's own Redis store opens with the same file."""
    from store import open_store
    from store.config import GalleryConfig, RedisStoreConfig

    server.wait(password)
    with pytest.raises(redis.AuthenticationError):
        server.client(None).ping()
    conf = server.client(password).config_get("*")
    assert (conf["appendonly"], conf["appendfsync"], conf["save"]) == ("yes", "always", "")
    store_cfg = RedisStoreConfig(url=f"redis://127.0.0.1:{server.port}/0", password_file=server.password_file)
    open_store(store_cfg, GalleryConfig(), model="deploy-test", dim=4, create=True).close()
    for probe in probes:
        assert server.check(probe) == 0, probe
    server.password_file.write_text("not-the-password\n")
    for probe in probes:
        assert server.check(probe) != 0, probe


def test_compose_redis_takes_its_password_from_the_secret_file(compose: dict[str, Any], tmp_path: Path) -> None:
    service = compose["services"]["redis"]
    assert service["command"][:2] == ["sh", "-c"]
    password = hashlib.sha256(str(tmp_path).encode()).hexdigest()  # as `secrets.token_hex(32)` makes one
    password_file = tmp_path / "redis_password"
    password_file.write_text(password + "\n")
    server = ShellRedis(unescape(service["command"][2]), "/run/secrets/redis_password", password_file, tmp_path)
    try:
        assert service["healthcheck"]["test"][0] == "CMD-SHELL"
        check_password_server(server, password, [unescape(service["healthcheck"]["test"][1])])
    finally:
        server.stop()


def test_statefulset_redis_takes_its_password_from_the_secret(tmp_path: Path) -> None:
    statefulset = one(render(K8S_BUILDS["base"]), "StatefulSet", "redis")
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["sh", "-c"]
    password = hashlib.sha256(str(tmp_path).encode()).hexdigest()
    password_file = tmp_path / "password"
    password_file.write_text(password + "\n")
    server = ShellRedis(container["command"][2], "/etc/argusnet/redis/password", password_file, tmp_path)
    try:
        probes = [container[p]["exec"]["command"] for p in ("readinessProbe", "livenessProbe")]
        assert all(p[:2] == ["sh", "-c"] for p in probes)
        check_password_server(server, password, [p[2] for p in probes])
    finally:
        server.stop()


# --- the broker with the compose site configuration, probed by its healthcheck -------------------------------------

def keys_gen(name: str, directory: Path) -> None:
    subprocess.run([sys.executable, "-m", "argusnet", "keys", "gen", "--name", name, "--dir", str(directory)],
                   check=True, capture_output=True, env=no_argusnet_env(), timeout=60)


def test_broker_serves_its_healthcheck_with_the_compose_site_configuration(compose: dict[str, Any],
                                                                          tmp_path: Path) -> None:
    """`argusnet --config deploy/config/site.yaml broker`, its CurveZMQ keys made by `argusnet keys gen` (the
    container's paths and ports moved to this machine's loopback), passes the compose healthcheck; it fails once
    the broker stopped."""
    keys_gen("broker", tmp_path / "keys")
    keys_gen("entrance", tmp_path / "node")
    keys_gen("worker", tmp_path / "keys")
    (tmp_path / "cameras").mkdir()
    (tmp_path / "workers").mkdir()
    shutil.copy(tmp_path / "node" / "entrance.key", tmp_path / "cameras" / "entrance.key")
    shutil.copy(tmp_path / "keys" / "worker.key", tmp_path / "workers" / "worker.key")
    metrics = free_port()
    env = {**no_argusnet_env(), "ARGUSNET__BROKER__METRICS_HOST": "127.0.0.1",
           "ARGUSNET__BROKER__METRICS_PORT": str(metrics),
           "ARGUSNET__SECURITY__BROKER_SECRET_KEY": str(tmp_path / "keys" / "broker.key_secret"),
           "ARGUSNET__SECURITY__ALLOWED_KEYS_DIR": str(tmp_path / "cameras"),
           "ARGUSNET__SECURITY__WORKER_KEYS_DIR": str(tmp_path / "workers")}
    for name in ("frontend", "backend", "events_in", "events_out"):
        env[f"ARGUSNET__BROKER__{name.upper()}"] = f"tcp://127.0.0.1:{free_port()}"
    test = compose["services"]["broker"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    probe = [sys.executable, "-c", test[3].replace("127.0.0.1:9100/", f"127.0.0.1:{metrics}/")]
    healthy = lambda: subprocess.run(probe, capture_output=True, timeout=20).returncode == 0  # noqa: E731
    assert not healthy()
    broker = subprocess.Popen([sys.executable, "-m", "argusnet", CONFIG_ARG, str(SITE), "broker"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not healthy() and broker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert broker.poll() is None and healthy(), broker.stderr.read() if broker.poll() is not None else ""
    finally:
        broker.send_signal(signal.SIGTERM)
        err = broker.communicate(timeout=30)[1]
    assert broker.returncode == 0, err
    assert f"metrics http://127.0.0.1:{metrics}/metrics" in err
    assert not healthy()


# --- Kubernetes: a kustomize for the subset used here --------------------------------------------------------------

KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "resources", "configMapGenerator", "images", "patches"}
GENERATED = "__generated__"
POD_OWNERS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def group_version(obj: dict[str, Any]) -> tuple[str, str]:
    group, _, version = obj["apiVersion"].rpartition("/")
    return group, version


def matches(obj: dict[str, Any], target: dict[str, str]) -> bool:
    unknown = set(target) - {"group", "version", "kind", "name"}
    assert not unknown, f"patch target selectors {unknown}: not supported by this renderer"
    group, version = group_version(obj)
    have = {"group": group, "version": version, "kind": obj["kind"], "name": obj["metadata"]["name"]}
    return all(have[k] == v for k, v in target.items())


def pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def json_patch(obj: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    """RFC 6902 add / replace / remove; a path through something missing is an error (as in kustomize)."""
    for op in ops:
        *parents, last = pointer(op["path"])
        node: Any = obj
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if op["op"] == "add":
                node.insert(index, copy.deepcopy(op["value"]))
                continue
            assert index < len(node), f"{op['path']}: no such element"
        elif op["op"] in ("replace", "remove"):
            assert last in node, f"{op['path']}: no such field to {op['op']}"
        if op["op"] in ("add", "replace"):
            node[int(last) if isinstance(node, list) else last] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del node[int(last) if isinstance(node, list) else last]
        else:
            raise AssertionError(f"JSON patch op {op['op']!r}: not supported by this renderer")


def apply_patch(objects: list[dict[str, Any]], directory: Path, entry: dict[str, Any]) -> list[dict[str, Any]]:
    text = (directory / entry["path"]).read_text() if "path" in entry else entry["patch"]
    body = yaml.safe_load(text)
    if isinstance(body, list):
        hits = [o for o in objects if matches(o, entry["target"])]
        assert len(hits) == 1, f"patch target {entry['target']} matches {len(hits)} objects"
        json_patch(hits[0], body)
        return objects
    assert body.get("$patch") == "delete", "strategic merge patches other than $patch: delete: not supported"
    target = {"kind": body["kind"], "name": body["metadata"]["name"]}
    kept = [o for o in objects if not (matches(o, target) and o["apiVersion"] == body["apiVersion"])]
    assert len(kept) == len(objects) - 1, f"$patch: delete of {target} matches nothing"
    return kept


def generate_config_map(objects: list[dict[str, Any]], directory: Path, gen: dict[str, Any]) -> None:
    behavior = gen.get("behavior", "create")
    assert set(gen) <= {"name", "files", "behavior"} and behavior in ("create", "replace"), gen
    data = {}
    for item in gen["files"]:
        key, _, file = item.rpartition("=")
        data[key or Path(file).name] = (directory / file).read_text()
    old = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == gen["name"]]
    assert len(old) == (1 if behavior == "replace" else 0), f"configMapGenerator {gen['name']}: {behavior}"
    metadata = old[0]["metadata"] if old else {"name": gen["name"]}
    objects[:] = [o for o in objects if not any(o is x for x in old)]
    objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data, GENERATED: True})


def pod_specs(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if obj["kind"] in POD_OWNERS:
        yield obj["spec"]["template"]["spec"]


def containers(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for spec in pod_specs(obj):
        yield from spec.get("initContainers", []) + spec["containers"]


def set_images(objects: list[dict[str, Any]], image: dict[str, str]) -> None:
    assert set(image) <= {"name", "newName", "newTag"}, image
    for obj in objects:
        for container in containers(obj):
            name = container["image"].split("@")[0]
            name = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
            if name == image["name"]:
                container["image"] = image.get("newName", name) + (f":{image['newTag']}" if "newTag" in image else "")


def accumulate(directory: Path) -> list[dict[str, Any]]:
    """One kustomization's objects: resources (files, or folders with their own kustomization), generators, then
    patches, the namespace and images; anything else in a kustomization fails (teach this renderer first)."""
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kust) - KUSTOMIZATION_KEYS
    assert not unknown, f"{directory}/kustomization.yaml uses {unknown}: not supported by this renderer"
    objects: list[dict[str, Any]] = []
    for entry in kust.get("resources", []):
        path = directory / entry
        objects += accumulate(path) if path.is_dir() else load_docs(path)
    for gen in kust.get("configMapGenerator", []):
        generate_config_map(objects, directory, gen)
    for entry in kust.get("patches", []):
        objects = apply_patch(objects, directory, entry)
    if "namespace" in kust:
        for obj in objects:
            if obj["kind"] != "Namespace":
                obj["metadata"]["namespace"] = kust["namespace"]
    for image in kust.get("images", []):
        set_images(objects, image)
    return objects


def config_map_refs(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every place in a pod spec that names a ConfigMap (the dict holding ``name``)."""
    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            yield volume["configMap"]
        for source in volume.get("projected", {}).get("sources", []):
            if "configMap" in source:
                yield source["configMap"]
    for container in spec.get("initContainers", []) + spec["containers"]:
        for env_from in container.get("envFrom", []):
            if "configMapRef" in env_from:
                yield env_from["configMapRef"]
        for env in container.get("env", []):
            if "configMapKeyRef" in env.get("valueFrom", {}):
                yield env["valueFrom"]["configMapKeyRef"]


def render(directory: Path) -> list[dict[str, Any]]:
    """`kustomize build DIR` for this subset: generated ConfigMaps get a content hash suffix, and their references
    in pod templates follow."""
    objects = accumulate(directory)
    renamed = {}
    for obj in objects:
        if obj.pop(GENERATED, False):
            digest = hashlib.sha256(json.dumps(obj["data"], sort_keys=True).encode()).hexdigest()[:10]
            renamed[obj["metadata"]["name"]] = obj["metadata"]["name"] = f"{obj['metadata']['name']}-{digest}"
    for obj in objects:
        for spec in pod_specs(obj):
            for ref in config_map_refs(spec):
                ref["name"] = renamed.get(ref["name"], ref["name"])
    return objects


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    hits = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} found"
    return hits[0]


def kinds(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(path) for name, path in K8S_BUILDS.items()}


# --- Kubernetes: the rendered objects ------------------------------------------------------------------------------

@pytest.mark.parametrize("build", sorted(K8S_BUILDS))
def test_every_rendered_object_is_valid_kubernetes(rendered: dict[str, list[dict[str, Any]]], build: str) -> None:
    objects = rendered[build]
    assert objects
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{build}: {obj['kind']}/{obj['metadata']['name']}: {exc.message} at "
                        f"{'.'.join(map(str, exc.absolute_path))}")
        assert obj["kind"] == "Namespace" or obj["metadata"]["namespace"] == "argusnet"


def test_the_schema_validation_is_strict(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """An unknown field (a misspelt probe) and a missing required one are both refused."""
    worker = copy.deepcopy(one(rendered["base"], "Deployment", "worker"))
    worker["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"port": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, K8S_VERSION, strict=True)
    worker = copy.deepcopy(one(rendered["base"], "Deployment", "worker"))
    del worker["spec"]["selector"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, K8S_VERSION, strict=True)


def site_of(objects: list[dict[str, Any]], pod: dict[str, Any], tmp_path: Path) -> tuple[ArgusConfig, str]:
    """The site configuration a pod runs (its ConfigMap's site.yaml, loaded by ArgusNet) and its command."""
    container = pod["containers"][0]
    args = container["args"]
    assert args[0] == CONFIG_ARG and args[2] in COMMANDS, args
    config_path = Path(args[1])
    mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == config_path.parent)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    config_map = one(objects, "ConfigMap", volume["configMap"]["name"])
    local = tmp_path / f"{args[2]}-site.yaml"
    local.write_text(config_map["data"][config_path.name])
    return load_config(local, environ={}), args[2]


def http_probe_port(container: dict[str, Any], probe: str, path: str) -> int:
    get = container[probe]["httpGet"]
    assert get["path"] == path, f"{container['name']}.{probe} on {get['path']}"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    return ports[get["port"]] if isinstance(get["port"], str) else get["port"]


def check_probes(container: dict[str, Any], command: str, cfg: ArgusConfig) -> None:
    if command == "dashboard":
        port = int(cfg.dashboard.listen.rsplit(":", 1)[1])
        assert http_probe_port(container, "readinessProbe", "/healthz") == port
        assert http_probe_port(container, "livenessProbe", "/metrics") == port
        return
    port = cfg.broker.metrics_port if command == "broker" else cfg.worker.metrics_port
    for probe in ("readinessProbe", "livenessProbe"):
        assert http_probe_port(container, probe, "/metrics") == port


def check_locked_down(obj: dict[str, Any]) -> None:
    pod = obj["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in containers(obj):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][part]), f"{container['name']}: {part}"
    for container in pod["containers"]:  # init containers run to completion: Kubernetes allows them no probes
        assert "readinessProbe" in container and "livenessProbe" in container, container["name"]
    for container in pod.get("initContainers", []):
        assert container["args"][-2:] == ["store", "init"], container["name"]


def created_secrets() -> dict[str, set[str] | None]:
    """The Secrets deploy/README.md creates: name -> keys (None: made from a folder, any file name)."""
    out: dict[str, set[str] | None] = {}
    for line in (DEPLOY / "README.md").read_text().splitlines():
        found = re.search(r"kubectl -n argusnet create secret generic (\S+)((?: --from-file=\S+)+)", line)
        if found:
            sources = re.findall(r"--from-file=(\S+)", found.group(2))
            keys = {s.split("=", 1)[0] for s in sources if "=" in s}
            out[found.group(1)] = None if any(s.endswith("/") for s in sources) else keys
    return out


def check_mounted(obj: dict[str, Any], field: str, path: Path, secrets: dict[str, set[str] | None]) -> None:
    """``path`` (a site configuration field) is in a read-only Secret volume the README creates, with its key."""
    pod = obj["spec"]["template"]["spec"]
    mounts = [m for m in pod["containers"][0]["volumeMounts"]
              if path == Path(m["mountPath"]) or Path(m["mountPath"]) in path.parents]
    assert len(mounts) == 1 and mounts[0].get("readOnly"), f"{obj['metadata']['name']}: {field} {path} not mounted"
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[0]["name"])
    name = volume["secret"]["secretName"]
    assert name in secrets, f"Secret {name} ({field}) is not created in deploy/README.md"
    keys = secrets[name]
    if path == Path(mounts[0]["mountPath"]):
        assert keys is None, f"{field} is a folder: the README should create {name} from one"
    else:
        assert keys is None or str(path.relative_to(mounts[0]["mountPath"])) in keys, f"{name} lacks {path.name}"


@pytest.mark.parametrize("build", sorted(K8S_BUILDS))
def test_deployments_run_argusnet_locked_down_and_probed(rendered: dict[str, list[dict[str, Any]]], build: str,
                                                         tmp_path: Path) -> None:
    objects = rendered[build]
    deployments = kinds(objects, "Deployment")
    assert set(deployments) == {"broker", "worker", "dashboard"}
    secrets = created_secrets()
    for name, obj in deployments.items():
        check_locked_down(obj)
        cfg, command = site_of(objects, obj["spec"]["template"]["spec"], tmp_path)
        assert command == name
        check_probes(obj["spec"]["template"]["spec"]["containers"][0], command, cfg)
        for field, path in config_paths(cfg, command).items():
            check_mounted(obj, field, path, secrets)
    for obj in kinds(objects, "StatefulSet").values():
        check_locked_down(obj)
        for volume in obj["spec"]["template"]["spec"].get("volumes", []):
            assert "secret" not in volume or volume["secret"]["secretName"] in secrets
    assert deployments["worker"]["spec"]["replicas"] == (1 if build == "gpu" else 2)


def test_base_keeps_the_store_in_a_redis_statefulset_with_aof(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["base"]
    redis_set = one(objects, "StatefulSet", "redis")
    assert redis_set["spec"]["serviceName"] == "redis"
    claims = redis_set["spec"]["volumeClaimTemplates"]
    container = redis_set["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("redis:7")
    assert [m["mountPath"] for m in container["volumeMounts"] if m["name"] == claims[0]["metadata"]["name"]] == \
        ["/data"]
    assert "--appendonly yes" in container["command"][2] and "--dir /data" in container["command"][2]
    assert one(objects, "Service", "redis")["spec"]["ports"][0]["port"] == 6379
    cfg, _ = site_of(objects, one(objects, "Deployment", "worker")["spec"]["template"]["spec"], Path("/tmp"))
    assert urllib.parse.urlsplit(cfg.store.url).hostname == "redis"
    assert one(objects, "Service", "broker-cameras")["spec"]["type"] == "NodePort"
    assert all(c["image"] == "argusnet:cpu" for d in kinds(objects, "Deployment").values() for c in containers(d))


def test_gpu_overlay_puts_the_workers_on_gpus(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["gpu"]
    worker = one(objects, "Deployment", "worker")
    container = worker["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "argusnet:gpu"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["env"] == [{"name": "ARGUSNET__RUNTIME__REQUIRE_PROVIDER", "value": "cuda"}]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
        worker["spec"]["template"]["spec"]["tolerations"]
    for name in ("broker", "dashboard"):
        assert one(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]["image"] == "argusnet:cpu"
    assert kinds(objects, "StatefulSet").keys() == {"redis"}


def test_external_redis_overlay_drops_the_statefulset(rendered: dict[str, list[dict[str, Any]]],
                                                      tmp_path: Path) -> None:
    objects = rendered["external-redis"]
    assert not kinds(objects, "StatefulSet") and "redis" not in kinds(objects, "Service")
    assert "redis" not in kinds(objects, "NetworkPolicy")
    assert len(kinds(objects, "ConfigMap")) == 1
    cfg, _ = site_of(objects, one(objects, "Deployment", "worker")["spec"]["template"]["spec"], tmp_path)
    assert cfg.store.url == load_config(K8S / "overlays" / "external-redis" / "site.yaml", environ={}).store.url
    assert urllib.parse.urlsplit(cfg.store.url).hostname != "redis"


def kustomization_references(directory: Path) -> set[Path]:
    """Every file a kustomization (and those it includes) reads, itself included."""
    kust_file = directory / "kustomization.yaml"
    kust = yaml.safe_load(kust_file.read_text())
    files = {kust_file}
    for entry in kust.get("resources", []):
        path = (directory / entry).resolve()
        assert path.exists(), f"{kust_file}: {entry} does not exist"
        files |= kustomization_references(path) if path.is_dir() else {path}
    files |= {(directory / p["path"]).resolve() for p in kust.get("patches", []) if "path" in p}
    for gen in kust.get("configMapGenerator", []):
        files |= {(directory / f.rpartition("=")[2]).resolve() for f in gen["files"]}
    assert all(f.exists() for f in files), sorted(str(f) for f in files if not f.exists())
    return files


def test_every_k8s_file_is_listed_in_a_kustomization() -> None:
    listed: set[Path] = set()
    for directory in K8S_BUILDS.values():
        listed |= kustomization_references(directory.resolve())
    on_disk = {p.resolve() for p in K8S.rglob("*.yaml")} | {p.resolve() for p in K8S.rglob("*.yml")}
    assert on_disk - listed == set(), "files no kustomization lists"
    overlays = {p.parent.resolve() for p in (K8S / "overlays").glob("*/kustomization.yaml")}
    assert overlays == {K8S_BUILDS["gpu"].resolve(), K8S_BUILDS["external-redis"].resolve()}


# --- Kubernetes: the same as kubectl kustomize ---------------------------------------------------------------------

def kubectl_kustomize() -> str:
    """kubectl, when installed with a kustomize of v5 or later (older ones lack `patches:`); else skip."""
    exe = shutil.which("kubectl")
    if exe is None:
        pytest.skip("kubectl is not installed: the renderer above is the only check")
    done = subprocess.run([exe, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=60)
    version = json.loads(done.stdout or "{}").get("kustomizeVersion", "") if done.returncode == 0 else ""
    if not re.match(r"v([5-9]|\d\d)\.", version):
        pytest.skip(f"kubectl's kustomize {version or '(unknown)'} is older than v5")
    return exe


def normalised(objects: list[dict[str, Any]]) -> list[str]:
    """Objects as sorted JSON, generated names without their hash suffix (the two hash functions differ)."""
    names = {o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"}
    out = []
    for obj in objects:
        text = json.dumps(obj, sort_keys=True)
        for name in names:
            text = text.replace(f'"{name}"', f'"{name.rsplit("-", 1)[0]}"')
        out.append(text)
    return sorted(out)


@pytest.mark.parametrize("build", sorted(K8S_BUILDS))
def test_renderer_agrees_with_kubectl_kustomize(rendered: dict[str, list[dict[str, Any]]], build: str) -> None:
    exe = kubectl_kustomize()
    done = subprocess.run([exe, "kustomize", str(K8S_BUILDS[build])], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    theirs = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert normalised(theirs) == normalised(rendered[build])


def without_provider(env: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [e for e in env or [] if e["name"] != "ARGUSNET__RUNTIME__REQUIRE_PROVIDER"]


@pytest.mark.parametrize("build", sorted(K8S_BUILDS))
def test_workers_and_the_dashboard_create_the_store_first(rendered: dict[str, list[dict[str, Any]]],
                                                          build: str) -> None:
    deployments = kinds(rendered[build], "Deployment")
    for name in ("worker", "dashboard"):
        pod = deployments[name]["spec"]["template"]["spec"]
        (init,) = pod["initContainers"]
        main = pod["containers"][0]
        assert init["args"] == main["args"][:2] + ["store", "init"] and init["image"] == main["image"], name
        assert {m["name"] for m in init["volumeMounts"]} <= {m["name"] for m in main["volumeMounts"]}, name
        # the same settings, except the provider a GPU worker requires: the store init loads the embedder on the
        # CPU (it requests no GPU)
        assert without_provider(init.get("env")) == without_provider(main.get("env")), name
