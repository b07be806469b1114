"""`argusnet camera` (the node agent) and `argusnet keys gen` (CurveZMQ key pairs).

A camera node (a Raspberry Pi) installs only the node packages (requirements-node.lock, `argusnet[node]`): this
module imports nothing of the worker, store or dashboard at start. A camera runs from its own file
(`argusnet camera --config camera.yaml`, `camera_node.config.NodeConfig`: id, source, brokers, CURVE keys, limits,
metrics), or from the site configuration (`argusnet --config site.yaml camera --index N`, as `argusnet up` starts
its cameras, or options alone), whose loading needs the worker packages (ArgusConfig gathers every section).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from camera_node.config import CameraConfig, load_node_config
from shared.errors import ConfigError, InputError
from shared.ids import ID_RULE, is_valid_id
from shared.keys import SecurityConfig, generate_keys, load_public_key, load_secret_key
from shared.metrics import serve
from shared.protocol import ProtocolConfig
from shared.schema import format_validation_error
from shared.signals import stop_on_signals
from shared.zmq_defaults import CLOSE_LINGER_MS, off_loopback, parse_endpoints

_OVERRIDES = {"source": "source", "id": "id", "fps": "fps", "max_side": "max_side", "metrics_port": "metrics_port"}
DEFAULT_METRICS_HOST = "127.0.0.1"


@dataclass(frozen=True)
class NodePlan:
    """What a camera node runs with, from a camera file or from the site configuration."""

    camera: CameraConfig
    brokers: tuple[str, ...]
    security: SecurityConfig
    protocol: ProtocolConfig
    metrics_host: str
    origin: str  # where the settings come from, for messages


def _camera_id(value: str) -> str:
    """argparse type for the camera id (the same rule as argusnet.commands.common.process_id, which this module does
    not import: common loads the worker's engine and the store)."""
    if not is_valid_id(value):
        raise argparse.ArgumentTypeError(f"must be {ID_RULE}, got {value!r}")
    return value


def _endpoint_list(value: str) -> tuple[str, ...]:
    try:
        return parse_endpoints(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def register(sub: argparse._SubParsersAction) -> None:
    # conflict_handler="resolve": this command's --config is the camera's own file, not the site configuration
    # every other command takes there (the site file still goes before the command: argusnet --config F camera)
    p = sub.add_parser("camera", help="run a camera node: capture, downscale, JPEG, send to the broker",
                       conflict_handler="resolve")
    p.add_argument("--config", dest="camera_file", type=Path, metavar="FILE", default=None,
                   help="this camera's own YAML file (id, source, brokers, curve keys, limits, metrics; see "
                   "deploy/node/camera.yaml); the site configuration goes before the command instead: "
                   "`argusnet --config SITE camera --index N`")
    p.add_argument("--source", help="`demo`, a video file, an RTSP/HTTP URL or a USB device index")
    p.add_argument("--id", type=_camera_id, help="camera id (letters, digits, _ . -; not starting with . or -)")
    p.add_argument("--broker", metavar="ENDPOINT[,ENDPOINT...]", type=_endpoint_list,
                   help="broker endpoint(s) for cameras, in failover order: the node moves to the next one when its "
                   "broker is silent for 3 heartbeats (default: the camera file's brokers, else "
                   "broker.camera_brokers, else broker.frontend)")
    p.add_argument("--index", type=int, default=None, metavar="N",
                   help="take the camera settings from up.cameras[N] of the site configuration (options still "
                   "override)")
    p.add_argument("--fps", type=float, default=None, help="highest frame rate sent")
    p.add_argument("--max-side", type=int, default=None, help="downscale frames to this longer side")
    p.add_argument("--no-loop", action="store_true", help="stop at the end of a video file instead of looping")
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus port (0 = any free port)")
    p.add_argument("--metrics-host", default=None, metavar="HOST",
                   help=f"address the Prometheus endpoint listens on (default: the camera file's metrics_host, else "
                   f"{DEFAULT_METRICS_HOST})")
    p.add_argument("--check", action="store_true",
                   help="check the settings and read the CURVE key files, print what the node would run with (JSON) "
                   "and exit, without opening the source or connecting")
    p.set_defaults(handler=cmd_camera)
    k = sub.add_parser("keys", help="CurveZMQ keys").add_subparsers(dest="keys_command", metavar="ACTION",
                                                                     required=True)
    p = k.add_parser("gen", help="make a key pair NAME.key (public) and NAME.key_secret in DIR")
    p.add_argument("--name", required=True)
    p.add_argument("--dir", type=Path, required=True)
    p.set_defaults(handler=cmd_keys_gen)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    data: dict[str, Any] = {field: getattr(args, arg) for arg, field in _OVERRIDES.items()
                            if getattr(args, arg) is not None}
    if args.no_loop:
        data["loop"] = False
    return data


def camera_config(args: argparse.Namespace, cameras: list[CameraConfig]) -> CameraConfig:
    data: dict = {}
    if args.index is not None:
        if not 0 <= args.index < len(cameras):
            raise InputError(f"--index {args.index}: the configuration has {len(cameras)} camera(s) in up.cameras")
        data = cameras[args.index].model_dump()
    data.update(_overrides(args))
    if "source" not in data or "id" not in data:
        raise InputError("give --config CAMERA.yaml, or --source and --id (or --index N of a configured camera)")
    try:
        return CameraConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "command line")) from exc


def plan_from_file(args: argparse.Namespace) -> NodePlan:
    """The camera file, with the command-line options on top."""
    if getattr(args, "config", None) is not None:
        raise InputError(f"argusnet --config {args.config} camera --config {args.camera_file}: give one of them; a "
                         "camera file holds all a node needs (the site configuration goes with --index N)")
    if args.index is not None:
        raise InputError("--index N picks a camera of the site configuration (up.cameras); a camera file "
                         f"({args.camera_file}) describes its camera itself")
    overrides = _overrides(args)
    if args.broker is not None:
        overrides["brokers"] = list(args.broker)
    if args.metrics_host is not None:
        overrides["metrics_host"] = args.metrics_host
    node = load_node_config(args.camera_file, overrides)
    return NodePlan(node.camera(), tuple(node.brokers), node.security(), node.protocol, node.metrics_host,
                    str(args.camera_file))


def plan_from_site(args: argparse.Namespace) -> NodePlan:
    """The site configuration (defaults, ARGUSNET__ variables, `argusnet --config F`) and the options."""
    try:
        from argusnet.commands.common import config_from  # loads every component's sections
    except ModuleNotFoundError as exc:  # a node install: no worker packages
        raise InputError(f"the site configuration cannot be loaded on this install ({exc}: the node packages "
                         "only); run the camera from its own file: argusnet camera --config CAMERA.yaml "
                         "(deploy/node/README.md)") from exc
    cfg = config_from(args)
    camera = camera_config(args, cfg.up.cameras)
    brokers = tuple(args.broker or cfg.broker.camera_endpoints())
    refuse_plaintext(brokers, cfg.security.curve or cfg.broker.allow_plaintext, "security.curve (and "
                     "camera_secret_key, broker_public_key), or broker.allow_plaintext: true to accept that")
    return NodePlan(camera, brokers, cfg.security, cfg.protocol, args.metrics_host or DEFAULT_METRICS_HOST,
                    str(args.config or "command line"))


def refuse_plaintext(brokers: tuple[str, ...], accepted: bool, remedy: str) -> None:
    """The camera file's rule (camera_node.config.NodeConfig) on the site path too: frames are faces, so they
    cross a network only encrypted (CURVE) or where the settings say plain text is accepted."""
    remote = [e for e in brokers if off_loopback(e)]
    if remote and not accepted:
        raise ConfigError(f"camera: broker {remote[0]} is on another machine and frames (faces) would cross the "
                          f"network unencrypted; give {remedy}")


def check(plan: NodePlan) -> int:
    """Read the key files and import what the node runs, then print the settings; nothing is opened or sent."""
    import camera_node.node  # noqa: F401  (the import path of a run: OpenCV, simplejpeg, ZeroMQ)

    if plan.security.curve:
        if plan.security.camera_secret_key is None or plan.security.broker_public_key is None:
            raise ConfigError("security.curve is on: security.camera_secret_key and security.broker_public_key "
                              "must name key files (`argusnet keys gen`)")
        load_secret_key(plan.security.camera_secret_key)
        load_public_key(plan.security.broker_public_key)
    summary = {"from": plan.origin, "camera": plan.camera.model_dump(mode="json"), "brokers": list(plan.brokers),
               "curve": plan.security.curve, "metrics": f"{plan.metrics_host}:{plan.camera.metrics_port}",
               "max_message_bytes": plan.protocol.max_message_bytes}
    print(json.dumps(summary, indent=2))
    return 0


def run(plan: NodePlan) -> int:
    from camera_node.node import CameraNode

    camera = plan.camera
    registry = CollectorRegistry()
    node = CameraNode(camera, plan.brokers, plan.security, plan.protocol, registry)
    try:
        port = serve(registry, camera.metrics_port, plan.metrics_host)
    except (OSError, ValueError) as exc:  # in use, not an address of this machine, not an address at all
        node.ctx.destroy(linger=0)
        raise InputError(f"camera {camera.id}: cannot serve metrics on {plan.metrics_host}:{camera.metrics_port} "
                         f"(metrics_host / metrics_port, from {plan.origin}): {exc}") from exc
    print(f"camera {camera.id}: source {camera.source}, broker {','.join(node.endpoints)}, metrics "
          f"http://{plan.metrics_host}:{port}/metrics", file=sys.stderr, flush=True)
    stop = threading.Event()
    stop_on_signals(stop)
    node.run(stop)
    node.ctx.destroy(linger=CLOSE_LINGER_MS)  # waits (bounded) until the last frames counted as sent have left
    print(f"camera {camera.id} stopped: {json.dumps(node.summary())}", file=sys.stderr, flush=True)
    return 0


def cmd_camera(args: argparse.Namespace) -> int:
    plan = plan_from_file(args) if args.camera_file is not None else plan_from_site(args)
    return check(plan) if args.check else run(plan)


def cmd_keys_gen(args: argparse.Namespace) -> int:
    files = generate_keys(args.name, args.dir)
    print(f"public key {files.public} (give it to the broker's allowed_keys_dir or to cameras)\n"
          f"secret key {files.secret} "
          "(keep it on this machine only)")
    return 0
