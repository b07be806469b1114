"""`argusnet camera` (the node agent) and `argusnet keys gen` (CurveZMQ key pairs)."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from argusnet.commands.common import config_from, endpoint_list, process_id
from camera_node.config import CameraConfig
from shared.errors import ArgusError, ConfigError, InputError
from shared.keys import generate_keys
from shared.metrics import serve
from shared.schema import format_validation_error
from shared.signals import stop_on_signals
from shared.zmq_defaults import CLOSE_LINGER_MS

_OVERRIDES = {"source": "source", "id": "id", "fps": "fps", "max_side": "max_side", "metrics_port": "metrics_port"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("camera", help="run a camera node: capture, downscale, JPEG, send to the broker")
    p.add_argument("--source", help="`demo`, a video file, an RTSP/HTTP URL or a USB device index")
    p.add_argument("--id", type=process_id, help="camera id (letters, digits, _ . -; not starting with . or -)")
    p.add_argument("--broker", metavar="ENDPOINT[,ENDPOINT...]", type=endpoint_list,
                   help="broker endpoint(s) for cameras, in failover order: the node moves to the next one when its "
                   "broker is silent for 3 heartbeats (default: broker.camera_brokers, else broker.frontend)")
    p.add_argument("--index", type=int, default=None, metavar="N",
                   help="take the camera settings from up.cameras[N] of the configuration (options still override)")
    p.add_argument("--fps", type=float, default=None, help="highest frame rate sent")
    p.add_argument("--max-side", type=int, default=None, help="downscale frames to this longer side")
    p.add_argument("--no-loop", action="store_true", help="stop at the end of a video file instead of looping")
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus port (0 = any free port)")
    p.set_defaults(handler=cmd_camera)
    k = sub.add_parser("keys", help="CurveZMQ keys").add_subparsers(dest="keys_command", metavar="ACTION",
                                                                     required=True)
    p = k.add_parser("gen", help="make a key pair NAME.key (public) and NAME.key_secret in DIR")
    p.add_argument("--name", required=True)
    p.add_argument("--dir", type=Path, required=True)
    p.set_defaults(handler=cmd_keys_gen)


def camera_config(args: argparse.Namespace, cameras: list[CameraConfig]) -> CameraConfig:
    data: dict = {}
    if args.index is not None:
        if not 0 <= args.index < len(cameras):
            raise InputError(f"--index {args.index}: the configuration has {len(cameras)} camera(s) in up.cameras")
        data = cameras[args.index].model_dump()
    data.update({field: getattr(args, arg) for arg, field in _OVERRIDES.items() if getattr(args, arg) is not None})
    if args.no_loop:
        data["loop"] = False
    if "source" not in data or "id" not in data:
        raise InputError("give --source and --id (or --index N of a configured camera)")
    try:
        return CameraConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "command line")) from exc


def cmd_camera(args: argparse.Namespace) -> int:
    from camera_node.node import CameraNode

    cfg = config_from(args)
    camera = camera_config(args, cfg.up.cameras)
    registry = CollectorRegistry()
    node = CameraNode(camera, args.broker or cfg.broker.camera_endpoints(), cfg.security, cfg.protocol, registry)
    try:
        port = serve(registry, camera.metrics_port)
    except OSError as exc:
        raise ArgusError(f"camera: cannot serve metrics on port {camera.metrics_port}: {exc}") from exc
    print(f"camera {camera.id}: source {camera.source}, broker {','.join(node.endpoints)}, metrics "
          f"http://127.0.0.1:{port}/metrics", file=sys.stderr, flush=True)
    stop = threading.Event()
    stop_on_signals(stop)
    node.run(stop)
    node.ctx.destroy(linger=CLOSE_LINGER_MS)  # waits (bounded) until the last frames counted as sent have left
    print(f"camera {camera.id} stopped: {json.dumps(node.summary())}", file=sys.stderr, flush=True)
    return 0


def cmd_keys_gen(args: argparse.Namespace) -> int:
    files = generate_keys(args.name, args.dir)
    print(f"public key {files.public} (give it to the broker's allowed_keys_dir or to cameras)\n"
          f"secret key {files.secret} "
          "(keep it on this machine only)")
    return 0
