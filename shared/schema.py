"""The base of every configuration section and the helpers every component's configuration shares.

Each component keeps its own sections beside its code (``gpu_worker/detect/config.py``, ``broker/config.py``,
``store/config.py``, ...); the composition root (`argusnet.config.ArgusConfig`) gathers them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, ValidationError

from shared.errors import ConfigError


class Section(BaseModel):
    """A configuration section: unknown keys are errors, values are immutable and defaults are validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def type_discriminator(default: str) -> Discriminator:
    """Discriminator that reads the ``type`` key and falls back to ``default`` when it is left out."""

    def pick(value: Any) -> str:
        if isinstance(value, Mapping):
            return str(value.get("type", default))
        return str(getattr(value, "type", default))

    return Discriminator(pick)


def _sections(cls: type[Section] = Section) -> Iterator[type[Section]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _sections(sub)


def union_tags() -> frozenset[str]:
    """The ``type`` values of every backend section (``retinaface``, ``dlib``, ``bytetrack``, ``local``, ...):
    pydantic puts them in the location of an error inside a discriminated union."""
    return frozenset(str(cls.model_fields["type"].default) for cls in _sections() if "type" in cls.model_fields)


def field_path(loc: tuple[Any, ...]) -> str:
    """Dotted field path without the union tags pydantic inserts (``detector.max_side``, not
    ``detector.retinaface.max_side``)."""
    tags = union_tags()
    parts = [str(p) for p in loc]
    return ".".join(p for i, p in enumerate(parts) if not (i > 0 and p in tags)) or "<root>"


MAX_SHOWN_VALUE = 120  # a longer value (a whole list of cameras) is cut: the message names the culprit itself


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_SHOWN_VALUE else text[:MAX_SHOWN_VALUE - 3] + "..."


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        path = field_path(tuple(e["loc"]))
        shown = "(missing)" if e["type"] == "missing" else _shown(e.get("input"))
        lines.append(f"  {path} = {shown}: {e['msg']}")
    return "\n".join(lines)


def read_yaml_mapping(path: Path, what: str, hint: str = "") -> dict[str, Any]:
    """The mapping a YAML file holds (empty for an empty file); ConfigError naming ``what`` (e.g. "camera file")
    when it is missing, unreadable, not YAML or not a mapping (``hint`` says what it should look like)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} not found: {path}") from exc
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a mapping{hint}, got {type(data).__name__}")
    return data
