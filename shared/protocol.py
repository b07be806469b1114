"""The versioned msgpack wire protocol spoken between ArgusNet processes.

Three message types travel on the wire: ``Frame`` (camera -> broker -> worker), ``TrackEvent`` (worker -> broker
-> dashboard / JSONL) and ``Heartbeat`` (every process, with its credits). Each is a frozen, slotted dataclass. On
the wire a message is one msgpack map ``{"v": SCHEMA_VERSION, "t": <type tag>, ...fields}``; bytes travel as bin,
tuples as arrays and ``None`` as nil. Every field must be present (optional fields as nil); unknown fields are
refused, so adding a field means a new SCHEMA_VERSION.

Validation lives in one place: a table of field specs per type (``_SCHEMAS``). Constructors run it, so a message
that exists is valid, whether built in code or decoded. The decoder is generic: it checks size, msgpack syntax,
version, type tag and the field set, then builds the dataclass.

Both constructors and the decoder raise ``shared.errors.ProtocolError(reason, message, field)``; ``reason`` is one
of ``REASONS`` (a metric label set) and the message names the field and what was expected versus what was got.
Constructors normalise what they accept: ints become floats in float fields, lists become tuples, numpy scalars
become Python scalars.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, NoReturn, TypeVar

import msgpack
import numpy as np
from pydantic import Field

from shared.errors import ProtocolError
from shared.ids import ID_RULE, is_valid_id
from shared.schema import Section


class ProtocolConfig(Section):
    max_message_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=2**30,
                                   description="Wire messages larger than this are refused before decoding.")


# 1: Frame, FaceBatch, TrackEvent, Heartbeat. 2: TrackEvent.merged_visitor added, FaceBatch removed.
# 3: TrackEvent.worker and TrackEvent.epoch added. 4: TrackEvent.votes added.
SCHEMA_VERSION = 5

REASONS = (
    "oversize",         # payload longer than max_bytes (checked before unpacking)
    "malformed",        # not msgpack, trailing bytes, over a msgpack length limit, or not a map
    "version",          # schema version "v" missing or not SCHEMA_VERSION
    "unknown_type",     # type tag "t" is not one of the known tags
    "unexpected_type",  # decode_as: a valid message of another type
    "missing_field",    # a field of the type (or "t") is absent
    "extra_field",      # a key that is not a field of the type
    "bad_type",         # a field has the wrong wire type (bool is not an int; an int is a float)
    "bad_value",        # a field is out of range, non-finite or inconsistent with another field
)

EVENT_TYPES = ("track_started", "track_identified", "track_ended")
ROLES = ("broker", "worker", "camera")
# camera ids, heartbeat senders: shared.ids.ID_RULE
MAX_TEXT_LEN = 256         # person and visitor names: 1..256 printable chars
MAX_IMAGE_SIDE = 16384     # frame width / height limit, in pixels
MAX_CAMERAS = 1024         # cameras listed in one Heartbeat
MAX_VOTES = 2**31 - 1      # TrackEvent.votes
MAX_CREDITS = 2**31 - 1
MAX_SEQ = 2**63 - 1

# msgpack limits: no string of ours exceeds MAX_TEXT_LEN chars (<= 4 bytes each); arrays are boxes and camera
# lists; maps are messages (<= 16 keys). Bins are bounded by the payload size.
_MAX_STR_BYTES = 4 * MAX_TEXT_LEN
_MAX_ARRAY_LEN = MAX_CAMERAS
_MAX_MAP_LEN = 32

Check = Callable[[str, Any], Any]


# ---------------------------------------------------------------------------------------------------- field checks
def _show(value: Any) -> str:
    """Short description of a value for error messages (never the whole of a large payload)."""
    if isinstance(value, (bytes, bytearray)):
        return f"{type(value).__name__} of length {len(value)}"
    if isinstance(value, np.ndarray):
        return f"{value.dtype.name} array of shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple, dict)) and len(value) > 8:
        return f"{type(value).__name__} of length {len(value)}"
    text = repr(value[:80] if isinstance(value, str) else value)
    return f"{type(value).__name__} {text[:100]}"


def _fail(reason: str, field: str, expected: str, value: Any) -> NoReturn:
    raise ProtocolError(reason, f"field {field!r}: expected {expected}, got {_show(value)}", field)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _number(field: str, value: Any, expected: str) -> float:
    """``value`` as a finite float (ints accepted, bools not) or a ProtocolError naming ``expected``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        _fail("bad_type", field, expected, value)
    try:
        out = float(value)
    except OverflowError as exc:
        raise ProtocolError("bad_value", f"field {field!r}: expected {expected}, got {_show(value)}", field) from exc
    if not math.isfinite(out):
        _fail("bad_value", field, expected, value)
    return out


def _int(lo: int, hi: int) -> Check:
    def check(field: str, value: Any) -> int:
        if not _is_int(value):
            _fail("bad_type", field, "an integer", value)
        if not lo <= value <= hi:
            _fail("bad_value", field, f"an integer in [{lo}, {hi}]", value)
        return int(value)
    return check


def _float(lo: float = -math.inf) -> Check:
    expected = "a finite number" + ("" if lo == -math.inf else f" >= {lo}")

    def check(field: str, value: Any) -> float:
        out = _number(field, value, expected)
        if out < lo:
            _fail("bad_value", field, expected, value)
        return out
    return check


def _ident(field: str, value: Any) -> str:
    if not isinstance(value, str):
        _fail("bad_type", field, "a string", value)
    if not is_valid_id(value):
        _fail("bad_value", field, ID_RULE, value)
    return str(value)


def _text(field: str, value: Any) -> str:
    if not isinstance(value, str):
        _fail("bad_type", field, "a string", value)
    if not 1 <= len(value) <= MAX_TEXT_LEN or not value.isprintable():
        _fail("bad_value", field, f"1..{MAX_TEXT_LEN} printable characters", value)
    return str(value)


def _choice(options: tuple[str, ...]) -> Check:
    def check(field: str, value: Any) -> str:
        if not isinstance(value, str):
            _fail("bad_type", field, "a string", value)
        if value not in options:
            _fail("bad_value", field, f"one of {', '.join(options)}", value)
        return str(value)
    return check


def _jpeg(field: str, value: Any) -> bytes:
    if not isinstance(value, bytes):
        _fail("bad_type", field, "bytes (msgpack bin)", value)
    if not value:
        _fail("bad_value", field, "non-empty bytes", value)
    return bytes(value)


def _bool(field: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        _fail("bad_type", field, "a boolean", value)
    return bool(value)


def _optional(inner: Check) -> Check:
    def check(field: str, value: Any) -> Any:
        return None if value is None else inner(field, value)
    return check


def _box(field: str, value: Any) -> tuple[float, float, float, float]:
    if not isinstance(value, (list, tuple)):
        _fail("bad_type", field, "a sequence of 4 numbers", value)
    if len(value) != 4:
        _fail("bad_value", field, "a sequence of 4 numbers", value)
    x1, y1, x2, y2 = (_number(field, v, "4 finite numbers") for v in value)
    return (x1, y1, x2, y2)


def _idents(field: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        _fail("bad_type", field, "a sequence of camera ids", value)
    if len(value) > MAX_CAMERAS:
        _fail("bad_value", field, f"at most {MAX_CAMERAS} camera ids", value)
    out = tuple(_ident(field, v) for v in value)
    if len(set(out)) != len(out):
        _fail("bad_value", field, "distinct camera ids", value)
    return out


@dataclass(frozen=True, slots=True)
class _Field:
    """One field of a message type: its name and the check that validates and normalises it."""

    name: str
    check: Check


# ---------------------------------------------------------------------------------------------------- message types
@dataclass(frozen=True, slots=True)
class Frame:
    """One JPEG-encoded camera frame.

    camera_id: camera that took it (shared.ids.ID_RULE); seq: per-camera frame counter (0..2**63-1);
    capture_ts: when the image was captured (unix seconds, finite); send_ts: when the camera node sent it (unix
    seconds, finite); width, height: image size in pixels (1..16384); jpeg: the JPEG bytes (non-empty).
    """

    camera_id: str
    seq: int
    capture_ts: float
    send_ts: float
    width: int
    height: int
    jpeg: bytes

    def __post_init__(self) -> None:
        _validate(self)


@dataclass(frozen=True, slots=True)
class TrackEvent:
    """A change in a face track, as the tracker reports it.

    type: one of EVENT_TYPES; camera: camera id; track: track id (0..2**63-1, unique per camera across the worker's sessions and restarts); name: person or
    provisional visitor id, None while unknown (required for "track_identified" and when visitor is True);
    similarity: cosine similarity to the named person (finite) or None; margin: lead of that similarity over the
    best other person (finite) or None; ts: when the event was emitted (unix s); capture_ts: capture time of the
    frame that caused it (unix s); box: last face box (x1, y1, x2, y2) or None; time_to_name_ms: from the track's
    first frame to its naming (>= 0) or None; duration_s: track length so far (>= 0) or None; visitor: True when
    ``name`` is a provisional visitor id rather than an enrolled person; merged_visitor: the visitor id
    (visitor-N) this track was before it was recognised as the enrolled person in ``name``, only on
    "track_identified" events (with visitor False), else None; worker: the id of the worker that tracked it;
    epoch: that worker's tracking session of the camera (a new, larger number each time it starts serving it: when
    it first serves it, after the camera moved away and back, after the worker was paused long enough to be
    declared dead and dropped what it held, and after a restart of the worker; never one an earlier session or run
    used), so a consumer can tell a new session's tracks from an old one's;
    votes: on a "track_identified" event naming an enrolled person, how many of the track's faces voted for that
    name (why it was named, with ``similarity``: its template's similarity, and ``margin``: its lead), else None.
    """

    type: str
    camera: str
    track: int
    name: str | None
    similarity: float | None
    margin: float | None
    ts: float
    capture_ts: float
    box: tuple[float, float, float, float] | None
    time_to_name_ms: float | None
    duration_s: float | None
    visitor: bool
    merged_visitor: str | None = None
    worker: str | None = None
    epoch: int | None = None
    votes: int | None = None

    def __post_init__(self) -> None:
        _validate(self)

    def to_json_dict(self) -> dict[str, Any]:
        """A plain dict for one JSONL line: keys are exactly the field names, ``box`` is a list or None."""
        out = {f.name: getattr(self, f.name) for f in _SCHEMAS[TrackEvent]}
        out["box"] = None if self.box is None else list(self.box)
        return out


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A liveness and flow-control beacon.

    sender: process id (shared.ids.ID_RULE); role: one of ROLES; seq: the sender's heartbeat counter
    (0..2**63-1); ts: when it was sent (unix s); credits: frames the sender can take now (0..2**31-1); cameras:
    distinct camera ids (at most MAX_CAMERAS, may be empty): from a broker to a worker, the cameras it assigned to
    that worker; from a worker, the cameras it served lately (processed frames of in the last few seconds, nothing
    from before a pause that got it declared dead: gpu_worker.served), which every broker prefers it for when it
    assigns one of them (broker.routing); a camera sends none (unused). tracking (schema 5): from a worker, the
    cameras it holds a live track of now (a subset of the ids it serves, at most MAX_CAMERAS): a broker never moves
    one of those to another worker when rebalancing (a walk would become two tracks); empty from others.
    """

    sender: str
    role: str
    seq: int
    ts: float
    credits: int
    cameras: tuple[str, ...]
    tracking: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _validate(self)


Message = Frame | TrackEvent | Heartbeat
M = TypeVar("M", Frame, TrackEvent, Heartbeat)

_SEQ = _int(0, MAX_SEQ)
_SIDE = _int(1, MAX_IMAGE_SIDE)
_TS = _float()
_SCHEMAS: dict[type, tuple[_Field, ...]] = {
    Frame: (_Field("camera_id", _ident), _Field("seq", _SEQ), _Field("capture_ts", _TS), _Field("send_ts", _TS),
            _Field("width", _SIDE), _Field("height", _SIDE), _Field("jpeg", _jpeg)),
    TrackEvent: (_Field("type", _choice(EVENT_TYPES)), _Field("camera", _ident), _Field("track", _SEQ),
                 _Field("name", _optional(_text)), _Field("similarity", _optional(_TS)),
                 _Field("margin", _optional(_TS)), _Field("ts", _TS), _Field("capture_ts", _TS),
                 _Field("box", _optional(_box)), _Field("time_to_name_ms", _optional(_float(0.0))),
                 _Field("duration_s", _optional(_float(0.0))), _Field("visitor", _bool),
                 _Field("merged_visitor", _optional(_text)), _Field("worker", _optional(_ident)),
                 _Field("epoch", _optional(_SEQ)), _Field("votes", _optional(_int(1, MAX_VOTES)))),
    Heartbeat: (_Field("sender", _ident), _Field("role", _choice(ROLES)), _Field("seq", _SEQ), _Field("ts", _TS),
                _Field("credits", _int(0, MAX_CREDITS)), _Field("cameras", _idents), _Field("tracking", _idents)),
}
_TAGS: dict[type, str] = {Frame: "frame", TrackEvent: "track_event", Heartbeat: "heartbeat"}
_BY_TAG: dict[str, type] = {tag: cls for cls, tag in _TAGS.items()}


# ---------------------------------------------------------------------------------------------------- validation
def _validate(msg: Any) -> None:
    """Check and normalise every field of ``msg`` in place, then the rules that tie fields together."""
    for spec in _SCHEMAS[type(msg)]:
        object.__setattr__(msg, spec.name, spec.check(spec.name, getattr(msg, spec.name)))
    if isinstance(msg, TrackEvent):
        _check_track_event(msg)


def _check_track_event(msg: TrackEvent) -> None:
    if msg.name is None and msg.visitor:
        _fail("bad_value", "visitor", "False when name is None", msg.visitor)
    if msg.name is None and msg.type == "track_identified":
        _fail("bad_value", "name", "a name in a track_identified event", msg.name)
    if msg.merged_visitor is not None:  # a track_identified event always has a name (checked above)
        if msg.type != "track_identified":
            _fail("bad_value", "merged_visitor", "None unless the event is track_identified", msg.merged_visitor)
        if msg.visitor:
            _fail("bad_value", "merged_visitor", "None when visitor is True", msg.merged_visitor)


# ---------------------------------------------------------------------------------------------------- codec
def encode(msg: Message) -> bytes:
    """The msgpack bytes of ``msg`` (a Frame, TrackEvent or Heartbeat)."""
    cls = type(msg)
    if cls not in _TAGS:
        raise TypeError(f"encode() takes a Frame, TrackEvent or Heartbeat, got {cls.__name__}")
    body: dict[str, Any] = {"v": SCHEMA_VERSION, "t": _TAGS[cls]}
    for spec in _SCHEMAS[cls]:
        body[spec.name] = getattr(msg, spec.name)
    return msgpack.packb(body, use_bin_type=True)


def _unpack(data: bytes | bytearray | memoryview, max_bytes: int) -> dict[Any, Any]:
    """Size check, then strict msgpack unpacking of one map."""
    if not _is_int(max_bytes) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode() takes bytes, got {type(data).__name__}")
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    if size > max_bytes:
        raise ProtocolError("oversize", f"message is {size} bytes, the limit is {max_bytes}")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, max_str_len=_MAX_STR_BYTES,
                              max_bin_len=size, max_array_len=_MAX_ARRAY_LEN, max_map_len=_MAX_MAP_LEN,
                              max_ext_len=0)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ProtocolError("malformed", f"message is not one valid msgpack value: {exc}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError("malformed", f"message must be a msgpack map, got {type(obj).__name__}")
    return obj


def _message_class(obj: dict[Any, Any]) -> type:
    """The message type named by the envelope, after checking the schema version."""
    if "v" not in obj:
        raise ProtocolError("version", f"field 'v': expected schema version {SCHEMA_VERSION}, got nothing", "v")
    if not _is_int(obj["v"]) or obj["v"] != SCHEMA_VERSION:
        _fail("version", "v", f"schema version {SCHEMA_VERSION}", obj["v"])
    if "t" not in obj:
        raise ProtocolError("missing_field", "field 't': expected a message type tag, got nothing", "t")
    cls = _BY_TAG.get(obj["t"]) if isinstance(obj["t"], str) else None
    if cls is None:
        _fail("unknown_type", "t", f"one of {', '.join(_BY_TAG)}", obj["t"])
    return cls


def _fields_from_wire(cls: type, obj: dict[Any, Any]) -> dict[str, Any]:
    """Constructor arguments for ``cls`` from an unpacked map: exactly the schema's fields."""
    specs = _SCHEMAS[cls]
    known = {spec.name for spec in specs} | {"v", "t"}
    for key in obj:
        if key not in known:
            raise ProtocolError("extra_field", f"field {str(key)[:64]!r} is not part of a {_TAGS[cls]!r} "
                                f"message (schema version {SCHEMA_VERSION})", str(key)[:64])
    kwargs: dict[str, Any] = {}
    for spec in specs:
        if spec.name not in obj:
            raise ProtocolError("missing_field", f"field {spec.name!r} of a {_TAGS[cls]!r} message: expected a "
                                "value, got nothing", spec.name)
        kwargs[spec.name] = obj[spec.name]
    return kwargs


def _decode(data: bytes | bytearray | memoryview, max_bytes: int, expected: type | None) -> Any:
    obj = _unpack(data, max_bytes)
    cls = _message_class(obj)
    if expected is not None and cls is not expected:
        raise ProtocolError("unexpected_type", f"field 't': expected {_TAGS[expected]!r}, got {_TAGS[cls]!r}", "t")
    return cls(**_fields_from_wire(cls, obj))


def decode(data: bytes | bytearray | memoryview, max_bytes: int) -> Message:
    """Strictly decode one message of any type; raise ProtocolError (see REASONS) for anything invalid.

    ``max_bytes`` (e.g. ``ProtocolConfig.max_message_bytes``) is checked before anything is unpacked.
    """
    return _decode(data, max_bytes, None)


def decode_as(cls: type[M], data: bytes | bytearray | memoryview, max_bytes: int) -> M:
    """Like ``decode`` but the message must be a ``cls``; a valid message of another type raises ProtocolError
    with reason "unexpected_type"."""
    if cls not in _TAGS:
        raise TypeError(f"decode_as() takes Frame, TrackEvent or Heartbeat, got {cls!r}")
    return _decode(data, max_bytes, cls)  # type: ignore[no-any-return]
