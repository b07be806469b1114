"""Error types shared by every ArgusNet component.

Each error carries the process exit code the CLI uses for it: 2 for bad input (a photo, an argument, a
config value, a gallery directory, a store server that cannot be reached), 1 for anything else.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


class ArgusError(Exception):
    """Base class of every error ArgusNet raises on purpose."""

    exit_code = EXIT_FAILURE


class InputError(ArgusError):
    """Input a user gave us is unusable: the message says which input and why."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(InputError):
    """A configuration value is invalid; the message names the field and the bad value."""


class ImageError(InputError):
    """An image could not be read: not an image, truncated, too large, unsupported format."""


class FaceQualityError(InputError):
    """A photo was refused by the enrolment quality gate (no face, two faces, too small, blurred, turned)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class GalleryError(InputError):
    """A gallery directory is missing, belongs to another model, or a person is unknown."""


class NameRuleError(GalleryError):
    """A person's name breaks the name rule (`shared.names`): the message says which character or part and why."""


class GalleryMissingError(GalleryError):
    """There is no gallery (store) where one was named: nobody was enrolled there yet."""


class GalleryExistsError(GalleryError):
    """A gallery cannot be created where a non-empty directory (perhaps one another process just created) is."""


class StoreError(ArgusError):
    """A store backend failed an operation (a locked or corrupt database, a full disk, a dead server)."""


class StoreUnavailableError(StoreError):
    """The store's server cannot be reached: refused, timed out, or gone mid-command. The message names its URL
    (without a password). A worker buffers its writes and goes on recognising from its replica (`store.buffered`);
    a CLI command exits with EXIT_BAD_INPUT (the configured store is not there)."""

    exit_code = EXIT_BAD_INPUT


class StoreFaultError(StoreUnavailableError):
    """The store's disk or server failed in a way that passes: a full disk (ENOSPC, EDQUOT, SQLite "database or disk
    is full"), a read-only file system (EROFS), an I/O error (EIO), a database locked for too long. A worker treats it
    as an unavailable store (`store.buffered`: writes wait, bounded, and are retried); a CLI command exits 1."""

    exit_code = EXIT_FAILURE


class ModelError(ArgusError):
    """A model file is missing, has the wrong checksum, or does not match its model card."""


class ProtocolError(ArgusError):
    """A wire message failed strict decoding. ``reason`` is a short metric label, ``field`` the culprit."""

    def __init__(self, reason: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field
