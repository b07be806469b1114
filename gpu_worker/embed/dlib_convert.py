"""dlib's face ResNet (a ``DlibNet`` read by ``dlib_format``) as an ONNX graph, exported once and cached.

The graph takes (N, 150, 150, 3) float32 RGB chips in 0..255 and returns dlib's 128-d descriptor (not normalised),
as ``compute_face_descriptor`` does. Each ``affine`` (dlib's frozen batch norm) is folded into the convolution
before it. Residual blocks are read off the layer sequence: a block starts at a convolution that follows a pooling
layer or the ReLU after an ``add_prev``; an average pooling inside a block applies to the block's input (dlib's
``skip1``), and ``add_prev`` adds the shortcut, zero-padding the smaller tensor (channels, rows, columns) at the
end as dlib's ``add_prev`` does when the two differ in size.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import platformdirs
from onnx import TensorProto, helper, numpy_helper

from gpu_worker.embed.dlib_format import AddPrev, Affine, Conv, DlibNet, FullyConnected, Pool, Relu, read_dlib_net
from shared.errors import ModelError
from shared.files import atomic_write

log = logging.getLogger(__name__)

OPSET = 17
IR_VERSION = 8  # what opset 17 needs; readable by every onnxruntime that runs opset 17
INPUT, OUTPUT = "chips", "descriptor"
CONVERTER_VERSION = "2"  # bump when the graph built from the same file changes


@dataclass
class _Value:
    name: str
    shape: tuple[int, int, int]  # (C, H, W)


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, stem: str, array: np.ndarray) -> str:
        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op: str, inputs: list[str], stem: str, **attrs) -> str:
        out = self.name(stem)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


def _pool_size(h: int, k: int, s: int, p: int) -> int:
    return 1 + (h + 2 * p - k) // s


def _conv(b: _Builder, x: _Value, conv: Conv, affine: Affine | None) -> _Value:
    w, bias = conv.filters, conv.bias
    if affine is not None:
        w = w * affine.gamma[:, None, None, None]
        bias = bias * affine.gamma + affine.beta
    k, p, s = w.shape[2], conv.padding, conv.stride
    out = b.op("Conv", [x.name, b.const("w", w.astype(np.float32)), b.const("b", bias.astype(np.float32))], "conv",
               kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p])
    return _Value(out, (w.shape[0], _pool_size(x.shape[1], k, s, p), _pool_size(x.shape[2], k, s, p)))


def _pool(b: _Builder, x: _Value, pool: Pool) -> _Value:
    if pool.size == 0:
        return _Value(b.op("GlobalAveragePool" if pool.kind == "avg" else "GlobalMaxPool", [x.name], "gpool"),
                      (x.shape[0], 1, 1))
    k, s, p = pool.size, pool.stride, pool.padding
    attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p])
    if pool.kind == "avg":
        attrs["count_include_pad"] = 0
    out = b.op("MaxPool" if pool.kind == "max" else "AveragePool", [x.name], f"{pool.kind}pool", **attrs)
    return _Value(out, (x.shape[0], _pool_size(x.shape[1], k, s, p), _pool_size(x.shape[2], k, s, p)))


def _pad_to(b: _Builder, x: _Value, shape: tuple[int, int, int]) -> str:
    extra = [t - s for t, s in zip(shape, x.shape)]
    if not any(extra):
        return x.name
    pads = np.array([0, 0, 0, 0, 0, *extra], np.int64)  # (N, C, H, W) begins, then ends
    return b.op("Pad", [x.name, b.const("pads", pads)], "pad", mode="constant")


def _add(b: _Builder, y: _Value, shortcut: _Value) -> _Value:
    shape = tuple(max(a, c) for a, c in zip(y.shape, shortcut.shape))
    return _Value(b.op("Add", [_pad_to(b, y, shape), _pad_to(b, shortcut, shape)], "add"), shape)  # type: ignore[arg-type]


def build_onnx(net: DlibNet) -> onnx.ModelProto:
    """The ONNX graph of ``net`` (see the module docstring)."""
    b = _Builder()
    size = net.input.size
    nchw = b.op("Transpose", [INPUT], "nchw", perm=[0, 3, 1, 2])
    mean = np.array(net.input.mean_rgb, np.float32).reshape(1, 3, 1, 1)
    x = _Value(b.op("Mul", [b.op("Sub", [nchw, b.const("mean", mean)], "centred"),
                            b.const("scale", np.array(1 / 256, np.float32))], "input"), (3, size, size))
    block_in, shortcut, block_may_start = x, None, True
    layers = net.layers
    i = 0
    while i < len(layers):
        layer = layers[i]
        if isinstance(layer, Conv):
            if block_may_start:
                block_in, shortcut, block_may_start = x, None, False
            affine = layers[i + 1] if i + 1 < len(layers) and isinstance(layers[i + 1], Affine) else None
            x = _conv(b, x, layer, affine)
            i += 2 if affine is not None else 1
            continue
        if isinstance(layer, Relu):
            x = _Value(b.op("Relu", [x.name], "relu"), x.shape)
            block_may_start = block_may_start or (i > 0 and isinstance(layers[i - 1], AddPrev))
        elif isinstance(layer, Pool) and layer.size != 0 and not block_may_start and layer.kind == "avg":
            shortcut = _pool(b, block_in, layer)  # dlib's skip1 + avg_pool: the block's input, downsampled
        elif isinstance(layer, Pool):
            x = _pool(b, x, layer)
            block_may_start = True
        elif isinstance(layer, AddPrev):
            x = _add(b, x, shortcut if shortcut is not None else block_in)
        elif isinstance(layer, FullyConnected):
            flat = b.op("Flatten", [x.name], "flat", axis=1)
            out = b.op("MatMul", [flat, b.const("fc", layer.weights.astype(np.float32))], "fc")
            if layer.bias is not None:
                out = b.op("Add", [out, b.const("fc_bias", layer.bias.astype(np.float32))], "fc_bias")
            x = _Value(out, (layer.weights.shape[1], 1, 1))
        else:
            raise ModelError(f"cannot convert dlib layer {type(layer).__name__}")
        i += 1
    b.nodes.append(helper.make_node("Identity", [x.name], [OUTPUT], name="output"))
    graph = helper.make_graph(
        b.nodes, "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", size, size, 3])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", x.shape[0]])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="argusnet.dlib_convert", ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model


def default_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("argusnet")) / "models"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cached_onnx(dat_path: str | os.PathLike[str], cache_dir: Path | None = None) -> bytes:
    """The ONNX bytes for a dlib ``.dat`` file: from the cache when present and intact, else converted (a few
    seconds) and written atomically with its sha256 beside it."""
    source = Path(dat_path).read_bytes()
    key = f"{Path(dat_path).stem}-{_sha256(source)[:16]}-v{CONVERTER_VERSION}"
    folder = cache_dir or default_cache_dir()
    model_path, sum_path = folder / f"{key}.onnx", folder / f"{key}.onnx.sha256"
    if model_path.is_file() and sum_path.is_file():
        data = model_path.read_bytes()
        if _sha256(data) == sum_path.read_text().strip():
            return data
        log.warning("cached model %s is corrupt (checksum mismatch): converting again", model_path)
    data = build_onnx(read_dlib_net(source)).SerializeToString()
    folder.mkdir(parents=True, exist_ok=True)
    for path, payload in ((model_path, data), (sum_path, _sha256(data).encode())):
        atomic_write(path, payload)
    log.info("converted %s to ONNX: %s", dat_path, model_path)
    return data
