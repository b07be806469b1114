"""Tracker and recognition-scheduling settings (one ``type`` field picks the tracker backend).

Tuning advice sits in each field's description; `gpu_worker.config.TrackingConfig` gathers these sections.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, Tag, model_validator

from shared.schema import Section, type_discriminator


class ByteTrackConfig(Section):
    type: Literal["bytetrack"] = Field(default="bytetrack", description="ByteTrack: two-stage IoU association.")
    high_threshold: float = Field(default=0.9, gt=0.0, le=1.0,
                                  description="Detections at or above this score take part in the first stage. "
                                  "Raise it if false detections start tracks; lower it for blurry cameras.")
    low_threshold: float = Field(default=0.5, gt=0.0, le=1.0,
                                 description="Detections between this and high_threshold only extend existing tracks "
                                 "(occluded or blurred faces). Only scores above detector.score_threshold reach "
                                 "the tracker: lower that too to use this stage fully.")
    new_track_threshold: float = Field(default=0.92, gt=0.0, le=1.0,
                                       description="A new track needs a detection at least this confident. Raise it "
                                       "if posters or patterns start short tracks; lower it for small, distant faces.")
    match_iou: float = Field(default=0.2, gt=0.0, le=1.0,
                             description="Minimum IoU with a track's predicted box for a first-stage match. Lower "
                                         "for fast motion at low frame rates, raise for crowds.")
    second_match_iou: float = Field(default=0.5, gt=0.0, le=1.0,
                                    description="Minimum IoU for the low-score stage (stricter: weak detections). "
                                    "Lower it only if occluded faces keep losing their track.")
    lost_buffer_s: float = Field(default=1.5, ge=0.0, le=60.0,
                                 description="How long a lost track waits to be found again before it ends. Longer "
                                 "bridges occlusions, shorter ends tracks of people who left sooner.")
    min_hits: int = Field(default=2, ge=1, le=30,
                          description="Matched frames before a track is confirmed and reported (1 = at once). 1 "
                          "reports faces a frame sooner but lets one-frame false detections start tracks; raise it "
                          "for noisy scenes. Hits count detected frames only (see tracking.detect_fps).")

    @model_validator(mode="after")
    def _ordered(self) -> "ByteTrackConfig":
        if self.low_threshold > self.high_threshold:
            raise ValueError(f"low_threshold ({self.low_threshold}) must not exceed high_threshold "
                             f"({self.high_threshold})")
        return self


class SortConfig(Section):
    type: Literal["sort"] = Field(default="sort", description="SORT: one-stage IoU association (simpler baseline).")
    min_score: float = Field(default=0.8, gt=0.0, le=1.0,
                             description="Detections below this score are ignored. Lower it to keep blurred faces "
                             "tracked, raise it if false detections start tracks.")
    match_iou: float = Field(default=0.3, gt=0.0, le=1.0,
                             description="Minimum IoU for a match. Lower for fast motion at low frame rates, raise "
                             "for crowds where neighbouring faces overlap.")
    lost_buffer_s: float = Field(default=1.0, ge=0.0, le=60.0,
                                 description="How long a lost track may stay lost. Longer bridges occlusions, shorter "
                                 "ends tracks of people who left sooner.")
    min_hits: int = Field(default=2, ge=1, le=30,
                          description="Matched frames before a track is reported. 1 reports at once but lets "
                          "one-frame false detections start tracks.")


TrackerConfig = Annotated[Annotated[ByteTrackConfig, Tag("bytetrack")] | Annotated[SortConfig, Tag("sort")],
                          type_discriminator("bytetrack")]


class SchedulerConfig(Section):
    budget: int = Field(default=4, ge=1, le=256,
                        description="Embeddings per frame and camera at most: new tracks first, then unnamed ones, "
                        "then better-quality faces, then refreshes. Raise on a GPU; lower on a small CPU.")
    refresh_s: float = Field(default=3.0, gt=0.0, le=3600.0,
                             description="A named track is re-embedded at most this often (to catch a swap).")
    unnamed_refresh_s: float = Field(default=0.3, gt=0.0, le=3600.0,
                                     description="An unnamed track is re-embedded at most this often.")
    unnamed_backoff: float = Field(default=2.0, ge=1.0, le=10.0,
                                   description="After three embeddings in a row that named nobody, each further one "
                                   "multiplies an unnamed track's wait by this (0.3, 0.3, 0.3, 0.6, 1.2, 2.4 s ..., "
                                   "never over refresh_s): a stranger is not re-embedded three times a second for as "
                                   "long as they stay in view. A clearly better face (quality_margin) is still "
                                   "embedded at once. 1 = off.")
    quality_margin: float = Field(default=0.25, ge=0.0, le=10.0,
                                  description="Re-embed early when a face's quality beats the track's best embedded "
                                  "one by this fraction (0.25 = 25% better).")
    min_interval_s: float = Field(default=0.3, ge=0.0, le=60.0,
                                  description="Never embed one track more often than this, whatever the reason.")
    min_quality: float = Field(default=0.05, ge=0.0, le=1.0,
                               description="Faces below this quality score (tiny, blurred, turned) are not embedded.")
    min_face_px: int = Field(default=24, ge=0, le=1024,
                             description="Faces whose box's shorter side (its width on an upright face, about 0.78 x "
                             "the face's height) is below this many pixels are tracked but not embedded: too small "
                             "to be named reliably (`argusnet eval small-faces` with the default model: TAR@FAR0.01 "
                             "0.53 at 32 px tall, 0.87 at 36 px, 1.0 at 40 px; BENCHMARKS.md). A track none of "
                             "whose faces is this big stays unknown - no name and no visitor id - until a big enough "
                             "face comes. 0 = off. Lower it only for a model measured to hold up on smaller faces.")
    max_per_track: int = Field(default=0, ge=0, le=100_000,
                               description="Cap on embeddings per track (0 = none). Set it on a small CPU with "
                               "long-lived tracks (people standing in view); refreshes stop after the cap.")
