"""Strangers on a live site: does `argusnet up` name anybody on a street camera where nobody is enrolled?

`argusnet --config TMP/site.yaml up --duration MINUTES*60 --events-jsonl TMP/events.jsonl` with two cameras, as a
new operator would set a site up: the built-in ``demo`` camera (the portrait, enrolled on first run as Eileen
Collins: the only person enrolled) and a ``street`` camera looping ../shared/data/facenet-pytorch/arcade.mp4 at
720p (``max_side`` 1280) and 10 fps, every port free on 127.0.0.1. Counted from the printed events: the street
camera's tracks, and those of its tracks named as an enrolled person (``street_named``: the target is 0), with
their names and similarities; the demo camera's tracks named Eileen Collins (the site still names her).

Run: argusnet bench strangers --minutes 5 --json out/bench-strangers.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import yaml

from argusnet.launcher import free_port
from bench.common import emit, parser
from shared.errors import InputError

REPO = Path(__file__).resolve().parents[1]
ARCADE = REPO.parent / "shared" / "data" / "facenet-pytorch" / "arcade.mp4"
DEMO_NAME = "Eileen Collins"
START_ALLOWANCE_S = 300  # `up` enrols the portrait and the worker loads its models before --duration counts


def site(tmp: Path, clip: Path) -> Path:
    tcp = {k: f"tcp://127.0.0.1:{free_port()}" for k in ("frontend", "backend", "events_in", "events_out")}
    cameras = [{"id": "demo", "source": "demo", "metrics_port": free_port()},
               {"id": "street", "source": str(clip), "loop": True, "max_side": 1280, "fps": 10.0,
                "metrics_port": free_port()}]
    cfg = {"broker": {**tcp, "metrics_port": free_port()}, "worker": {"metrics_port": free_port()},
           # not tmp/store: `up`'s children run `python -m argusnet` from tmp, where a folder named like a package
           # (store/) would shadow it (issue 24)
           "store": {"type": "local", "path": str(tmp / "site-data")},
           "up": {"cameras": cameras, "dashboard": False}}
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def count(events: list[dict]) -> dict[str, Any]:
    def tracks(camera: str, named: bool | None = None) -> dict[int, dict]:
        return {e["track"]: e for e in events if e.get("camera") == camera and (
            named is None or (e.get("type") == "track_identified" and not e.get("visitor")))}
    street_named = tracks("street", named=True)
    return {"street_tracks": len(tracks("street")), "street_named": len(street_named),
            "street_names": sorted({e["name"] for e in street_named.values()}),
            "street_similarities": sorted(round(e["similarity"], 4) for e in street_named.values()
                                          if e.get("similarity") is not None),
            "demo_tracks": len(tracks("demo")),
            "demo_named": sum(1 for e in tracks("demo", named=True).values() if e["name"] == DEMO_NAME)}


def measure(minutes: float, tmp: Path) -> dict[str, Any]:
    if not ARCADE.is_file():
        raise InputError(f"the street clip is missing: {ARCADE}")
    config, events = site(tmp, ARCADE), tmp / "events.jsonl"
    command = [sys.executable, "-m", "argusnet", "--config", str(config), "up", "--duration", str(minutes * 60),
               "--events-jsonl", str(events)]
    done = subprocess.run(command, cwd=tmp, capture_output=True, text=True,
                          timeout=minutes * 60 + START_ALLOWANCE_S)
    lines = [json.loads(line) for line in events.read_text().splitlines() if line.strip()] \
        if events.is_file() else []
    return {"benchmark": "strangers", "minutes": minutes, "exit_code": done.returncode,
            "stderr_tail": done.stderr[-2000:] if done.returncode else "", "events": len(lines), **count(lines)}


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5.0, help="how long the site runs (default 5)")
    p.add_argument("--workdir", type=Path, default=None, metavar="DIR",
                   help="keep the site (config, store, events.jsonl) in DIR instead of a temporary directory")
    args = p.parse_args(argv)
    if not 0.5 <= args.minutes <= 600:
        raise InputError(f"--minutes must be between 0.5 and 600, got {args.minutes}")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = measure(args.minutes, args.workdir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="argusnet-strangers-") as tmp:
            result = measure(args.minutes, Path(tmp))
    emit(result, args.json)
    print(f"street camera: {result['street_named']} of {result['street_tracks']} tracks named "
          f"{result['street_names']}; demo camera: {result['demo_named']} of {result['demo_tracks']} tracks named "
          f"{DEMO_NAME}")
    return 0 if result["exit_code"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
