"""Atomic outputs: recognisable PID-tagged temporary files, normal permissions, stale-file sweeping, SIGTERM cleanup."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest

from silhouette.fileio import atomic_path, write_json


@pytest.fixture()
def umask_027() -> Iterator[int]:
    """A umask other than the usual 022, so a hard-coded 0644 cannot pass for 'what the umask gives'."""
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def _exited_pid() -> int:
    """The PID of a process that has already exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_file_is_tagged_with_pid_and_gets_umask_permissions(tmp_path: Path, umask_027: int) -> None:
    out = tmp_path / "report.json"
    with atomic_path(out) as tmp:
        assert tmp.parent == tmp_path
        assert re.fullmatch(rf"\.report\.silhouette-tmp-{os.getpid()}-[0-9a-f]{{8}}\.json", tmp.name), tmp.name
        assert tmp.stat().st_mode & 0o777 == 0o640  # 0666 & ~027, like any file open() creates
        tmp.write_text("{}")
    assert out.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_writing_sweeps_temp_files_of_dead_processes_only(tmp_path: Path) -> None:
    dead = tmp_path / f".clip.silhouette-tmp-{_exited_pid()}-0123abcd.mp4"
    mine = tmp_path / f".clip.silhouette-tmp-{os.getpid()}-89abcdef.mp4"  # this process: possibly still writing
    init = tmp_path / ".clip.silhouette-tmp-1-deadbeef.mp4"  # PID 1 always exists
    unrelated = [tmp_path / ".clip.mp4.part", tmp_path / ".clip.12345678.mp4", tmp_path / "notes.silhouette-tmp-99999999-0123abcd.txt"]
    for p in (dead, mine, init, *unrelated):
        p.write_bytes(b"partial")
    write_json(tmp_path / "manifest.json", {"ok": True})  # any atomic write into the folder sweeps it
    assert not dead.exists()
    assert mine.exists() and init.exists() and all(p.exists() for p in unrelated)
    assert (tmp_path / "manifest.json").is_file()


def test_sigterm_unwinds_and_removes_every_temp_in_flight(tmp_path: Path) -> None:
    from silhouette.fileio import EXIT_SIGTERM, cleanup_on_sigterm

    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))  # never kill pytest
    started, release = threading.Event(), threading.Event()

    def worker() -> None:  # a writer thread with its own temp file open, as in the obfuscate pipeline
        try:
            with atomic_path(tmp_path / "frames" / "f0.png") as tmp:
                tmp.write_bytes(b"half a frame")
                started.set()
                release.wait(10)
        except FileNotFoundError:  # its temp file was removed under it: the frame is never published
            pass

    thread = threading.Thread(target=worker)
    try:
        with pytest.raises(SystemExit) as exc:
            with cleanup_on_sigterm("test"):
                thread.start()
                assert started.wait(10)
                with atomic_path(tmp_path / "clip.mp4") as tmp:
                    tmp.write_bytes(b"half a video")
                    os.kill(os.getpid(), signal.SIGTERM)
                    for _ in range(100):  # the handler runs between bytecodes of this (main) thread
                        threading.Event().wait(0.01)
        assert exc.value.code == EXIT_SIGTERM == 143
        assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []  # the worker's temp went too
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):
            if received:
                break
            threading.Event().wait(0.01)
        assert received == [signal.SIGTERM]  # the previous handler is back
    finally:
        release.set()
        thread.join(10)
        signal.signal(signal.SIGTERM, previous)
    assert not (tmp_path / "frames" / "f0.png").exists()
