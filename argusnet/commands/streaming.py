"""`argusnet broker`, `worker`, `events` and `up`: the streaming pipeline's processes."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from argusnet.commands.common import (
    add_gallery_arg,
    config_from,
    process_id,
    store_config,
)
from argusnet.config import ArgusConfig
from argusnet.events import EventPrinter
from argusnet.launcher import ChildSpec, Supervisor, free_port
from shared.errors import GalleryError, InputError
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
    p.add_argument("--backend", metavar="ENDPOINT", help="broker endpoint for workers (default: broker.backend)")
    p.add_argument("--events-in", metavar="ENDPOINT", help="broker endpoint for events (default: broker.events_in)")
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus port (default: worker.metrics_port)")
    add_gallery_arg(p)
    p.set_defaults(handler=cmd_worker)

    p = sub.add_parser("events", help="print the live event stream (and append it to a JSONL file)")
    p.add_argument("--endpoint", default=None, help="broker events endpoint (default: broker.events_out)")
    p.add_argument("--jsonl", type=Path, default=None, metavar="FILE", help="append one JSON object per event")
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
    broker = cfg.broker.model_copy(update={k: v for k, v in (("backend", args.backend),
                                                              ("events_in", args.events_in)) if v is not None})
    port = cfg.worker.metrics_port if args.metrics_port is None else args.metrics_port
    cfg = cfg.model_copy(update={"store": store_config(args, cfg)})
    return run_worker(cfg, broker, args.id or default_worker_id(), port)


def cmd_events(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    printer = EventPrinter(args.endpoint or cfg.broker.events_out, cfg.protocol, sys.stdout, args.jsonl)
    stop = threading.Event()
    stop_on_signals(stop)
    printer.run(stop)
    return 0


def port_or_free(port: int) -> int:
    return port if port != 0 else free_port()


def child_specs(cfg: ArgusConfig, store: StoreConfig, jsonl: Path | None) -> list[ChildSpec]:
    broker_port = port_or_free(cfg.broker.metrics_port)
    specs = [ChildSpec("broker", ("broker", "--metrics-port", str(broker_port)), STOP_BROKER, broker_port)]
    for i in range(1, cfg.up.workers + 1):
        port = free_port() if cfg.worker.metrics_port == 0 or cfg.up.workers > 1 else cfg.worker.metrics_port
        gallery = ("--gallery", str(store.directory())) if store.type == "local" else ()
        specs.append(ChildSpec(f"worker-{i}", ("worker", "--id", f"worker-{i}", *gallery, "--metrics-port",
                                               str(port)), STOP_WORKERS, port, wait_ready=True))
    for index, camera in enumerate(cfg.up.cameras):
        port = port_or_free(camera.metrics_port)
        specs.append(ChildSpec(f"camera-{camera.id}", ("camera", "--index", str(index), "--broker",
                                                       cfg.broker.frontend, "--metrics-port", str(port)),
                               STOP_CAMERAS, port, start_stage=1))
    printer = ("events",) if jsonl is None else ("events", "--jsonl", str(jsonl))
    specs.append(ChildSpec("events", printer, STOP_PRINTER))
    return specs


def prepare_gallery(args: argparse.Namespace, cfg: ArgusConfig) -> StoreConfig:
    """The store the workers use. Without --config (the demo) it is created with the portrait enrolled; with
    --config it must exist (the workers check it when they start)."""
    store = store_config(args, cfg)
    if args.config is None:
        from argusnet.commands.demo import ensure_demo_gallery
        from gpu_worker.engine import Engine

        ensure_demo_gallery(Engine(cfg), store)
    else:
        from store import open_store

        try:
            open_store(store, cfg.gallery).close()
        except GalleryError as exc:
            raise InputError(f"{exc} (store / up.gallery)") from exc
    return store


def cmd_up(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    if args.duration is not None and args.duration <= 0:
        raise InputError(f"--duration must be > 0 seconds, got {args.duration}")
    gallery = prepare_gallery(args, cfg)
    if args.events_jsonl is not None:
        args.events_jsonl.parent.mkdir(parents=True, exist_ok=True)
        args.events_jsonl.write_text("")
    if args.logs is not None:
        args.logs.mkdir(parents=True, exist_ok=True)
    specs = child_specs(cfg, gallery, args.events_jsonl)
    print("argusnet up: " + ", ".join(s.name for s in specs), file=sys.stderr)
    for spec in specs:
        if spec.metrics_port is not None:
            print(f"  metrics of {spec.name}: http://127.0.0.1:{spec.metrics_port}/metrics", file=sys.stderr)
    print(f"  events: {cfg.broker.events_out}" + ("" if args.events_jsonl is None else f" -> {args.events_jsonl}"),
          file=sys.stderr, flush=True)
    stop = threading.Event()
    stop_on_signals(stop)
    supervisor = Supervisor(specs, None if args.config is None else Path(args.config), args.logs, args.log_level)
    return supervisor.run(stop, args.duration)
