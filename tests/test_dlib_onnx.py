"""dlib's ResNet exported to ONNX: the reader of dlib's format, the exported graph against dlib's own C++ on every
real face, the same verification decisions, the cache, and input checks."""

from __future__ import annotations

import numpy as np
import pytest

from argusnet.config import load_config
from evaluation.chips import real_face_chips
from gpu_worker.embed.dlib_convert import cached_onnx
from gpu_worker.embed.dlib_format import _Reader, read_dlib_net
from gpu_worker.embed.dlib_onnx import DlibOnnxEmbedder
from gpu_worker.embed.dlib_resnet import DLIB_THRESHOLD, DlibEmbedder, dlib_model_path
from gpu_worker.engine import Engine
from shared.errors import ModelError


@pytest.fixture(scope="module")
def onnx_embedder() -> DlibOnnxEmbedder:
    return DlibOnnxEmbedder(load_config(environ={}).runtime)


def test_reader_primitives():
    r = _Reader(b"\x01\x05" + b"\x82\x00\x01" + b"\x03\x0a\xd7\xa3\x81\x1c" + b"\x01\x03abc" + b"1")
    assert r.int() == 5 and r.int() == -256
    assert r.float() == pytest.approx(0.04)
    assert r.string() == "abc" and r.bool() is True
    with pytest.raises(ModelError, match="truncated"):
        r.int()
    with pytest.raises(ModelError, match="bad integer control byte"):
        _Reader(b"\x0f").int()


def test_reader_refuses_other_files():
    with pytest.raises(ModelError, match="not a dlib network file"):
        read_dlib_net(b"\x01\x07")
    data = open(dlib_model_path(), "rb").read()
    with pytest.raises(ModelError, match="truncated"):
        read_dlib_net(data[: len(data) // 2])
    net = read_dlib_net(data)
    assert net.input.size == 150 and len(net.layers) > 100


def test_onnx_descriptors_match_dlib_on_every_real_face(data_dir, engine, onnx_embedder):
    chips = real_face_chips(engine, data_dir)
    assert len(chips) >= 120
    ours, theirs = onnx_embedder.raw(chips), DlibEmbedder().raw(chips)
    cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cos.min() >= 0.9999, cos.min()


def test_same_verification_decisions_as_dlib(data_dir):
    from evaluation.verify import embed_photos, read_pairs

    csv = data_dir / "deepface" / "master.csv"
    pairs = read_pairs(csv, csv.parent)
    decisions = []
    for backend in ("onnx", "dlib"):
        engine = Engine(load_config(environ={}, overrides={"embedder": {"type": "dlib", "backend": backend}}))
        photos = embed_photos(engine, [p.a for p in pairs] + [p.b for p in pairs], "verify")
        decisions.append([float(photos.vectors[str(p.a)] @ photos.vectors[str(p.b)]) >= DLIB_THRESHOLD
                          for p in pairs])
    assert decisions[0] == decisions[1]


def test_corrupt_cache_is_converted_again(tmp_path):
    first = cached_onnx(dlib_model_path(), tmp_path)
    cached = next(tmp_path.glob("*.onnx"))
    cached.write_bytes(b"garbage")
    assert cached_onnx(dlib_model_path(), tmp_path) == first
    assert cached.read_bytes() == first


def test_bad_chip_shape_is_a_value_error(onnx_embedder):
    with pytest.raises(ValueError, match=r"chips must have shape \(N, 150, 150, 3\), got \(1, 112, 112, 3\)"):
        onnx_embedder.embed(np.zeros((1, 112, 112, 3), np.uint8))
    assert onnx_embedder.embed(np.zeros((0, 150, 150, 3), np.uint8)).shape == (0, 128)


def test_jitter_needs_the_dlib_backend():
    from shared.errors import ConfigError

    with pytest.raises(ConfigError, match="jitter = 2 needs backend: dlib"):
        load_config(environ={}, overrides={"embedder": {"type": "dlib", "jitter": 2}})
