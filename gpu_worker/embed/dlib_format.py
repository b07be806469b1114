"""A reader of dlib's own binary serialisation of a DNN (``.dat`` files written by ``dlib::serialize(net)``), for
the layer types dlib's face recognition ResNet uses.

dlib's primitives: an integer is one control byte (low nibble: how many little-endian bytes follow; bit 7: the
value is negative) then those bytes; a float is two integers, mantissa and base-2 exponent; a string is its length
then its bytes; a bool is the character '0' or '1'; a tensor is version 2, four dimensions (samples, k, nr, nc) then
that many raw little-endian float32 values; an alias tensor (a view into a layer's parameters) is version 1 and four
dimensions.

A network: the loss layer (version, its details, then the rest); then one version integer per wrapper going down
(add_layer, tag and skip layers); then the input layer; then, from the input upwards, each add_layer's details
followed by its trailer (three bools and three empty tensors; the lowest layer also its sample expansion factor).
Tag and skip layers leave no details: where a residual block starts and ends is read off the details themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shared.errors import ModelError


@dataclass(frozen=True)
class InputLayer:
    mean_rgb: tuple[float, float, float]
    size: int


@dataclass(frozen=True)
class Conv:
    filters: np.ndarray  # (out, in, kh, kw)
    bias: np.ndarray  # (out,)
    stride: int
    padding: int


@dataclass(frozen=True)
class Affine:
    gamma: np.ndarray  # (channels,)
    beta: np.ndarray


@dataclass(frozen=True)
class Pool:
    kind: str  # "max" or "avg"
    size: int  # 0 = the whole input (avg_pool_everything)
    stride: int
    padding: int


@dataclass(frozen=True)
class Relu:
    pass


@dataclass(frozen=True)
class AddPrev:
    pass


@dataclass(frozen=True)
class FullyConnected:
    weights: np.ndarray  # (inputs, outputs): y = x @ weights
    bias: np.ndarray | None


Layer = Conv | Affine | Pool | Relu | AddPrev | FullyConnected


@dataclass
class DlibNet:
    loss: str
    input: InputLayer
    layers: list[Layer] = field(default_factory=list)  # from the input upwards


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ModelError(f"dlib model file truncated at byte {self.pos} (wanted {n} more)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size > 8:
            raise ModelError(f"dlib model file: bad integer control byte {control:#x} at byte {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        return 0.0 if mantissa == 0 else float(mantissa) * 2.0 ** exponent

    def string(self) -> str:
        n = self.int()
        if not 0 <= n <= 1024:
            raise ModelError(f"dlib model file: implausible string length {n} at byte {self.pos}")
        return self._take(n).decode("latin-1")

    def bool(self) -> bool:
        char = self._take(1)
        if char not in (b"0", b"1"):
            raise ModelError(f"dlib model file: expected a bool at byte {self.pos - 1}, got {char!r}")
        return char == b"1"

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise ModelError(f"dlib model file: tensor version {version} at byte {self.pos} (expected 2)")
        dims = [self.int() for _ in range(4)]
        count = int(np.prod(dims))
        return np.frombuffer(self._take(4 * count), "<f4").reshape(dims).copy()

    def alias(self) -> tuple[int, int, int, int]:
        version = self.int()
        if version != 1:
            raise ModelError(f"dlib model file: alias tensor version {version} at byte {self.pos} (expected 1)")
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]


def _conv(r: _Reader) -> Conv:
    params = r.tensor().reshape(-1)
    out, kh, kw, sy, sx, py, px = (r.int() for _ in range(7))
    filters, _biases = r.alias(), r.alias()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        r.float()
    if kh != kw or sy != sx or py != px:
        raise ModelError(f"dlib con_ with non-square settings ({kh}x{kw}, stride {sy}/{sx}) is not supported")
    n = int(np.prod(filters))
    return Conv(params[:n].reshape(filters), params[n:n + out].copy(), sy, py)


def _affine(r: _Reader) -> Affine:
    params = r.tensor().reshape(-1)
    gamma, _beta = r.alias(), r.alias()
    mode = r.int()
    if mode != 0:
        raise ModelError(f"dlib affine_ in mode {mode} (fully connected) is not supported")
    n = int(np.prod(gamma))
    return Affine(params[:n].copy(), params[n:2 * n].copy())


def _pool(r: _Reader, kind: str) -> Pool:
    nr, nc, sy, sx, py, px = (r.int() for _ in range(6))
    if nr != nc or sy != sx or py != px:
        raise ModelError(f"dlib {kind}_pool with non-square settings is not supported")
    return Pool(kind, nr, sy, py)


def _fc(r: _Reader) -> FullyConnected:
    outputs, inputs = r.int(), r.int()
    params = r.tensor().reshape(-1)
    r.alias()
    bias_shape = r.alias()
    bias_mode = r.int()
    for _ in range(4):
        r.float()
    weights = params[: inputs * outputs].reshape(inputs, outputs)
    bias = params[inputs * outputs: inputs * outputs + outputs].copy() if bias_mode == 0 and bias_shape[1] else None
    return FullyConnected(weights.copy(), bias)


_PARSERS = {
    "con_4": _conv, "affine_": _affine, "relu_": lambda r: Relu(), "add_prev_": lambda r: AddPrev(),
    "max_pool_2": lambda r: _pool(r, "max"), "avg_pool_2": lambda r: _pool(r, "avg"), "fc_2": _fc,
}


def read_dlib_net(data: bytes) -> DlibNet:
    """Parse a dlib DNN file into its layers (input first). ``ModelError`` on anything unexpected."""
    r = _Reader(data)
    if r.int() != 1:
        raise ModelError("not a dlib network file: expected loss layer version 1 at the start")
    loss = r.string()
    if loss != "loss_metric_2":
        raise ModelError(f"dlib loss layer {loss!r} is not supported (expected loss_metric_2)")
    r.float(), r.float()  # margin, distance threshold
    while True:  # the wrapper versions, top-down, until the input layer's name
        start = r.pos
        if r.data[start:start + 1] == b"\x01" and r.data[start + 2:start + 2 + 5] == b"input":
            break
        r.int()
    if r.string() != "input_rgb_image_sized":
        raise ModelError("dlib input layer is not input_rgb_image_sized")
    mean = (r.float(), r.float(), r.float())
    rows, cols = r.int(), r.int()
    net = DlibNet(loss, InputLayer(mean, rows))
    first = True
    while r.pos < len(r.data):
        name = r.string()
        parser = _PARSERS.get(name)
        if parser is None:
            raise ModelError(f"dlib layer {name!r} at byte {r.pos} is not supported")
        net.layers.append(parser(r))
        for _ in range(3):
            r.bool()
        for _ in range(3):
            r.tensor()
        if first:
            r.int()  # the lowest add_layer's sample expansion factor
            first = False
    if rows != cols:
        raise ModelError(f"dlib input size {rows}x{cols} is not square")
    return net
