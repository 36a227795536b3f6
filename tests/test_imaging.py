"""The one image convention on a real PETS camera frame: wire bytes, resizing, colour order and tensors round-trip."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from silhouette.errors import SilhouetteError
from silhouette.imaging import (
    DEFAULT_SIZE, ImageError, as_bgr, batch_to_bgr, bgr_batch, bgr_batch_to_tensor, bgr_to_chw, bgr_to_tensor,
    decode_frame, encode_frame, probe_frame, resize_frame, tensor_to_bgr, tensor_to_rgb,
)


@pytest.fixture(scope="module")
def camera_frame(shared: Path) -> np.ndarray:
    """The first frame of the PETS 2009 S2L1 video at its native 768x576, as the camera decodes it."""
    from silhouette.data.sources import iter_frames

    return next(iter_frames(shared / "data" / "pets2009" / "vtest.avi")).image


def test_camera_frame_is_the_convention(camera_frame: np.ndarray) -> None:
    assert camera_frame.dtype == np.uint8 and camera_frame.shape == (576, 768, 3) and camera_frame.flags.c_contiguous


def test_png_wire_bytes_decode_to_the_same_frame_exactly(camera_frame: np.ndarray) -> None:
    data = encode_frame(camera_frame, "png")
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert probe_frame(data) == (768, 576)
    back = decode_frame(data)
    assert back.dtype == np.uint8 and back.shape == camera_frame.shape
    assert np.array_equal(back, camera_frame)  # BGR in, BGR out: the service sees what the camera sent


def test_jpeg_wire_bytes_decode_close_to_the_frame_in_bgr_order(camera_frame: np.ndarray) -> None:
    data = encode_frame(camera_frame, "jpg", quality=90)
    assert data[:2] == b"\xff\xd8" and len(data) < len(encode_frame(camera_frame, "png")) / 3
    back = decode_frame(data).astype(np.int16)
    err = np.abs(back - camera_frame.astype(np.int16))
    assert err.mean() < 2.5 and np.percentile(err, 99) < 16
    # the same bytes through OpenCV's own decoder (the camera's order): a channel swap would differ by tens of levels
    cv_back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).astype(np.int16)
    assert np.abs(back - cv_back).mean() < 1.0
    assert np.abs(back[:, :, ::-1] - cv_back).mean() > 3.0


def test_encode_refuses_an_unknown_format_in_one_line(camera_frame: np.ndarray) -> None:
    with pytest.raises(SilhouetteError, match=r"^--format 'gif': choose png or jpg$"):
        encode_frame(camera_frame, "gif")


def test_decode_checks_format_and_pixels_from_the_header(camera_frame: np.ndarray) -> None:
    data = encode_frame(camera_frame, "png")
    with pytest.raises(ImageError) as exc:
        probe_frame(data, max_pixels=768 * 576 - 1)
    assert exc.value.status == 413 and "768x576" in exc.value.message
    gif = io.BytesIO()
    from PIL import Image

    Image.fromarray(camera_frame[:16, :16, ::-1]).save(gif, format="GIF")
    with pytest.raises(ImageError) as exc:
        decode_frame(gif.getvalue())
    assert exc.value.status == 415
    with pytest.raises(ImageError) as exc:
        decode_frame(data[: len(data) // 2])
    assert exc.value.status == 422 and "\n" not in exc.value.message


def test_resize_keeps_dtype_and_gives_the_model_size(camera_frame: np.ndarray) -> None:
    small = resize_frame(camera_frame, DEFAULT_SIZE)
    assert small.dtype == np.uint8 and small.shape == (200, 320, 3)
    assert np.array_equal(small, cv2.resize(camera_frame, (320, 200), interpolation=cv2.INTER_AREA))
    assert resize_frame(small, (320, 200)) is small  # already the size: no work, no copy
    # area averaging keeps the picture: the mean colour moves by well under one level
    assert np.abs(small.mean(axis=(0, 1)) - camera_frame.mean(axis=(0, 1))).max() < 1.0


def test_grey_and_bgra_frames_become_bgr(camera_frame: np.ndarray) -> None:
    grey = cv2.cvtColor(camera_frame, cv2.COLOR_BGR2GRAY)
    assert np.array_equal(as_bgr(grey, "cam"), np.repeat(grey[:, :, None], 3, axis=2))
    bgra = cv2.cvtColor(camera_frame, cv2.COLOR_BGR2BGRA)
    assert np.array_equal(as_bgr(bgra, "cam"), camera_frame)
    with pytest.raises(SilhouetteError, match=r"^cam: decoded frames have dtype uint16; only 8-bit"):
        as_bgr(camera_frame.astype(np.uint16), "cam")


def test_bgr_tensor_round_trip_is_exact_and_rgb_ordered(camera_frame: np.ndarray) -> None:
    t = bgr_to_tensor(camera_frame)
    assert t.dtype == torch.float32 and t.shape == (3, 576, 768) and 0.0 <= t.min() and t.max() <= 1.0
    assert torch.equal(t[0], torch.from_numpy(camera_frame[:, :, 2].copy()).float() / 255.0)  # channel 0 is red
    assert np.array_equal(tensor_to_bgr(t), camera_frame)
    assert np.array_equal(tensor_to_rgb(t), camera_frame[:, :, ::-1])
    # the camera's torch-free twins agree with the tensor helpers bit for bit
    assert np.array_equal(bgr_to_chw(camera_frame), t.numpy())
    assert np.array_equal(batch_to_bgr(bgr_batch([camera_frame]))[0], camera_frame)


def test_decoded_uploads_batch_like_camera_frames(camera_frame: np.ndarray) -> None:
    small = resize_frame(camera_frame, (320, 200))
    decoded = decode_frame(encode_frame(small, "png"))
    one, two = bgr_batch_to_tensor([decoded]), bgr_batch_to_tensor([decoded, small])
    assert one.shape == (1, 3, 200, 320) and two.shape == (2, 3, 200, 320)
    assert torch.equal(one[0], bgr_to_tensor(small)) and torch.equal(two[0], two[1])


def test_tensor_helpers_refuse_other_layouts_in_one_line(camera_frame: np.ndarray) -> None:
    with pytest.raises(SilhouetteError, match=r"expected an HxWx3 uint8 BGR image, got dtype float32"):
        bgr_to_tensor(camera_frame.astype(np.float32))
    with pytest.raises(SilhouetteError, match="at least one frame"):
        bgr_batch_to_tensor([])
    with pytest.raises(SilhouetteError, match="divide uint8 images by 255"):
        tensor_to_bgr(torch.zeros(3, 4, 4, dtype=torch.uint8))
