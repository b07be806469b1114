import struct
import zlib

import cv2
import numpy as np
import pytest
import simplejpeg

from shared.errors import ImageError
from shared.images import ImageLimits, decode_image, exif_orientation, read_image

LIMITS = ImageLimits()


def png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
            + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)))


def jpeg_bytes(h=64, w=48) -> bytes:
    rng = np.random.default_rng(0)
    return simplejpeg.encode_jpeg(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), quality=90, colorspace="RGB")


def test_jpeg_and_png_decode_to_rgb():
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0] = 255  # red
    ok, png = cv2.imencode(".png", rgb[..., ::-1])
    out = decode_image(png.tobytes(), LIMITS)
    assert out.shape == (20, 30, 3) and out[0, 0].tolist() == [255, 0, 0]
    assert decode_image(jpeg_bytes(), LIMITS).shape == (64, 48, 3)


def test_truncated_jpeg_is_refused():
    data = jpeg_bytes(256, 256)
    with pytest.raises(ImageError, match="truncated"):
        decode_image(data[: len(data) // 2], LIMITS, "half.jpg")


def test_non_image_is_refused():
    with pytest.raises(ImageError, match="not an image"):
        decode_image(b"%PDF-1.4 this is not a photo" * 4, LIMITS)


def test_decompression_bomb_png_header_is_refused_before_decoding():
    with pytest.raises(ImageError, match="20000x20000"):
        decode_image(png_header_only(20000, 20000), LIMITS, "bomb.png")


def test_decompression_bomb_jpeg_header_is_refused():
    data = bytearray(jpeg_bytes(16, 16))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 20000, 20000)  # height, width in the SOF0 segment
    with pytest.raises(ImageError, match="decompression bomb"):
        decode_image(bytes(data), LIMITS)


def test_byte_limit(tmp_path):
    path = tmp_path / "big.jpg"
    path.write_bytes(jpeg_bytes())
    with pytest.raises(ImageError, match="exceeds the limit"):
        read_image(path, ImageLimits(max_bytes=1024))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "nope.jpg", LIMITS)
    with pytest.raises(ImageError, match="directory"):
        read_image(tmp_path, LIMITS)


def test_exif_rotation_is_applied():
    base = jpeg_bytes(40, 20)
    # APP1 Exif segment with IFD0 holding Orientation=6 (rotate 90 clockwise), little-endian TIFF
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0) + b"\0\0\0\0"
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(tiff)) + b"Exif\x00\x00" + tiff
    data = base[:2] + app1 + base[2:]
    assert exif_orientation(data) == 6
    assert decode_image(data, LIMITS).shape == (20, 40, 3)
