"""The generic ONNX embedder and model cards, on small real ONNX models built here with onnx.helper."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from argusnet.config import load_config
from gpu_worker.align import TEMPLATES
from gpu_worker.embed import build_embedder
from gpu_worker.embed.base import Embedder
from gpu_worker.embed.cards import BUILTIN_CARDS, VGGFACE2_224, ModelCard, load_card
from gpu_worker.embed.onnx_embedder import OnnxEmbedder
from gpu_worker.runtime import RuntimeConfig
from shared.errors import ConfigError, ModelError

DIM = 64
CPU = RuntimeConfig(providers=["cpu"], threads=1)


def build_model(path: Path, layout: str = "NCHW", size: int = 112, dim: int = DIM, batch: str | int = "N") -> Path:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm with fixed random weights, written to ``path``."""
    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "conv_w"),
             numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "conv_b"),
             numpy_helper.from_array(rng.normal(0, 0.5, (dim, 8)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(rng.normal(0, 0.1, (dim,)).astype(np.float32), "fc_b")]
    nodes = []
    first = "chips"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", ["chips"], ["nchw"], perm=[0, 3, 1, 2]))
        first = "nchw"
    nodes += [helper.make_node("Conv", [first, "conv_w", "conv_b"], ["c"], kernel_shape=[3, 3], strides=[2, 2],
                               pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c"], ["r"]),
              helper.make_node("GlobalAveragePool", ["r"], ["g"]),
              helper.make_node("Flatten", ["g"], ["f"], axis=1),
              helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["embedding"], transB=1)]
    shape = [batch, 3, size, size] if layout == "NCHW" else [batch, size, size, 3]
    graph = helper.make_graph(nodes, "tiny_embedder",
                              [helper.make_tensor_value_info("chips", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, dim])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_card(path: Path | None, **changes) -> ModelCard:
    fields = dict(name="tiny", description="test model", licence="test", input_size=112, color_order="RGB",
                  mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5), layout="NCHW", output_dim=DIM,
                  template="arcface_112", threshold=0.3, sha256=sha(path) if path is not None else None)
    fields.update(changes)
    return ModelCard(**fields)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return build_model(tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(scope="module")
def embedder(model_path) -> OnnxEmbedder:
    return OnnxEmbedder(make_card(model_path), model_path, CPU, batch_size=3)


def chips(n: int, seed: int = 0, size: int = 112) -> np.ndarray:
    """Blocky colour images (a random 4x4 colour grid blown up, plus noise): unlike white noise, they keep
    different colour statistics after the model's global average pool."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 256, (n, 4, 4, 3)).repeat(size // 4, axis=1).repeat(size // 4, axis=2)
    return np.clip(grid + rng.integers(-20, 21, grid.shape), 0, 255).astype(np.uint8)


def test_embeddings_are_unit_norm_float32(embedder):
    out = embedder.embed(chips(5))
    assert out.shape == (5, DIM) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert isinstance(embedder, Embedder)
    assert (embedder.name, embedder.dim, embedder.provider) == ("tiny", DIM, "cpu")
    assert embedder.template.name == "arcface_112" and embedder.threshold == 0.3


def test_batched_equals_one_at_a_time(embedder):
    batch = chips(7, seed=1)
    together = embedder.embed(batch)
    alone = np.concatenate([embedder.embed(batch[i:i + 1]) for i in range(len(batch))])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_matches_the_session_run_by_hand(embedder, model_path):
    batch = chips(4, seed=2)
    x = ((batch.astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    y = session.run(None, {"chips": np.ascontiguousarray(x)})[0]
    np.testing.assert_allclose(embedder.embed(batch), y / np.linalg.norm(y, axis=1, keepdims=True), atol=1e-5)


def test_different_chips_give_different_embeddings(embedder):
    out = embedder.embed(chips(4, seed=3))
    sims = out @ out.T
    assert sims[~np.eye(4, dtype=bool)].max() < 0.99


def test_bgr_card_reverses_channels(model_path):
    rgb = OnnxEmbedder(make_card(model_path), model_path, CPU)
    bgr = OnnxEmbedder(make_card(model_path, color_order="BGR"), model_path, CPU)
    batch = chips(3, seed=4)
    a, b = rgb.embed(batch), bgr.embed(batch)
    assert np.abs(a - b).max() > 1e-3
    np.testing.assert_allclose(b, rgb.embed(np.ascontiguousarray(batch[..., ::-1])), atol=1e-5)


def test_nhwc_card_runs_a_channels_last_model(tmp_path, embedder):
    path = build_model(tmp_path / "nhwc.onnx", layout="NHWC")
    nhwc = OnnxEmbedder(make_card(path, layout="NHWC"), path, CPU)
    batch = chips(3, seed=5)
    np.testing.assert_allclose(nhwc.embed(batch), embedder.embed(batch), atol=1e-5)


def test_mean_and_std_are_applied(model_path, embedder):
    other = OnnxEmbedder(make_card(model_path, mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0)), model_path, CPU)
    assert np.abs(other.embed(chips(2, seed=6)) - embedder.embed(chips(2, seed=6))).max() > 1e-3


def test_fixed_batch_model_is_fed_one_chip_at_a_time(tmp_path, embedder):
    path = build_model(tmp_path / "b1.onnx", batch=1)
    fixed = OnnxEmbedder(make_card(path), path, CPU, batch_size=32)
    assert fixed.batch_size == 1
    np.testing.assert_allclose(fixed.embed(chips(3, seed=8)), embedder.embed(chips(3, seed=8)), atol=1e-5)


def test_empty_batch(embedder):
    assert embedder.embed(np.zeros((0, 112, 112, 3), np.uint8)).shape == (0, DIM)


def test_sha256_mismatch_is_refused(model_path):
    card = make_card(model_path, sha256="0" * 64)
    with pytest.raises(ModelError, match=f"has sha256 {sha(model_path)}, but card tiny expects {'0' * 64}"):
        OnnxEmbedder(card, model_path, CPU)


def test_card_without_sha256_needs_an_explicit_one(model_path):
    card = make_card(None)
    with pytest.raises(ModelError, match="publishes no sha256"):
        OnnxEmbedder(card, model_path, CPU)
    assert OnnxEmbedder(card, model_path, CPU, sha256=sha(model_path).upper()).embed(chips(1)).shape == (1, DIM)


def test_missing_file_is_a_model_error(tmp_path, model_path):
    with pytest.raises(ModelError, match="not found"):
        OnnxEmbedder(make_card(model_path), tmp_path / "absent.onnx", CPU)


def test_wrong_input_size_in_card(model_path):
    card = make_card(model_path, input_size=224, template="vggface2_224")
    with pytest.raises(ModelError, match=r"expects input shape \(N, 3, 224, 224\) \(NCHW\), model input 'chips' "
                                         r"has shape \(N, 3, 112, 112\)"):
        OnnxEmbedder(card, model_path, CPU)


def test_wrong_layout_in_card(model_path):
    with pytest.raises(ModelError, match=r"expects input shape \(N, 112, 112, 3\) \(NHWC\)"):
        OnnxEmbedder(make_card(model_path, layout="NHWC"), model_path, CPU)


def test_wrong_output_dim_in_card(model_path):
    with pytest.raises(ModelError, match=r"expects output shape \(N, 128\), "
                                         r"model output 'embedding' has shape \(N, 64\)"):
        OnnxEmbedder(make_card(model_path, output_dim=128), model_path, CPU)


def test_bad_chip_shape_and_dtype(embedder):
    with pytest.raises(ValueError, match=r"chips must have shape \(N, 112, 112, 3\), got \(2, 100, 100, 3\)"):
        embedder.embed(np.zeros((2, 100, 100, 3), np.uint8))
    with pytest.raises(ValueError, match="chips must have dtype uint8, got float32"):
        embedder.embed(np.zeros((2, 112, 112, 3), np.float32))


def test_builtin_cards_are_consistent():
    assert set(BUILTIN_CARDS) == {"arcface_w600k_r50", "arcface_glintr100", "vggface2_resnet50"}
    for card in BUILTIN_CARDS.values():
        assert TEMPLATES[card.template].size == card.input_size
        assert load_card(card.name) is card
    assert BUILTIN_CARDS["vggface2_resnet50"].sha256 is None
    assert all(BUILTIN_CARDS[n].sha256 and BUILTIN_CARDS[n].url for n in ("arcface_w600k_r50", "arcface_glintr100"))


def test_vggface2_template_lies_inside_its_chip():
    pts = VGGFACE2_224.points
    assert TEMPLATES["vggface2_224"] is VGGFACE2_224
    assert ((pts > 0) & (pts < 224)).all()
    assert pts[0, 0] < pts[1, 0] and abs(pts[0, 1] - pts[1, 1]) < 2  # level eyes, image-left first


def test_card_from_yaml_and_build_embedder(tmp_path, model_path):
    card_file = tmp_path / "tiny.yaml"
    card_file.write_text(yaml.safe_dump(make_card(model_path, name="tiny_yaml").model_dump(mode="json")))
    assert load_card(card_file).name == "tiny_yaml"
    cfg = load_config(environ={}, overrides={"runtime": {"providers": ["cpu"]}, "embedder": {
        "type": "onnx", "card": str(card_file), "path": str(model_path), "batch_size": 2}})
    built = build_embedder(cfg.embedder, cfg.runtime)
    assert built.name == "tiny_yaml" and built.embed(chips(3)).shape == (3, DIM)


def test_bad_cards_are_config_errors(tmp_path, model_path):
    with pytest.raises(ConfigError, match="unknown model card 'nope'"):
        load_card("nope")
    data = make_card(model_path).model_dump(mode="json")
    cases = {"extra.yaml": {**data, "colour": "RGB"}, "size.yaml": {**data, "input_size": 224},
             "std.yaml": {**data, "std": [1.0, 0.0, 1.0]}, "tpl.yaml": {**data, "template": "nope_112"}}
    messages = {"extra.yaml": "colour: Extra inputs are not permitted", "size.yaml": "makes 112x112 chips",
                "std.yaml": "std must be > 0", "tpl.yaml": "template 'nope_112' is not registered"}
    for name, content in cases.items():
        (tmp_path / name).write_text(yaml.safe_dump(content))
        with pytest.raises(ConfigError, match=messages[name]):
            load_card(tmp_path / name)
    with pytest.raises(ConfigError, match="not found"):
        load_card(tmp_path / "absent.yaml")
