"""The base of every configuration section (kept apart from shared.config so component configs, e.g.
tracker/config.py, can build on it without importing the whole schema)."""

from __future__ import annotations

from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Discriminator


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
