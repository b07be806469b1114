"""Distant-face strategies side by side (`argusnet bench pipeline --strategies`): for each way of finding faces too
small for ``detector.max_side`` in a stream (`tracking.distant`), its cost (the tracked pipeline's fps on the
benchmark video, same run) and its effect on the distant-face scenes of `argusnet eval track --face-height H`
(`evaluation.synthetic.far_view`: real faces about H px tall moving in a 1280x720 frame, JPEG q75, 10 fps):

- ``found``: ground-truth appearances some reported track box covers (IoU >= MATCH_IOU) in at least one frame;
- ``found_delay_ms`` p50 / p90 / max: an appearance's first visible frame -> the first frame a reported track box
  covers it (a new distant face found; frames are 100 ms apart, so 0 = found on its first frame);
- ``coverage``: the fraction of visible ground-truth boxes covered by a reported track box.

Cost: ``video_tracked_fps`` and ``video_cpu_ms_per_frame`` (process CPU, all threads), medians of REPEATS runs
taken in turns with the other strategies, and both against ``off`` (today's detection).

Strategies (STRATEGIES, each a change to the loaded configuration): ``off`` (no fine pass, no regions: detection as
before), ``default`` (as configured), ``budget_0.4`` (the budget before 0.6), ``regions_at_fine_scale`` (regions
detected at 0.75 of the frame's pixels: the 960 pass's scale for a 720p frame, as before ``region_scale``; for a
1080p frame the old scale was 0.5), ``regions_only`` (re-detection around small faces and lost small tracks, no
fine pass), ``fine_no_budget`` (a fine pass every fine_every_s whatever it costs), ``fine_no_regions`` (the same
without regions: tracks are not confirmed between fine passes), ``fine_1280_1s_no_budget`` (at a 720p frame's own
resolution, every second) and ``arrival_resolution`` (``detector.max_side`` 1280: every detected frame at its own
resolution).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from argusnet.config import load_config
from gpu_worker.engine import Engine
from gpu_worker.processing import DecodedFrame
from gpu_worker.tracked import TrackBox, TrackedProcessor
from gpu_worker.video import NullTimer
from shared.types import iou_matrix

MATCH_IOU = 0.5
REPEATS = 5  # runs of the video per strategy

# name -> tracking.distant settings (and detector.max_side) on top of the loaded configuration; "default" is that
# configuration as it is, "off" today's detection before the distant-face passes
STRATEGIES: dict[str, dict] = {
    "off": {"fine_every_s": 0.0, "regions": 0},
    "default": {},
    "budget_0.4": {"budget": 0.4},
    "regions_at_fine_scale": {"region_scale": 0.75},
    "regions_only": {"fine_every_s": 0.0},
    "fine_no_budget": {"budget": 100.0},
    "fine_no_regions": {"budget": 100.0, "regions": 0},
    "fine_1280_1s_no_budget": {"fine_every_s": 1.0, "max_side": 1280, "budget": 100.0},
    "arrival_resolution": {"fine_every_s": 0.0, "regions": 0, "detector.max_side": 1280},
}


def overrides_for(settings: dict) -> dict:
    distant = {k: v for k, v in settings.items() if "." not in k}
    out: dict = {"tracking": {"distant": distant}} if distant else {}
    if "detector.max_side" in settings:
        out["detector"] = {"max_side": settings["detector.max_side"]}
    return out


@dataclass
class SceneRun:
    truth: list[list]
    predicted: list[list[TrackBox]]


def run_scene(processor: TrackedProcessor, frames: list[tuple[np.ndarray, list]], camera: str, fps: float) -> SceneRun:
    run = SceneRun([], [])
    processor.on_tracks = lambda item, boxes: run.predicted.append(boxes)
    start = time.time()
    for index, (image, truth) in enumerate(frames):
        run.truth.append(truth)
        before = len(run.predicted)
        processor.process([DecodedFrame(camera, index, start + index / fps, image, time.time())], NullTimer())
        if len(run.predicted) == before:
            run.predicted.append([])
    processor.on_tracks = None
    return run


def video_costs(measure, engines: dict[str, tuple], store, frames: list[np.ndarray], fps: float) -> dict:
    """The tracked side on the video for every strategy, round after round (REPEATS rounds, a new processor
    each run: what else runs on the host changes in time, so each strategy gets its share of quiet and busy
    moments): per strategy the last run's counts with the median fps and the median process CPU per frame (less
    sensitive than fps to the host's other load), and every run's."""
    runs: dict[str, list[dict]] = {name: [] for name in engines}
    for _ in range(REPEATS):
        for name, (engine, cfg) in engines.items():
            start = time.process_time()
            row = measure(TrackedProcessor(engine, store, cfg), frames, fps)
            row["cpu_ms_per_frame"] = round((time.process_time() - start) * 1000.0 / max(1, row["frames"]), 2)
            runs[name].append(row)
    out = {}
    for name, rows in runs.items():
        fps_runs = sorted(r["fps"] for r in rows)
        cpu_runs = sorted(r["cpu_ms_per_frame"] for r in rows)
        out[name] = {**rows[-1], "fps": fps_runs[len(rows) // 2], "cpu_ms_per_frame": cpu_runs[len(rows) // 2],
                     "fps_runs": fps_runs, "cpu_ms_per_frame_runs": cpu_runs}
    return out


def found_stats(runs: list[SceneRun], fps: float) -> dict:
    first_seen: dict[tuple, int] = {}
    first_found: dict[tuple, int] = {}
    visible = covered = 0
    for k, run in enumerate(runs):
        for index, (truth, boxes) in enumerate(zip(run.truth, run.predicted)):
            pred = np.array([b.box for b in boxes], np.float32).reshape(-1, 4)
            for t in truth:
                key = (k, t.gt_id)
                first_seen.setdefault(key, index)
                visible += 1
                if len(pred) and iou_matrix(np.array([t.box], np.float32), pred).max() >= MATCH_IOU:
                    covered += 1
                    first_found.setdefault(key, index)
    delays = [(first_found[key] - first_seen[key]) * 1000.0 / fps for key in first_found]
    pct = (lambda q: None if not delays else round(float(np.percentile(delays, q)), 1))
    return {"appearances": len(first_seen), "found": len(first_found),
            "found_rate": round(len(first_found) / max(1, len(first_seen)), 4),
            "found_delay_ms": {"p50": pct(50), "p90": pct(90), "max": pct(100)},
            "coverage": round(covered / max(1, visible), 4)}


def scenes(engine: Engine, data_dir: Path, count: int, face_height: float) -> tuple[list, float]:
    """Rendered frames (image, truth) of ``count`` distant-face scenes, and their fps."""
    from evaluation.synthetic import FAR_FRAME, SpriteCache, backgrounds, make_sequence, people, render

    persons = people(data_dir)
    bgs = backgrounds(data_dir, FAR_FRAME)
    sprites = SpriteCache(engine.detector)
    seqs = [make_sequence(i, persons, bgs, face_height=face_height) for i in range(count)]
    return [list(render(seq, sprites)) for seq in seqs], seqs[0].fps


def compare(store, video_frames: list[np.ndarray], video_fps: float, data_dir: Path, count: int,
            face_height: float, measure) -> dict:
    """Every strategy (the loaded configuration with its overrides): cost on the video (``measure``: the tracked
    side of bench.pipeline), effect on the scenes."""
    base = Engine(load_config())
    base.warm_up()
    rendered, fps = scenes(base, data_dir, count, face_height)
    engines = {}
    for name, settings in STRATEGIES.items():
        scfg = load_config(overrides=overrides_for(settings))
        engines[name] = (Engine(scfg, embedder=base.embedder), scfg)
        engines[name][0].warm_up()
    costs = video_costs(measure, engines, store, video_frames, video_fps)
    out = {}
    for name, (engine, scfg) in engines.items():
        processor = TrackedProcessor(engine, store, scfg)
        runs = [run_scene(processor, frames, f"far{k}", fps) for k, frames in enumerate(rendered)]
        cost = costs[name]
        out[name] = {"settings": STRATEGIES[name], "video_tracked_fps": cost["fps"],
                     "video_cpu_ms_per_frame": cost["cpu_ms_per_frame"], "video": cost, **found_stats(runs, fps)}
    off = out["off"]
    for row in out.values():
        row["video_fps_vs_off"] = round(row["video_tracked_fps"] / off["video_tracked_fps"], 3)
        row["video_cpu_vs_off"] = round(row["video_cpu_ms_per_frame"] / off["video_cpu_ms_per_frame"], 3)
    return {"face_height": face_height, "scenes": count, "match_iou": MATCH_IOU, "repeats": REPEATS,
            "strategies": out}
