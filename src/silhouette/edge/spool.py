"""The camera's on-disk spool: obfuscated frames the service could not take yet, kept in capture order across restarts.

One folder per camera (created 0700), one file per frame, named by a sequence number that only grows, so a sorted
listing is capture order, also across client restarts. A file is `MAGIC`, one line of JSON (camera id, the frame's
wire headers: Idempotency-Key, X-Capture-Time, X-Silhouette-Obfuscator, Content-Type; never the API key) and the
obfuscated encoding, exactly the bytes the service would have received; nothing else of a frame is ever written.
Files are written to a temporary name, fsynced and renamed, so a killed client leaves whole entries or temporary
files, and the next client to open the folder deletes the temporary files. A lock file keeps a second client off
the folder. The spool is bounded: when a new entry would not fit, the oldest entries are dropped (and counted).
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from silhouette.errors import SilhouetteError

log = logging.getLogger("silhouette.edge")

MAGIC = b"SILHOUETTE-SPOOL 1\n"
ENTRY_RE = re.compile(r"^(\d{20})\.frame$")
TEMP_PREFIX = ".tmp-"
LOCK_NAME = ".lock"
DEFAULT_SPOOL_MB = 256.0  # per camera: about 1,800 obfuscated 320x200 PNG frames (~140 KiB each)


class SpoolError(Exception):
    """A spool file that is not a whole entry (a disk fault: writes are atomic)."""


@dataclass
class Entry:
    """One spooled frame: its sequence number, wire metadata and the obfuscated encoding."""

    seq: int
    meta: dict[str, Any]
    payload: bytes


def entry_name(seq: int) -> str:
    """The file name of entry `seq`: zero-padded, so that name order is sequence order."""
    return f"{seq:020d}.frame"


def pack(meta: dict[str, Any], payload: bytes) -> bytes:
    """The bytes of one spool file: magic, one JSON line (with the payload length) and the payload."""
    head = json.dumps({**meta, "bytes": len(payload)}, sort_keys=True, separators=(",", ":")).encode()
    return MAGIC + head + b"\n" + payload


def unpack(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(metadata, payload) of a spool file; SpoolError unless it is a whole entry."""
    if not data.startswith(MAGIC):
        raise SpoolError("not a spool entry")
    head, sep, payload = data[len(MAGIC):].partition(b"\n")
    try:
        meta = json.loads(head) if sep else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("bytes") != len(payload):
        raise SpoolError("truncated or corrupt spool entry")
    del meta["bytes"]
    return meta, payload


def private_dir(folder: Path) -> Path:
    """Create `folder` (and missing parents) as 0700, or tighten an existing one to 0700; clear error otherwise."""
    try:
        missing = [p for p in [folder, *folder.parents] if not p.exists()]
        for p in reversed(missing):
            p.mkdir(mode=0o700)  # each level this client creates: camera ids are not everyone's business either
        if not folder.is_dir():
            raise SilhouetteError(f"--spool {folder}: not a folder")
        if folder.stat().st_mode & 0o077:
            os.chmod(folder, 0o700)  # a folder left open by hand: obfuscated frames are still the user's data
    except OSError as exc:
        raise SilhouetteError(f"--spool {folder}: cannot create a private folder there ({exc.strerror or exc})") from None
    return folder


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (no-op where folders cannot be opened, e.g. Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Spool:
    """A bounded FIFO of obfuscated frames in one folder; not thread-safe (FrameQueue serialises access)."""

    def __init__(self, folder: str | os.PathLike[str], max_bytes: int, camera_id: str = "") -> None:
        if max_bytes <= 0:
            raise SilhouetteError(f"--spool-max-mb: must be > 0, got {max_bytes / 2**20:g}")
        self.folder = private_dir(Path(folder).expanduser())
        self.max_bytes = int(max_bytes)
        self.camera_id = camera_id
        self._lock_fd = self._lock()
        swept = self._sweep()
        self._seqs: list[int] = []  # sorted
        self._sizes: dict[int, int] = {}
        for entry in os.scandir(self.folder):
            m = ENTRY_RE.match(entry.name)
            if m and entry.is_file(follow_symlinks=False):
                self._seqs.append(int(m.group(1)))
                self._sizes[int(m.group(1))] = entry.stat().st_size
        self._seqs.sort()
        self.bytes = sum(self._sizes.values())
        self.inflight: int | None = None  # the entry being sent: never dropped under the sender's feet
        if swept:
            log.info("%s: removed %d temporary spool file(s) of an interrupted client", self.folder, swept)

    def _lock(self) -> int | None:
        """Hold an exclusive lock on the folder for this process's lifetime (two clients would send entries twice)."""
        fd = os.open(self.folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks, one client per folder is the user's job
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SilhouetteError(f"--spool {self.folder}: in use by another silhouette edge process; "
                                  "give each client its own --spool folder") from None
        return fd

    def _sweep(self) -> int:
        """Delete the temporary files of a killed writer; safe because this process holds the folder's lock."""
        removed = 0
        for entry in os.scandir(self.folder):
            if entry.name.startswith(TEMP_PREFIX) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def __len__(self) -> int:
        return len(self._seqs)

    def next_seq(self) -> int:
        """The first sequence number after every entry on disk (where this run's frames start)."""
        return self._seqs[-1] + 1 if self._seqs else 0

    def oldest(self) -> int | None:
        """The sequence number of the oldest entry, or None when empty."""
        return self._seqs[0] if self._seqs else None

    def seqs(self) -> list[int]:
        """Every entry's sequence number, oldest first."""
        return list(self._seqs)

    def put(self, seq: int, meta: dict[str, Any], payload: bytes) -> tuple[bool, int]:
        """Write one entry atomically, dropping oldest entries to make room; (written?, entries dropped incl. this one)."""
        data = pack(meta, payload)
        dropped = 0
        if len(data) > self.max_bytes:
            return False, 1
        while self.bytes + len(data) > self.max_bytes:
            victim = next((s for s in self._seqs if s != self.inflight), None)
            if victim is None or victim > seq:
                return False, dropped + 1  # the new entry is the oldest one: it is the one dropped
            self.remove(victim)
            dropped += 1
        self._write(seq, data)
        bisect.insort(self._seqs, seq)
        self._sizes[seq] = len(data)
        self.bytes += len(data)
        return True, dropped

    def _write(self, seq: int, data: bytes) -> None:
        """temp file (0600) + write + fsync + rename + fsync of the folder: the entry exists whole or not at all."""
        tmp = self.folder / f"{TEMP_PREFIX}{seq:020d}-{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, self.folder / entry_name(seq))
        _fsync_dir(self.folder)

    def read(self, seq: int) -> Entry:
        """The entry `seq`, read back from disk; SpoolError if it is not whole."""
        try:
            data = (self.folder / entry_name(seq)).read_bytes()
        except OSError as exc:
            raise SpoolError(f"cannot read it ({exc.strerror or exc})") from None
        meta, payload = unpack(data)
        return Entry(seq, meta, payload)

    def remove(self, seq: int) -> None:
        """Delete entry `seq` (after a 2xx, a permanent rejection, or to make room)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.folder / entry_name(seq))
        if seq in self._sizes:
            self.bytes -= self._sizes.pop(seq)
            self._seqs.remove(seq)
        if self.inflight == seq:
            self.inflight = None

    def close(self) -> None:
        """Release the folder's lock."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
