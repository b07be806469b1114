"""`argusnet gallery reembed` re-embeds every gallery of the store from its stored crops: persons, visitors and
negative evidence. Run in-process with a stand-in embedder (a vector derived from the chip's shade), so that no
model is loaded."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import pytest

from argusnet.commands import recognise
from argusnet.config import load_config
from gpu_worker.align import TEMPLATES
from shared.errors import GalleryError
from store import open_store
from store.config import GalleryConfig, LocalStoreConfig
from store.types import FaceSample

DIM = 16
OLD, NEW = "old_model", "new_model"


def shade_vector(shade: int, dim: int) -> np.ndarray:
    v = np.random.default_rng(shade).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


@dataclass(frozen=True)
class ShadeEmbedder:
    """Embeds an aligned chip as the unit vector seeded by its mean shade (what the stored crop was filled with)."""

    name: str = NEW
    dim: int = 24
    template = TEMPLATES["arcface_112"]

    def embed(self, chips: np.ndarray) -> np.ndarray:
        return np.stack([shade_vector(int(round(float(chip.mean()))), self.dim) for chip in chips])


@dataclass(frozen=True)
class FakeEngine:
    embedder: ShadeEmbedder
    cfg: object


def sample(shade: int) -> FaceSample:
    landmarks = np.array([[38, 52], [74, 52], [56, 72], [42, 92], [70, 92]], np.float32)
    return FaceSample(shade_vector(shade, DIM), np.full((112, 112, 3), shade, np.uint8), landmarks, f"s{shade}")


def test_reembed_converts_persons_visitors_and_negative_evidence(tmp_path, monkeypatch, capsys):
    cfg = LocalStoreConfig(path=tmp_path / "store")
    with open_store(cfg, GalleryConfig(), OLD, DIM, create=True) as store:
        store.persons.add_person("Ann", [sample(40)])
        store.visitors.match_or_create([sample(120)], 0.9, 5)
        store.negatives.add("Ann", [sample(200), sample(220)])
    embedder = ShadeEmbedder()
    monkeypatch.setattr(recognise, "engine_from", lambda args: FakeEngine(embedder, load_config(environ={})))
    assert recognise.cmd_gallery_reembed(argparse.Namespace(gallery=cfg.path, config=None)) == 0
    assert "and 1 visitor face(s), 2 negative face(s)" in capsys.readouterr().out
    with pytest.raises(GalleryError):
        open_store(cfg, GalleryConfig(), OLD, DIM)
    with open_store(cfg, GalleryConfig(), NEW, embedder.dim) as store:
        assert store.negatives.model == NEW
        for shade in (200, 220):
            query = shade_vector(shade, embedder.dim)[None]
            hit = store.negatives.search(query, 1)[0][0]
            assert hit.name == "Ann" and hit.similarity == pytest.approx(1.0, abs=1e-3)
        assert store.persons.search(shade_vector(40, embedder.dim)[None], 1)[0][0].name == "Ann"
        assert [audit.details for audit in store.audit.list() if audit.action == "reembed"] == [
            {"model": NEW, "faces": 1, "visitor_faces": 1, "negative_faces": 2}]
