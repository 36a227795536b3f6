"""The threaded, batched `obfuscate_source` pipeline: same frames as batch 1, errors surface, no partial outputs, no leaked threads."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from silhouette.cli import main
from silhouette.errors import SilhouetteError

pytestmark = pytest.mark.timeout(120)  # a pipeline that hangs must fail, not block the suite


def _pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("silhouette-obfuscate-")]


@pytest.fixture(scope="module")
def frame_folder(tmp_path_factory: pytest.TempPathFactory, testdata_bgr: list[np.ndarray], camera_frames: list[np.ndarray]) -> Path:
    """Seven PETS frames as PNGs: four full-size camera frames and the three 320x200 test frames."""
    folder = tmp_path_factory.mktemp("frames")
    for i, img in enumerate([*camera_frames, *testdata_bgr]):
        cv2.imwrite(str(folder / f"pets_{i}.png"), img)
    return folder


@pytest.fixture(scope="module")
def runner(onnx_path: Path):  # noqa: ANN201 - OnnxRunner
    from silhouette.edge.runtime import OnnxRunner

    return OnnxRunner(onnx_path, threads=2)


@pytest.mark.parametrize("batch", [3, 4])
def test_batched_folder_output_is_bit_identical_to_batch_1(frame_folder: Path, runner, tmp_path: Path, batch: int) -> None:
    from silhouette.edge.pipeline import obfuscate_source

    seen: list[int] = []
    ref = obfuscate_source(frame_folder, runner, tmp_path / "b1", progress=False, batch=1)
    got = obfuscate_source(frame_folder, runner, tmp_path / f"b{batch}", progress=False, batch=batch, on_frame=lambda i, _: seen.append(i))
    assert ref.frames == got.frames == 7 and seen == list(range(7))  # on_frame in frame order, partial last batch included
    names = sorted(p.name for p in (tmp_path / "b1").iterdir())
    assert names == sorted(p.name for p in (tmp_path / f"b{batch}").iterdir()) == [f"pets_{i}.png" for i in range(7)]
    for n in names:
        assert np.array_equal(cv2.imread(str(tmp_path / "b1" / n)), cv2.imread(str(tmp_path / f"b{batch}" / n))), n
    assert got.model_seconds > 0 and got.outputs == [tmp_path / f"b{batch}" / n for n in names]
    assert _pipeline_threads() == []


def test_batched_video_keeps_every_max_frames_and_order(shared: Path, runner, tmp_path: Path) -> None:
    from silhouette.edge.pipeline import obfuscate_source

    video = shared / "data" / "pets2009" / "vtest.avi"
    runs = {}
    for batch in (1, 4):
        frames: list[tuple[int, np.ndarray]] = []
        out = tmp_path / f"b{batch}.mp4"
        rep = obfuscate_source(str(video), runner, out, progress=False, batch=batch, every=3, max_frames=10, on_frame=lambda i, im: frames.append((i, im)))
        cap = cv2.VideoCapture(str(out))
        n = 0
        while cap.read()[0]:
            n += 1
        cap.release()
        assert rep.frames == n == 10
        runs[batch] = frames
    assert [i for i, _ in runs[4]] == [i for i, _ in runs[1]] == list(range(0, 30, 3))
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(runs[1], runs[4]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b1.mp4", "b4.mp4"]  # no temporary files left
    assert _pipeline_threads() == []


def test_unwritable_output_is_one_line_error_without_partial_file(checkpoint: Path, frame_folder: Path, shared: Path, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder is needed")
    video = shared / "data" / "pets2009" / "vtest.avi"
    for out in (blocker / "frames", blocker / "clip.mp4"):
        src = frame_folder if out.suffix == "" else video
        assert main(["obfuscate", str(src), "--checkpoint", str(checkpoint), "--out", str(out), "--max-frames", "6"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(out) in err[0], err
    assert [p.name for p in tmp_path.iterdir()] == ["blocker"]
    assert _pipeline_threads() == []


def test_error_in_writer_mid_video_leaves_no_partial_file(shared: Path, runner, tmp_path: Path) -> None:
    from silhouette.edge.pipeline import obfuscate_source

    def fail_at_5(index: int, image: np.ndarray) -> None:  # runs in the writer thread, after the frame was written
        if index == 5:
            raise SilhouetteError("stop at frame 5")

    with pytest.raises(SilhouetteError, match="stop at frame 5"):
        obfuscate_source(str(shared / "data" / "pets2009" / "vtest.avi"), runner, tmp_path / "clip.mp4", progress=False, batch=2, on_frame=fail_at_5)
    assert list(tmp_path.iterdir()) == []
    assert _pipeline_threads() == []


def test_error_in_reader_surfaces_and_names_the_file(frame_folder: Path, runner, tmp_path: Path) -> None:
    from silhouette.edge.pipeline import obfuscate_source

    folder = tmp_path / "in"
    folder.mkdir()
    for p in sorted(frame_folder.iterdir())[:5]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "pets_9.png").write_bytes(b"not a png")  # sorted last: decoded after five good frames
    with pytest.raises(SilhouetteError, match="pets_9.png"):
        obfuscate_source(folder, runner, tmp_path / "out.mp4", progress=False, batch=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
    assert _pipeline_threads() == []


def test_batch_validation(checkpoint: Path, shared: Path, runner, tmp_path: Path, capsys) -> None:
    from silhouette.edge.pipeline import check_batch, obfuscate_source

    img = shared / "weights" / "testdata" / "pets2009_s2l1_v1_f0000_320x200.png"
    for bad in ("0", "-3"):
        assert main(["obfuscate", str(img), "--checkpoint", str(checkpoint), "--batch", bad, "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--batch" in err[0], err
    with pytest.raises(SilhouetteError, match="--batch"):
        obfuscate_source(img, runner, tmp_path / "y.png", progress=False, batch=0)
    assert not any(tmp_path.iterdir())
    assert check_batch(None, live=True) == 1 and check_batch(None, live=False) == 4 and check_batch(8, live=True) == 8


@pytest.fixture()
def default_sigint():  # noqa: ANN201 - a fixture
    """Ctrl+C as a terminal delivers it: an earlier test in the suite can leave another SIGINT handler installed,
    under which interrupt_main() raised nothing (the file case failed, the live case passed without stopping)."""
    import signal

    prev = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, prev)


@pytest.mark.parametrize("live", [True, False])
def test_ctrl_c_keeps_live_output_and_discards_file_output(shared: Path, runner, tmp_path: Path, live: bool,
                                                           default_sigint: None) -> None:
    import _thread

    from silhouette.data.sources import CaptureSource
    from silhouette.edge.pipeline import obfuscate_source
    src = CaptureSource(str(shared / "data" / "pets2009" / "vtest.avi"), "cam", "stream" if live else "video")
    out = tmp_path / "live.mp4"
    seen: list[int] = []

    def interrupt_after_6(index: int, image: np.ndarray) -> None:
        seen.append(index)
        if len(seen) == 6:
            _thread.interrupt_main()  # what Ctrl+C does: KeyboardInterrupt in the main thread

    if live:
        rep = obfuscate_source(src, runner, out, progress=False, on_frame=interrupt_after_6)
        cap = cv2.VideoCapture(str(out))
        n = 0
        while cap.read()[0]:
            n += 1
        cap.release()
        assert rep.frames == n == len(seen) >= 6 and seen == list(range(n))
        assert n < 200, "the live run must stop soon after Ctrl+C, not play the whole 795-frame video"
        assert [p.name for p in tmp_path.iterdir()] == ["live.mp4"]
    else:
        with pytest.raises(KeyboardInterrupt):
            obfuscate_source(src, runner, out, progress=False, on_frame=interrupt_after_6)
        assert list(tmp_path.iterdir()) == []
    assert _pipeline_threads() == []
