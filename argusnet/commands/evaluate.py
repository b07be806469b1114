"""`argusnet eval verify|identify|detect`: accuracy on labelled real data, JSON out."""

from __future__ import annotations

import argparse
from pathlib import Path

from argusnet.commands.common import engine_from, print_json
from evaluation.common import write_json
from shared.errors import InputError

DEFAULT_DATA = Path("..") / "shared" / "data"


def register(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="measure accuracy on labelled photos").add_subparsers(
        dest="eval_command", metavar="KIND", required=True)
    p = ev.add_parser("verify", help="1:1 verification on labelled pairs (CSV file_x,file_y,Decision)")
    p.add_argument("--pairs", type=Path, required=True, metavar="CSV")
    _common(p, handler=cmd_verify)
    p = ev.add_parser("identify", help="rank-1 identification, leave-one-out (CSV identity,file or a folder "
                      "of one sub-folder per person)")
    p.add_argument("--identities", type=Path, required=True, metavar="CSV_OR_DIR")
    _common(p, handler=cmd_identify)
    p = ev.add_parser("track", help="the tracked pipeline on synthetic sequences of real faces: IDF1, MOTA, HOTA, "
                      "ID switches, wrong names, embeddings per track, time to name")
    p.add_argument("--sequences", type=int, default=10, metavar="N", help="how many sequences (default 10)")
    p.add_argument("--seed", type=int, default=0, help="sequence generator seed")
    p.add_argument("--fps", type=float, default=10.0,
                   help="frame rate of the sequences (default 10): the same scenes, sampled more or less often")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, metavar="DIR",
                   help=f"the shared data folder with deepface/identities.csv (default: {DEFAULT_DATA})")
    p.add_argument("--face-height", type=float, default=None, metavar="H",
                   help="the same scenes seen from further away: faces about H px tall (the detector box's height, "
                   "spread 0.9-1.1 H) in a 1280x720 frame, JPEG q75; adds named_recall and time to name per "
                   "ground-truth track (default: the base 640x480 scenes, faces 56-110 px)")
    p.add_argument("--gt-dir", type=Path, default=None, metavar="DIR",
                   help="also write each sequence's MOT ground truth (seqN-gt.txt) here")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the result to this JSON file")
    p.set_defaults(handler=cmd_track)
    p = ev.add_parser("small-faces", help="verification with every face shrunk to H px in a camera-sized frame: "
                      "faces detected, accuracy, TAR@FAR, wrong names per height")
    p.add_argument("--pairs", type=Path, required=True, metavar="CSV")
    p.add_argument("--heights", default="20,28,40,56,80,112", help="face heights in px (default 20,28,40,56,80,112)")
    p.add_argument("--frame", default="1280x720", help="frame size WIDTHxHEIGHT (default 1280x720)")
    _common(p, handler=cmd_small_faces)
    p = ev.add_parser("openset", help="strangers on real footage (each identity enrolled alone, clips replayed as "
                      "cameras send them) and the 1:N open-set protocol on photos: strangers named, FPIR, FNIR")
    p.add_argument("--identities", type=Path, nargs="+", default=None, metavar="CSV_OR_DIR",
                   help="identities files or folders of folders (default: deepface/identities.csv and dlib/johns "
                   f"under {DEFAULT_DATA})")
    p.add_argument("--clips", type=Path, nargs="+", default=None, metavar="VIDEO",
                   help=f"clips of strangers (default: {DEFAULT_DATA / 'facenet-pytorch' / 'arcade.mp4'})")
    p.add_argument("--resolutions", default="1080,720,480", help="frame heights the cameras send (default "
                   "1080,720,480)")
    p.add_argument("--fps", type=float, default=10.0, help="the cameras' frame rate (default 10)")
    p.add_argument("--loops", type=int, default=20, help="times each clip is replayed (default 20)")
    p.add_argument("--mated", type=int, default=0, metavar="N", help="also enrol N persons of each clip from one "
                   "face of their first appearance and count their later tracks named (at 720p and 1080p)")
    p.add_argument("--no-photos", action="store_true", help="skip the photo protocol")
    p.add_argument("--no-video", action="store_true", help="skip the strangers on video")
    p.add_argument("--variant", action="append", default=[], metavar='"SECTION.KEY=VALUE ..."',
                   help="run the evaluation again with these configuration values, in the same run")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the result to this JSON file")
    p.set_defaults(handler=cmd_openset)
    p = ev.add_parser("detect", help="detector recall/precision/AP at IoU 0.5 against dlib imglab XML boxes")
    p.add_argument("--boxes", type=Path, required=True, metavar="XML")
    _common(p, handler=cmd_detect)


def _common(p: argparse.ArgumentParser, handler) -> None:
    p.add_argument("--images", type=Path, default=None, metavar="DIR",
                   help="folder the file names are relative to (default: the labels file's folder)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the result to this JSON file")
    p.set_defaults(handler=handler)


def _finish(result: dict, out: Path | None) -> int:
    write_json(result, out)
    print_json(result)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from evaluation.verify import run_verify

    return _finish(run_verify(engine_from(args), args.pairs, args.images), args.json)


def cmd_identify(args: argparse.Namespace) -> int:
    from evaluation.identify import run_identify

    return _finish(run_identify(engine_from(args), args.identities, args.images), args.json)


def cmd_track(args: argparse.Namespace) -> int:
    from evaluation.synthetic import MAX_FACE_HEIGHT, MIN_FACE_HEIGHT
    from evaluation.track import evaluate_tracking

    if args.sequences < 1:
        raise InputError(f"--sequences must be >= 1, got {args.sequences}")
    if not (args.data / "deepface" / "identities.csv").is_file():
        raise InputError(f"{args.data} has no deepface/identities.csv (pass --data DIR)")
    if not 1.0 <= args.fps <= 60.0:
        raise InputError(f"--fps must be between 1 and 60, got {args.fps}")
    if args.face_height is not None and not MIN_FACE_HEIGHT <= args.face_height <= MAX_FACE_HEIGHT:
        raise InputError(f"--face-height must be between {MIN_FACE_HEIGHT:g} and {MAX_FACE_HEIGHT:g} px, "
                         f"got {args.face_height:g}")
    return _finish(evaluate_tracking(engine_from(args), args.data, args.sequences, args.seed, args.gt_dir, args.fps,
                                     face_height=args.face_height), args.json)


def cmd_small_faces(args: argparse.Namespace) -> int:
    from evaluation.small_faces import parse_frame, parse_heights, run_small_faces

    heights, frame = parse_heights(args.heights), parse_frame(args.frame)
    return _finish(run_small_faces(engine_from(args), args.pairs, args.images, heights, frame), args.json)


def cmd_detect(args: argparse.Namespace) -> int:
    from evaluation.detect import run_detect

    return _finish(run_detect(engine_from(args), args.boxes, args.images), args.json)


def cmd_openset(args: argparse.Namespace) -> int:
    from argusnet.config import load_config, parse_overrides
    from evaluation.openset import OpenSetPlan, run_openset

    identities = args.identities or [DEFAULT_DATA / "deepface" / "identities.csv", DEFAULT_DATA / "dlib" / "johns"]
    clips = args.clips or [DEFAULT_DATA / "facenet-pytorch" / "arcade.mp4"]
    for path in identities + clips:
        if not path.exists():
            raise InputError(f"not found: {path}")
    try:
        resolutions = [int(v) for v in args.resolutions.split(",") if v.strip()]
    except ValueError as exc:
        raise InputError(f"--resolutions: comma-separated heights in px, got {args.resolutions!r}") from exc
    if not resolutions or not all(64 <= r <= 4320 for r in resolutions):
        raise InputError(f"--resolutions: heights between 64 and 4320 px, got {args.resolutions!r}")
    if not 1.0 <= args.fps <= 60.0 or not 1 <= args.loops <= 1000 or not 0 <= args.mated <= 100:
        raise InputError("--fps must be 1-60, --loops 1-1000, --mated 0-100")
    variants = [(text, parse_overrides(text.split(), flag="--variant")) for text in args.variant]
    plan = OpenSetPlan(identities, clips, resolutions, args.fps, args.loops, mated=args.mated,
                       photos=not args.no_photos, video=not args.no_video, variants=variants)
    engine = engine_from(args)
    result = run_openset(engine, plan, lambda overrides: load_config(args.config, overrides=overrides))
    return _finish(result, args.json)
