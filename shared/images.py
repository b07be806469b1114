"""Safe image reading: the format is sniffed and the size read from the header before any pixel is decoded,
so a decompression bomb, a truncated JPEG or a file that is not an image is refused with a clear ``ImageError``."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import simplejpeg
from pydantic import Field

from shared.errors import ImageError
from shared.schema import Section


class ImageLimits(Section):
    max_pixels: int = Field(default=50_000_000, ge=1, le=1_000_000_000,
                            description="Refuse images larger than this many pixels (decompression bombs).")
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, le=2**31,
                           description="Refuse image files larger than this many bytes.")


EXIF_ROTATIONS = {3: cv2.ROTATE_180, 6: cv2.ROTATE_90_CLOCKWISE, 8: cv2.ROTATE_90_COUNTERCLOCKWISE}


def sniff_format(data: bytes) -> str | None:
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def header_size(data: bytes, fmt: str) -> tuple[int, int]:
    """(width, height) from the file header, without decoding pixels."""
    try:
        if fmt == "jpeg":
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            return int(width), int(height)
        if fmt == "png":
            if data[12:16] != b"IHDR":
                raise ValueError("PNG without IHDR chunk")
            return struct.unpack(">II", data[16:24])
        if fmt == "bmp":
            width, height = struct.unpack("<ii", data[18:26])
            return abs(width), abs(height)
        return _webp_size(data)
    except (ValueError, struct.error) as exc:
        raise ImageError(f"corrupt {fmt.upper()} header: {exc}") from exc


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    raise ValueError(f"unknown WebP chunk {chunk!r}")


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag of a JPEG (1 when absent or unreadable)."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker, length = data[pos + 1], struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if marker == 0xE1 and data[pos + 4:pos + 10] == b"Exif\x00\x00":
            return _tiff_orientation(data[pos + 10:pos + 2 + length])
        if marker in (0xDA, 0xD9):
            break
        pos += 2 + length
    return 1


def _tiff_orientation(tiff: bytes) -> int:
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 1
    order = "<" if tiff[:2] == b"II" else ">"
    ifd = struct.unpack(order + "I", tiff[4:8])[0]
    if ifd + 2 > len(tiff):
        return 1
    count = struct.unpack(order + "H", tiff[ifd:ifd + 2])[0]
    for i in range(count):
        entry = tiff[ifd + 2 + 12 * i: ifd + 14 + 12 * i]
        if len(entry) < 12:
            break
        tag, _, _ = struct.unpack(order + "HHI", entry[:8])
        if tag == 0x0112:
            return struct.unpack(order + "H", entry[8:10])[0]
    return 1


def decode_image(data: bytes, limits: ImageLimits, name: str = "image") -> np.ndarray:
    """Decode bytes into an (H, W, 3) uint8 RGB array, or raise ``ImageError`` saying why not."""
    if len(data) > limits.max_bytes:
        raise ImageError(f"{name}: {len(data)} bytes exceeds the limit of {limits.max_bytes} bytes")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageError(f"{name}: not an image (expected JPEG, PNG, BMP or WebP)")
    width, height = header_size(data, fmt)
    if width <= 0 or height <= 0:
        raise ImageError(f"{name}: invalid image size {width}x{height}")
    if width * height > limits.max_pixels:
        raise ImageError(f"{name}: {width}x{height} = {width * height} pixels exceeds the limit of "
                         f"{limits.max_pixels} (images.max_pixels); refusing to decode (decompression bomb guard)")
    image = _decode_jpeg(data, name) if fmt == "jpeg" else _decode_other(data, fmt, name)
    if image.shape[0] != height or image.shape[1] != width:
        if not (fmt == "jpeg" and image.shape[:2] == (width, height)):
            raise ImageError(f"{name}: decoded size {image.shape[1]}x{image.shape[0]} differs from header {width}x{height}")
    return image


def _decode_jpeg(data: bytes, name: str) -> np.ndarray:
    try:
        image = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
    except ValueError as exc:
        raise ImageError(f"{name}: corrupt or truncated JPEG: {exc}") from exc
    rotation = EXIF_ROTATIONS.get(exif_orientation(data))
    return np.ascontiguousarray(cv2.rotate(image, rotation) if rotation is not None else image)


def _decode_other(data: bytes, fmt: str, name: str) -> np.ndarray:
    if fmt == "png" and b"IEND" not in data[-16:]:
        raise ImageError(f"{name}: truncated PNG (no IEND chunk)")
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise ImageError(f"{name}: corrupt {fmt.upper()} data")
    return np.ascontiguousarray(decoded[..., ::-1])


def read_image(path: str | Path, limits: ImageLimits) -> np.ndarray:
    """Read and decode an image file (see ``decode_image``); a missing or unreadable file is an ``ImageError``."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > limits.max_bytes:
            raise ImageError(f"{p}: {size} bytes exceeds the limit of {limits.max_bytes} bytes")
        data = p.read_bytes()
    except FileNotFoundError as exc:
        raise ImageError(f"{p}: no such file") from exc
    except IsADirectoryError as exc:
        raise ImageError(f"{p}: is a directory, not an image") from exc
    except OSError as exc:
        raise ImageError(f"{p}: cannot read: {exc}") from exc
    return decode_image(data, limits, str(p))
