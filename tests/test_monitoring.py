"""Monitoring as shipped: deploy/prometheus (scrape config, alert rules and their promtool unit tests) and
deploy/grafana (dashboard model and provisioning), checked with Debian's real promtool, and a real `argusnet up`
scraped by a real Prometheus on the shipped configuration: the latency and fps queries answer, the alert rules
load and evaluate, every dashboard query runs, and every metric the alerts and panels name is exported."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from argusnet.launcher import free_port
from broker.config import BrokerConfig
from dashboard.config import DashboardConfig, split_listen
from gpu_worker.config import WorkerConfig
from processes import REPO, wait_until
from prometheus_server import PrometheusError, PrometheusServer, start_prometheus

PROM_DIR = REPO / "deploy" / "prometheus"
PROMETHEUS_YML = PROM_DIR / "prometheus.yml"
ALERTS_YML = PROM_DIR / "alerts.yml"
ALERTS_TEST_YML = PROM_DIR / "alerts_test.yml"
GRAFANA_DIR = REPO / "deploy" / "grafana"
DASHBOARD_JSON = GRAFANA_DIR / "argusnet.json"
JOBS = {"broker", "worker", "camera", "dashboard"}
SEVERITIES = {"critical", "warning"}
CAMERA_PORT = 9300  # the deployment's camera metrics port (the configuration's default is 0: any free port)
# Grafana's variables as a query sent straight to Prometheus sees them
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$camera": ".*"}
METRIC = re.compile(r"\b(argusnet_[a-zA-Z0-9_]+)\b(\s*\{([^}]*)\})?")
JOB_MATCHER = re.compile(r'\bjob\s*(=~|=)\s*"([^"]*)"')


def promtool(*args: str | Path, cwd: Path = PROM_DIR) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed: `make test` installs it (apt-get install prometheus)")
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=60, cwd=cwd)


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS_YML.read_text())["groups"] for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads(DASHBOARD_JSON.read_text())


def dashboard_panels() -> list[dict]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def with_variables(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def dashboard_queries() -> dict[str, str]:
    """'panel title / refId' -> its PromQL with Grafana's variables replaced, plus the variables' own queries."""
    queries = {f"{p['title']} / {t['refId']}": with_variables(t["expr"]) for p in dashboard_panels()
               for t in p["targets"]}
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["definition"])
            assert found, f"variable {variable['name']}: not a label_values(metric, label) query"
            queries[f"variable {variable['name']}"] = f"count by ({found.group(2)}) ({found.group(1)})"
    return queries


def alert_queries() -> dict[str, str]:
    return {f"alert {r['alert']}": r["expr"] for r in alert_rules()}


def named_metrics(queries: dict[str, str]) -> dict[tuple[str, str | None], set[str]]:
    """(sample name, job it is selected from or None) -> the queries naming it. Names are taken as written
    (argusnet_x_total, argusnet_x_bucket): exactly the sample names of the exposition text."""
    found: dict[tuple[str, str | None], set[str]] = {}
    for where, expr in queries.items():
        for match in METRIC.finditer(expr):
            job = JOB_MATCHER.search(match.group(3) or "")
            exact = job.group(2) if job and job.group(1) == "=" else None
            found.setdefault((match.group(1), exact), set()).add(where)
    return found


# ----------------------------------------------------------------------------------------- static checks

def test_promtool_checks_the_scrape_config_and_the_rules():
    config = promtool("check", "config", PROMETHEUS_YML)
    assert config.returncode == 0 and "SUCCESS: 1 rule files found" in config.stdout, config.stdout + config.stderr
    rules = promtool("check", "rules", ALERTS_YML)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in rules.stdout


def test_promtool_unit_tests_of_the_alerts_pass():
    result = promtool("test", "rules", ALERTS_TEST_YML)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_promtool_unit_tests_fail_on_an_alert_that_does_not_fire(tmp_path):
    """The unit tests can fail: with the drop-rate threshold raised above every test's drop rate, they do."""
    shutil.copy(ALERTS_TEST_YML, tmp_path)
    text = ALERTS_YML.read_text()
    assert "> 0.05" in text
    (tmp_path / "alerts.yml").write_text(text.replace("> 0.05", "> 0.5"))
    result = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0 and "ArgusNetFrameDropRate" in result.stdout + result.stderr


def test_every_alert_has_a_severity_annotations_and_a_firing_and_a_quiet_unit_test():
    cases = [case for test in yaml.safe_load(ALERTS_TEST_YML.read_text())["tests"] for case in test["alert_rule_test"]]
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    names = [r["alert"] for r in alert_rules()]
    assert len(names) == len(set(names)), names
    for rule in alert_rules():
        assert rule.get("labels", {}).get("severity") in SEVERITIES, rule["alert"]
        assert rule["annotations"].get("summary") and len(rule["annotations"].get("description", "")) > 40, \
            rule["alert"]
        assert rule["alert"] in fires, f"{rule['alert']}: no unit test where it fires"
        assert rule["alert"] in quiet, f"{rule['alert']}: no unit test where it does not fire"
    assert fires | quiet <= set(names), "a unit test of an alert that does not exist"


def test_the_alerts_cover_what_the_operators_watch():
    exprs = " ".join(r["expr"] for r in alert_rules())
    for needed in ('up{job="worker"} == 0', "argusnet_workers_alive", "argusnet_frames_in_total",
                   "argusnet_frames_dropped_total", "argusnet_protocol_errors_total", "argusnet_auth_refused_total",
                   "argusnet_time_to_name_seconds_bucket", "argusnet_store_buffer_depth"):
        assert needed in exprs, needed


def test_the_scrape_config_has_every_process_kind_on_the_default_ports():
    cfg = yaml.safe_load(PROMETHEUS_YML.read_text())
    assert cfg["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: [t for s in job.get("static_configs", []) for t in s["targets"]] +
            [f"{n}:{s['port']}" for s in job.get("dns_sd_configs", []) for n in s["names"]]
            for job in cfg["scrape_configs"]}
    assert jobs == {"broker": [f"broker:{BrokerConfig().metrics_port}"],
                    "worker": [f"worker:{WorkerConfig().metrics_port}", f"worker-gpu:{WorkerConfig().metrics_port}"],
                    "camera": [f"camera:{CAMERA_PORT}"],
                    "dashboard": [f"dashboard:{split_listen(DashboardConfig().listen)[1]}"]}
    referenced = {value for expr in [*alert_queries().values(), *dashboard_queries().values()]
                  for _op, values in JOB_MATCHER.findall(expr) for value in values.split("|")}
    assert referenced <= JOBS, f"queries select jobs the scrape config does not have: {referenced - JOBS}"


def test_the_grafana_dashboard_is_a_provisionable_model():
    model = dashboard()
    assert model["uid"] == "argusnet" and model["title"] and model["schemaVersion"] >= 36
    ids = [p["id"] for p in model["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    provisioned = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    (source,) = provisioned["datasources"]
    assert source["type"] == "prometheus" and variables["datasource"]["current"]["value"] == source["uid"]
    providers = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "argusnet.yaml").read_text())
    assert providers["apiVersion"] == 1 and providers["providers"][0]["options"]["path"].startswith("/")
    cells: set[tuple[int, int]] = set()
    for panel in model["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not mine & cells, f"panel {panel['title']!r} overlaps another"
        cells |= mine
    for panel in dashboard_panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(t["datasource"] == panel["datasource"] and t["expr"].strip() for t in panel["targets"])


def test_the_dashboard_has_the_panels_operators_need():
    exprs = " ".join(t["expr"] for p in dashboard_panels() for t in p["targets"])
    for needed in ("histogram_quantile(0.5, sum by (le, stage) (rate(argusnet_stage_latency_seconds_bucket",
                   "histogram_quantile(0.95, sum by (le, stage) (rate(argusnet_stage_latency_seconds_bucket",
                   "argusnet_end_to_end_latency_seconds_bucket", "argusnet_time_to_name_seconds_bucket",
                   "argusnet_frames_in_total", "sum by (job, camera, reason) (rate(argusnet_frames_dropped_total",
                   "argusnet_workers_alive", 'argusnet_events_total{type="track_identified"}',
                   "argusnet_store_replica_lag_seconds", "argusnet_store_latency_seconds_bucket",
                   "argusnet_store_errors_total"):
        assert needed in exprs, needed


def test_every_dashboard_query_is_valid_promql(tmp_path):
    """promtool parses each query (Grafana's variables replaced) as a recording rule."""
    rules = [{"record": f"grafana:query_{i}", "expr": expr} for i, expr in enumerate(dashboard_queries().values())]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------------------------------- a real site

def render_scrape_config(targets: dict[str, str]) -> dict:
    """The shipped prometheus.yml with each job's targets replaced, its rule file by an absolute path, and
    scrapes and rule evaluations every second; job names and everything else as shipped."""
    cfg = yaml.safe_load(PROMETHEUS_YML.read_text())
    cfg["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    cfg["rule_files"] = [str(PROM_DIR / name) for name in cfg["rule_files"]]
    assert {job["job_name"] for job in cfg["scrape_configs"]} == set(targets)
    for job in cfg["scrape_configs"]:
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    return cfg


def site_config(tmp: Path) -> tuple[Path, dict[str, int]]:
    """An `argusnet up` configuration with every port fixed (free now) and the demo camera."""
    ports = {k: free_port() for k in ("frontend", "backend", "events_in", "events_out", "broker", "worker",
                                      "camera", "dashboard")}
    cfg = {"broker": {**{k: f"tcp://127.0.0.1:{ports[k]}" for k in ("frontend", "backend", "events_in",
                                                                     "events_out")},
                      "metrics_port": ports["broker"]},
           "worker": {"metrics_port": ports["worker"]},
           "up": {"gallery": str(tmp / "gallery"), "workers": 1,
                  "cameras": [{"id": "demo", "source": "demo", "metrics_port": ports["camera"]}]},
           "dashboard": {"listen": f"127.0.0.1:{ports['dashboard']}"},
           "runtime": {"threads": 1}}
    path = tmp / "argusnet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, ports


class Site:
    """A real `argusnet up` (broker, worker, demo camera, event printer, dashboard) and a real Prometheus
    scraping it with the shipped configuration."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        config, self.ports = site_config(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUSNET__")}
        self.up_log = tmp / "up.log"
        with open(self.up_log, "wb") as log:
            self.up = subprocess.Popen([sys.executable, "-m", "argusnet", "--config", str(config), "up", "--logs",
                                        str(tmp / "logs")], cwd=REPO, env=env, stdout=log, stderr=log,
                                       start_new_session=True)
        self.prometheus: PrometheusServer | None = None

    def start_prometheus(self) -> PrometheusServer:
        prom_config = self.tmp / "prometheus.yml"
        targets = {job: f"127.0.0.1:{self.ports[job]}" for job in JOBS}
        prom_config.write_text(yaml.safe_dump(render_scrape_config(targets)))
        try:
            self.prometheus = start_prometheus(prom_config, self.tmp)
        except RuntimeError as exc:
            pytest.fail(str(exc))
        return self.prometheus

    def metrics_text(self, job: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[job]}/metrics", timeout=5) as response:
            return response.read().decode()

    def sample_names(self, job: str) -> set[str]:
        return {s.name for family in text_string_to_metric_families(self.metrics_text(job)) for s in family.samples}

    def logs(self) -> str:
        parts = [f"--- up:\n{self.up_log.read_text(errors='replace')[-2000:]}"]
        for log in sorted((self.tmp / "logs").glob("*.log")):
            parts.append(f"--- {log.name}:\n{log.read_text(errors='replace')[-1500:]}")
        return "\n".join(parts)

    def close(self) -> None:
        if self.up.poll() is None:
            self.up.send_signal(signal.SIGINT)
            try:
                self.up.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        if self.up.poll() is None:
            os.killpg(self.up.pid, signal.SIGKILL)
            self.up.wait()
        if self.prometheus is not None:
            self.prometheus.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    s = Site(tmp_path_factory.mktemp("monitoring"))
    try:
        s.start_prometheus()
        yield s
    finally:
        s.close()


def finite_values(server: PrometheusServer, expr: str) -> list[tuple[dict, float]]:
    try:
        result = server.query(expr)
    except PrometheusError:
        return []
    return [(r["metric"], float(r["value"][1])) for r in result if math.isfinite(float(r["value"][1]))]


E2E_P95 = "histogram_quantile(0.95, sum by (le) (rate(argusnet_end_to_end_latency_seconds_bucket[1m])))"
E2E_P50 = "histogram_quantile(0.5, sum by (le) (rate(argusnet_end_to_end_latency_seconds_bucket[1m])))"
BROKER_FPS = 'sum by (camera) (rate(argusnet_frames_in_total{job="broker"}[10s]))'
CAMERA_FPS = 'sum by (camera) (rate(argusnet_camera_frames_total{job="camera", outcome="sent"}[10s]))'


@pytest.mark.slow
def test_prometheus_scrapes_every_process_and_answers_latency_and_fps(site):
    prom = site.prometheus

    def all_up() -> bool:
        targets = prom.api("targets")["activeTargets"]
        return {t["labels"]["job"] for t in targets if t["health"] == "up"} == JOBS

    assert wait_until(all_up, 45, 0.5), f"{prom.api('targets')['activeTargets']}\n{site.logs()}"
    assert wait_until(lambda: bool(finite_values(prom, E2E_P95)), 40, 0.5), \
        f"no end-to-end latency: {prom.query(E2E_P95)}\n{site.logs()}"
    ((labels, p95),) = finite_values(prom, E2E_P95)
    ((_, p50),) = finite_values(prom, E2E_P50)
    assert labels == {} and 0 < p50 <= p95 < 10, (p50, p95)
    for expr in (BROKER_FPS, CAMERA_FPS):
        wait_until(lambda: bool(finite_values(prom, expr)), 20, 0.5)  # a rate needs two scrapes since the first frame
        fps = dict((r[0]["camera"], r[1]) for r in finite_values(prom, expr))
        assert set(fps) == {"demo"} and 0.5 < fps["demo"] < 30, (expr, fps)


@pytest.mark.slow
def test_the_alert_rules_load_and_evaluate_on_the_real_metrics(site):
    prom = site.prometheus
    expected = {r["alert"] for r in alert_rules()}

    def evaluated() -> list[dict]:
        return [rule for group in prom.api("rules")["groups"] for rule in group["rules"]]

    assert wait_until(lambda: all(r["health"] == "ok" for r in evaluated()), 20, 0.5), evaluated()
    rules = evaluated()
    assert {r["name"] for r in rules} == expected and all(r["type"] == "alerting" for r in rules)
    assert all(not r.get("lastError") for r in rules), [r for r in rules if r.get("lastError")]
    assert {r["labels"]["severity"] for r in rules} <= SEVERITIES


@pytest.mark.slow
def test_every_dashboard_query_runs_on_the_real_prometheus(site):
    assert wait_until(lambda: bool(finite_values(site.prometheus, BROKER_FPS)), 45, 0.5), site.logs()
    errors = {}
    for where, expr in dashboard_queries().items():
        try:
            site.prometheus.query(expr)
        except PrometheusError as exc:
            errors[where] = str(exc)
    assert not errors, errors


@pytest.mark.slow
def test_every_metric_the_alerts_and_panels_name_is_exported_by_a_running_process(site):
    def serving() -> bool:
        try:
            return all(site.sample_names(job) for job in JOBS)
        except OSError:
            return False

    assert wait_until(serving, 45, 0.5), site.logs()
    names = {job: site.sample_names(job) for job in JOBS}
    everywhere = set().union(*names.values())
    missing = {}
    for (metric, job), where in sorted(named_metrics({**alert_queries(), **dashboard_queries()}).items(),
                                       key=lambda item: (item[0][0], item[0][1] or "")):
        exported = names[job] if job is not None else everywhere
        if metric not in exported:
            missing[f"{metric}" + (f" (job {job})" if job else "")] = sorted(where)
    assert not missing, f"named in queries but exported by no running process: {json.dumps(missing, indent=1)}"
