"""Model cards: everything needed to run a face-embedding ONNX file correctly and to check it is the right one.

A card names the input size, channel order, normalisation ``(pixel - mean) / std`` (``mean`` and ``std`` are
given in the card's own channel order), tensor layout, embedding size, alignment template, default match
threshold and the sha256 of the file. Three cards are built in; ``load_card`` also reads a user's YAML card.

Sources of the built-in facts (checked in public code, not by running the files, which this project cannot
download):

* ArcFace (insightface): ``insightface/model_zoo/arcface_onnx.py`` feeds both packs' recognition models with
  ``cv2.dnn.blobFromImages(imgs, 1/127.5, size, (127.5,)*3, swapRB=True)``: RGB, NCHW, 112x112, mean 127.5,
  std 127.5, one 512-d output. sha256 of ``w600k_r50.onnx`` (buffalo_l, 174,383,860 bytes) and of
  ``glintr100.onnx`` (antelopev2, 260,665,334 bytes) as pinned by several independent projects and by the
  Hugging Face LFS pointers of the mirrors below. Note: fal's AuraFace also ships a ``glintr100.onnx``; that is a
  different model (sha256 a7933ea5...) and is rejected by this card.
* VGGFace2 ResNet-50 (Oxford VGG, Cao et al. 2018, weights as converted by keras-vggface / VGGFace2-pytorch):
  224x224, BGR, mean (91.4953, 103.8827, 131.0912) in B, G, R order, std 1 (``resnet50_ft.prototxt``), here
  exported channels-last (tf2onnx of keras-vggface ``RESNET50(include_top=False, pooling='avg')``), 2048-d.
  No ONNX export of it is published with a checksum, so the card has none and the user must pass one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gpu_worker.align import ARCFACE_112, TEMPLATES, AlignTemplate, register_template
from shared.errors import ConfigError
from shared.ids import ID_PATTERN, ID_RULE

SHA256_PATTERN = r"^[0-9a-fA-F]{64}$"

# VGGFace2's recipe (Cao et al. 2018): the detector box enlarged 1.3x, the shorter side resized to 256, the
# centre 224x224 crop. Applied to RetinaFace's boxes and landmarks on the 69 faces of ../shared/data/deepface
# and facenet-pytorch/test_images, the mean landmarks are the ArcFace layout scaled by 2 (112 -> 224) times a
# zoom of 1.21 and shifted by (-23.1, -41.0) px (least squares, mean residual 3.8 px): the detector's tall boxes
# (h/w 1.42) make the shorter side the width, so VGGFace2's chips are tighter than ArcFace's, and the face sits
# higher (the box extends to the forehead).
VGGFACE2_ZOOM = 1.21
VGGFACE2_SHIFT = (-23.1, -41.0)
VGGFACE2_224 = register_template(AlignTemplate(
    "vggface2_224", 224, (ARCFACE_112 * 2.0 * VGGFACE2_ZOOM + np.array(VGGFACE2_SHIFT)).astype(np.float32)))


class ModelCard(BaseModel):
    """How to feed one face-embedding ONNX file and how to recognise it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=f"^{ID_PATTERN}$", description=f"Model name recorded in galleries: {ID_RULE}.")
    description: str = Field(min_length=1, description="What the model is and where it comes from.")
    licence: str = Field(min_length=1, description="Licence or terms of use of the weights.")
    input_size: int = Field(ge=16, le=1024, description="Input height = width in pixels.")
    color_order: Literal["RGB", "BGR"] = Field(description="Channel order the network expects.")
    mean: tuple[float, float, float] = Field(description="Per-channel mean, in color_order.")
    std: tuple[float, float, float] = Field(description="Per-channel std, in color_order: (pixel - mean) / std.")
    layout: Literal["NCHW", "NHWC"] = Field(description="Input tensor layout.")
    output_dim: int = Field(ge=1, le=65536, description="Embedding size.")
    template: str = Field(description="Name of the alignment template (gpu_worker.align.TEMPLATES).")
    threshold: float = Field(ge=-1.0, le=1.0, description="Default cosine similarity for one face's match.")
    name_threshold: float | None = Field(default=None, ge=-1.0, le=1.0,
                                         description="Similarity a track's template or a photo needs for a name. "
                                         "Empty = `threshold` (not calibrated: measure it with `argusnet eval "
                                         "openset` and set it).")
    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN, description="sha256 of the ONNX file.")
    url: str | None = Field(default=None, pattern=r"^https?://", description="Where fetch_model may download it.")

    @field_validator("std")
    @classmethod
    def _std_positive(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s <= 0 for s in value):
            raise ValueError(f"every std must be > 0, got {value}")
        return value

    @field_validator("sha256")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return None if value is None else value.lower()

    @model_validator(mode="after")
    def _template_fits(self) -> "ModelCard":
        tpl = TEMPLATES.get(self.template)
        if tpl is None:
            raise ValueError(f"template {self.template!r} is not registered; known: {sorted(TEMPLATES)}")
        if tpl.size != self.input_size:
            raise ValueError(f"template {self.template!r} makes {tpl.size}x{tpl.size} chips, "
                             f"but input_size is {self.input_size}")
        return self

    @property
    def align_template(self) -> AlignTemplate:
        return TEMPLATES[self.template]


_ARCFACE_COMMON = dict(input_size=112, color_order="RGB", mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5),
                       layout="NCHW", output_dim=512, template="arcface_112")
_INSIGHTFACE_TERMS = ("insightface pretrained models: non-commercial research use only "
                      "(deepinsight/insightface model_zoo README); code MIT.")

BUILTIN_CARDS: dict[str, ModelCard] = {card.name: card for card in (
    ModelCard(
        name="arcface_w600k_r50", **_ARCFACE_COMMON,
        description="ArcFace ResNet-50 trained on WebFace600K: w600k_r50.onnx of insightface's buffalo_l pack.",
        licence=_INSIGHTFACE_TERMS,
        # Not calibrated here (no weights offline): deepface's published Buffalo_L cosine distance 0.55.
        threshold=0.45,
        sha256="4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43",
        url="https://huggingface.co/public-data/insightface/resolve/main/models/buffalo_l/w600k_r50.onnx"),
    ModelCard(
        name="arcface_glintr100", **_ARCFACE_COMMON,
        description="ArcFace ResNet-100 trained on Glint360K: glintr100.onnx of insightface's antelopev2 pack.",
        licence=_INSIGHTFACE_TERMS,
        # No published threshold found; an uncalibrated start between deepface's ArcFace (0.32) and
        # Buffalo_L (0.45) figures. Calibrate with `argusnet eval verify`.
        threshold=0.40,
        sha256="4ab1d6435d639628a6f3e5008dd4f929edf4c4124b1a7169e1048f9fef534cdf",
        url="https://huggingface.co/DIAMONIK7777/antelopev2/resolve/main/glintr100.onnx"),
    ModelCard(
        name="vggface2_resnet50", input_size=224, color_order="BGR", mean=(91.4953, 103.8827, 131.0912),
        std=(1.0, 1.0, 1.0), layout="NHWC", output_dim=2048, template=VGGFACE2_224.name,
        description="VGGFace2 ResNet-50 (Oxford VGG resnet50_ft via keras-vggface, average-pooled 2048-d "
        "features) exported to ONNX channels-last; no published checksum: pass the sha256 of your export.",
        licence="Oxford VGG VGGFace2 models: research use; check the VGGFace2 terms before other use.",
        # Not calibrated here: the cosine distance 0.5 used with these features in public tutorials.
        threshold=0.50),
)}


def load_card(name_or_path: str | Path) -> ModelCard:
    """A built-in card by name, or a card read from a YAML file (``ConfigError`` naming the problem)."""
    key = str(name_or_path)
    if key in BUILTIN_CARDS:
        return BUILTIN_CARDS[key]
    path = Path(key)
    if path.suffix.lower() not in (".yaml", ".yml") and not path.exists():
        raise ConfigError(f"unknown model card {key!r}: built-in cards are {sorted(BUILTIN_CARDS)}, "
                          "or give the path of a card YAML file")
    return card_from_yaml(path)


def card_from_yaml(path: Path) -> ModelCard:
    """Read and validate one card YAML file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"model card file not found: {path}") from exc
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read model card {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"model card {path} must hold a mapping, got {type(data).__name__}")
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<card>'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid model card {path}: {problems}") from exc
