"""Synthetic media for input tests: huge-but-tiny PNGs and truncated videos, built in little memory."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import av
import cv2
import numpy as np


def zero_png(path: Path, width: int, height: int) -> Path:
    """A black grayscale PNG of any size, built in little memory (rows are compressed as they are made)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    comp = zlib.compressobj(6)
    row = bytes(width + 1)  # PNG filter byte 0, then one zero byte per pixel
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def truncated_mp4(path: Path, frames: int = 40) -> tuple[Path, int]:
    """An mp4 whose header (moov first) promises `frames` frames but whose data stops halfway; and how many decode."""
    full = path.with_name(f"full_{path.name}")
    with av.open(str(full), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(frames):
            image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        container.mux(stream.encode())
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    full.unlink()
    cap = cv2.VideoCapture(str(path))
    decoded = 0
    while cap.read()[0]:
        decoded += 1
    cap.release()
    assert 0 < decoded < frames
    return path, decoded
