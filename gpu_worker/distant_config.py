"""Settings of the distant-face strategy of camera streams (`gpu_worker.distant`)."""

from __future__ import annotations

from pydantic import Field

from shared.schema import Section


class DistantFacesConfig(Section):
    fine_every_s: float = Field(
        default=0.5, ge=0.0, le=3600.0,
        description="How often at most one of each camera's detected frames is detected at up to max_side instead of "
        "detector.max_side, to find faces too small for that pass (a 40 px face of a 720p frame is 20 px at 640); "
        "0 = never. A new distant face is reported within about this long plus one detected frame; each such pass "
        "costs about 2 (max_side 960) to 4 (1280) usual ones (BENCHMARKS.md: 'Distant faces').")
    budget: float = Field(
        default=0.6, gt=0.0, le=100.0,
        description="What the fine passes and regions may add to a camera's detection work, as a fraction of its "
        "usual passes (at what they were measured to cost on its frames): each detected frame saves this much, "
        "regions and fine passes spend it, and a fine pass waits (beyond fine_every_s) until enough is saved. "
        "0.6 holds a fine pass about every 0.5 s with four regions in use (`eval track --face-height 40`: IDF1 "
        "0.853-0.873 in three runs) for about 11 % more CPU a frame than no passes on arcade.mp4 (BENCHMARKS.md: "
        "'Distant faces'); lower it where many small faces are in view, raise it to find new distant faces sooner, "
        "100 to hold fine_every_s always.")
    max_side: int = Field(default=960, ge=64, le=4096, description="The longer side frames are resized to for the "
                          "fine pass (never enlarged): 960 finds faces 40 px tall in a 720p frame (30 px there) at "
                          "about 2.1 usual passes; 1280 (a 720p frame's own resolution) finds them sooner, and "
                          "smaller ones, at about 3.8. The same faces in a 1080p frame need about 1440.")
    regions: int = Field(default=4, ge=0, le=64, description="At most this many small faces of a detected frame "
                         "(found by any pass, or small tracks it lost) are detected again on the camera's next "
                         "detected frame, each in a crop around it at region_scale, so that faces found by a "
                         "fine pass are confirmed and followed between fine passes; 0 = off.")
    region_px: int = Field(default=96, ge=64, le=1024, multiple_of=32, description="The largest side of a region's "
                           "crop, in pixels of the regions' scale (a crop is about twice its face's height, at least "
                           "64 px; a larger one is detected shrunk to this: four 64 px crops cost about 1/15 of a "
                           "640x360 pass).")
    region_scale: float = Field(
        default=1.0, ge=0.25, le=4.0,
        description="The scale regions are detected at, over the frame's own pixels (above 1 the crop is enlarged): "
        "1, the frame's own resolution, found and held 40 px faces of a 720p frame best (`eval track --face-height "
        "40`: IDF1 0.86 against 0.79 at the 960 pass's scale, 0.83 at 1.25, 0.81 at 2; BENCHMARKS.md).")
    yield_after_ms: float = Field(
        default=50.0, ge=0.0, le=10_000.0,
        description="The passes use spare capacity: when the worker takes frames up later than their camera's usual "
        "by more than this (a moving average), the budget and the regions shrink, to none at three times this, so "
        "a worker at its capacity detects as with the passes off (gpu_worker/spare.py); 0 = never yield.")
