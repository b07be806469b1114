"""`argusnet broker`, `worker`, `events` and `up`: the streaming pipeline's processes."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from argusnet.commands.common import (
    add_gallery_arg,
    config_from,
    endpoint_list,
    open_cli_store,
    process_id,
    store_config,
)
from argusnet.config import ArgusConfig
from argusnet.events import EventPrinter
from argusnet.launcher import (
    WILDCARD_HOSTS,
    ChildSpec,
    Listen,
    Supervisor,
    check_listen,
    free_port,
    reserve_ports,
    tcp_listen,
)
from argusnet.site_lock import SiteLock, site_targets
from camera_node.capture import OPEN_FAILED
from camera_node.sources import file_path, probe_file
from dashboard.config import split_listen
from shared.errors import GalleryError, InputError
from shared.keys import curve_client
from shared.signals import stop_on_signals
from store.config import StoreConfig

STOP_CAMERAS, STOP_WORKERS, STOP_BROKER, STOP_PRINTER = 0, 1, 2, 3


def register(sub: argparse._SubParsersAction) -> None:
    from broker.main import add_arguments

    p = sub.add_parser("broker", help="run the ZeroMQ broker (cameras -> workers, events proxy)")
    add_arguments(p)
    p.set_defaults(handler=cmd_broker)

    p = sub.add_parser("worker", help="run a worker: frames from the broker -> detect, embed, search -> events")
    p.add_argument("--id", default=None, type=process_id, help="worker id (default: worker-HOST-PID)")
    p.add_argument("--backend", metavar="ENDPOINT[,ENDPOINT...]", type=endpoint_list,
                   help="broker endpoint(s) for workers; the worker serves every one at once (default: "
                   "broker.worker_backends, else broker.backend)")
    p.add_argument("--events-in", metavar="ENDPOINT[,ENDPOINT...]", type=endpoint_list,
                   help="broker endpoint(s) for events; every event goes to each (default: broker.worker_events_in, "
                   "else broker.events_in)")
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus port (default: worker.metrics_port)")
    add_gallery_arg(p)
    p.set_defaults(handler=cmd_worker)

    p = sub.add_parser("events", help="print the live event stream, or the store's event log with --from-store "
                       "(and append it to a JSONL file)")
    p.add_argument("--endpoint", default=None, help="broker events endpoint (default: broker.events_out)")
    p.add_argument("--jsonl", type=Path, default=None, metavar="FILE", help="append one JSON object per event")
    p.add_argument("--from-store", action="store_true",
                   help="read the store's durable event log, oldest first, polling for new events, instead of the "
                   "live stream")
    p.add_argument("--cursor", type=Path, default=None, metavar="FILE",
                   help="with --from-store: start after the event id saved in FILE (from the start when it does not "
                   "exist) and save the last id written there after each batch")
    add_gallery_arg(p)
    p.set_defaults(handler=cmd_events)

    p = sub.add_parser("up", help="start the broker, the workers, the cameras and an event printer; stop them "
                       "all on Ctrl-C or after --duration")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="stop this long after the cameras started (they start once the workers have loaded their "
                   "models)")
    p.add_argument("--events-jsonl", type=Path, default=None, metavar="FILE",
                   help="write one JSON object per event (type, camera, track, name, similarity, ts, ...)")
    p.add_argument("--logs", type=Path, default=None, metavar="DIR",
                   help="write each process's log to DIR/NAME.log instead of this console")
    p.set_defaults(handler=cmd_up)


def cmd_broker(args: argparse.Namespace) -> int:
    from broker.main import run_from_args

    return run_from_args(args, config_from(args))


def cmd_worker(args: argparse.Namespace) -> int:
    from gpu_worker.main import default_worker_id, run_worker

    cfg = config_from(args)
    broker = cfg.broker.model_copy(update={k: list(v) for k, v in (("worker_backends", args.backend),
                                                                    ("worker_events_in", args.events_in))
                                            if v is not None})
    port = cfg.worker.metrics_port if args.metrics_port is None else args.metrics_port
    cfg = cfg.model_copy(update={"store": store_config(args, cfg)})
    return run_worker(cfg, broker, args.id or default_worker_id(), port)


def cmd_events(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    if not args.from_store:
        for given, name in ((args.cursor, "--cursor"), (args.gallery, "--gallery")):
            if given is not None:
                raise InputError(f"{name} reads the store's event log: give it with --from-store")
        curve = curve_client(cfg.security, cfg.security.subscriber_secret_key, "subscriber")
        printer = EventPrinter(args.endpoint or cfg.broker.events_out, cfg.protocol, sys.stdout, args.jsonl,
                               curve=curve)
        stop = threading.Event()
        stop_on_signals(stop)
        printer.run(stop)
        return 0
    if args.endpoint is not None:
        raise InputError("--endpoint is the live stream; --from-store reads the store's event log instead")
    return _events_from_store(args, cfg)


def _events_from_store(args: argparse.Namespace, cfg: ArgusConfig) -> int:
    from argusnet.events import StoreEventReader

    store = open_cli_store(args, cfg)
    try:
        reader = StoreEventReader(store.events, sys.stdout, args.jsonl, args.cursor)
        print(f"events from {store.describe()} after id {reader.after_id}", file=sys.stderr, flush=True)
        stop = threading.Event()
        stop_on_signals(stop)
        reader.run(stop)
    finally:
        store.close()
    return 0


def port_or_free(port: int) -> int:
    return port if port != 0 else free_port()


def child_specs(cfg: ArgusConfig, store: StoreConfig, jsonl: Path | None) -> list[ChildSpec]:
    reserve_ports([cfg.broker.metrics_port, cfg.worker.metrics_port, *(c.metrics_port for c in cfg.up.cameras)])
    broker_port = port_or_free(cfg.broker.metrics_port)
    specs = [ChildSpec("broker", ("broker", "--metrics-port", str(broker_port)), STOP_BROKER, broker_port,
                       metrics_field=_metrics_field("broker.metrics_port", cfg.broker.metrics_port, "broker"))]
    for i in range(1, cfg.up.workers + 1):
        assigned = cfg.worker.metrics_port == 0 or cfg.up.workers > 1
        port = free_port() if assigned else cfg.worker.metrics_port
        gallery = ("--gallery", str(store.directory())) if store.type == "local" else ()
        specs.append(ChildSpec(f"worker-{i}", ("worker", "--id", f"worker-{i}", *gallery, "--metrics-port",
                                               str(port)), STOP_WORKERS, port, wait_ready=True,
                               metrics_field=_metrics_field("worker.metrics_port", 0 if assigned else port,
                                                            f"worker-{i}")))
    for index, camera in enumerate(cfg.up.cameras):
        port = port_or_free(camera.metrics_port)
        specs.append(ChildSpec(f"camera-{camera.id}", ("camera", "--index", str(index), "--broker",
                                                       ",".join(cfg.broker.camera_endpoints()), "--metrics-port",
                                                       str(port)),
                               STOP_CAMERAS, port, start_stage=1,
                               metrics_field=_metrics_field(f"up.cameras[{index}].metrics_port",
                                                            camera.metrics_port, f"camera-{camera.id}"),
                               announce=OPEN_FAILED))
    printer = ("events",) if jsonl is None else ("events", "--jsonl", str(jsonl))
    specs.append(ChildSpec("events", printer, STOP_PRINTER))
    if cfg.up.dashboard:
        gallery = ("--gallery", str(store.directory())) if store.type == "local" else ()
        specs.append(ChildSpec("dashboard", ("dashboard", *gallery), STOP_PRINTER))
    return specs


def _metrics_field(name: str, configured: int, child: str) -> str:
    return name if configured else f"the metrics port assigned to {child}"


def listen_addresses(cfg: ArgusConfig, specs: list[ChildSpec]) -> list[Listen]:
    """Every TCP address the children will listen on: the broker's tcp:// endpoints and each metrics port (the
    metrics servers listen on 127.0.0.1)."""
    endpoints = [tcp_listen(f"broker.{name}", getattr(cfg.broker, name))
                 for name in ("frontend", "backend", "events_in", "events_out")]
    metrics = [Listen(s.metrics_field, str(s.metrics_port), "127.0.0.1", s.metrics_port) for s in specs
               if s.metrics_port is not None]
    if cfg.up.dashboard:
        host, port = split_listen(cfg.dashboard.listen)
        metrics.append(Listen("dashboard.listen", cfg.dashboard.listen, WILDCARD_HOSTS.get(host, host), port))
    return [a for a in endpoints if a is not None] + metrics


def check_sources(cfg: ArgusConfig) -> None:
    """A camera whose source is a local file that does not exist or is no video OpenCV can read is a
    configuration error: it would only fail (and be retried) for ever. A stream or a device is not checked here:
    it may come up later, so its camera retries with back-off and says so (see camera_node.capture._open)."""
    for index, camera in enumerate(cfg.up.cameras):
        path = file_path(camera.source)
        problem = None if path is None else probe_file(path)
        if problem is not None:
            raise InputError(f"up.cameras[{index}].source {camera.source!r}: the file {problem} (a source is "
                             "`demo`, a video file, an rtsp:// or http:// URL, or a USB device index such as 0)")


def prepare_gallery(args: argparse.Namespace, cfg: ArgusConfig, store: StoreConfig) -> None:
    """Without --config (the demo), or with a configured `demo` camera, the store is created with the portrait
    enrolled when nobody is in it; otherwise it must exist (the workers check it when they start)."""
    if args.config is None or any(c.source == "demo" for c in cfg.up.cameras):
        from argusnet.commands.demo import ensure_demo_gallery
        from gpu_worker.engine import Engine

        ensure_demo_gallery(Engine(cfg), store)
        return
    from store import open_store

    try:
        open_store(store, cfg.gallery).close()
    except GalleryError as exc:
        raise InputError(f"{exc} (store / up.gallery)") from exc


def _print_plan(args: argparse.Namespace, cfg: ArgusConfig, store: StoreConfig, specs: list[ChildSpec]) -> None:
    print("argusnet up: " + ", ".join(s.name for s in specs), file=sys.stderr)
    for spec in specs:
        if spec.metrics_port is not None:
            print(f"  metrics of {spec.name}: http://127.0.0.1:{spec.metrics_port}/metrics", file=sys.stderr)
    print(f"  events: {cfg.broker.events_out}" + ("" if args.events_jsonl is None else f" -> {args.events_jsonl}"),
          file=sys.stderr)
    if store.type == "local":
        directory = store.directory()
        print(f"  crops: {directory / 'crops'}/, event log: {directory / 'store.sqlite'}", file=sys.stderr)
    else:
        print(f"  crops and event log: {store.describe()}", file=sys.stderr)
    if cfg.up.dashboard:
        host, port = split_listen(cfg.dashboard.listen)
        shown = "127.0.0.1" if host in WILDCARD_HOSTS.values() else host
        print(f"  dashboard: http://{shown}:{port}/", file=sys.stderr)
    sys.stderr.flush()


def _first_admin(cfg: ArgusConfig, store: StoreConfig) -> None:
    """With no dashboard user yet, make an admin and print its password, once (it is not kept anywhere else)."""
    from argusnet.commands.dashboard import ensure_admin

    made = ensure_admin(cfg, store)
    if made is not None:
        print(f"  dashboard login (shown once; add users with `argusnet dashboard user add`): user {made[0]}, "
              f"password {made[1]}", file=sys.stderr)


def cmd_up(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    if args.duration is not None and args.duration <= 0:
        raise InputError(f"--duration must be > 0 seconds, got {args.duration}")
    store = store_config(args, cfg)
    specs = child_specs(cfg, store, args.events_jsonl)
    check_sources(cfg)
    addresses = listen_addresses(cfg, specs)
    check_listen(addresses)  # before anything is written or started
    with SiteLock(store.describe(), site_targets(store, [a.port for a in addresses])):
        return _run_site(args, cfg, store, specs)


def _run_site(args: argparse.Namespace, cfg: ArgusConfig, store: StoreConfig, specs: list[ChildSpec]) -> int:
    """`up` once it holds its site: the gallery, the event file, the plan printed, the children run."""
    prepare_gallery(args, cfg, store)
    if args.events_jsonl is not None:
        args.events_jsonl.parent.mkdir(parents=True, exist_ok=True)
        args.events_jsonl.write_text("")
    if args.logs is not None:
        args.logs.mkdir(parents=True, exist_ok=True)
    _print_plan(args, cfg, store, specs)
    if cfg.up.dashboard:
        _first_admin(cfg, store)
    sys.stderr.flush()
    stop = threading.Event()
    stop_on_signals(stop)
    supervisor = Supervisor(specs, None if args.config is None else Path(args.config), args.logs, args.log_level)
    return supervisor.run(stop, args.duration)
