"""Atomic file writing: a reader never sees a half-written output, and no run leaves its temporary files behind."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import re
import secrets
import signal
import sys
import threading
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Mapping, Sequence

log = logging.getLogger("silhouette.fileio")

# Temporary outputs are named .<stem>.silhouette-tmp-<pid>-<8 hex><suffix>: hidden, recognisable, and tagged with the
# writer's PID so that a later run can tell the leftovers of a dead (SIGKILLed) process from a live writer's file.
TEMP_TAG = ".silhouette-tmp-"
TEMP_RE = re.compile(r"^\..*\.silhouette-tmp-(\d+)-[0-9a-f]{8}(\..+)?$")
EXIT_SIGTERM = 143  # 128 + SIGTERM, what a shell reports for a process killed by SIGTERM

_LOCK = threading.RLock()  # re-entrant: the SIGTERM handler runs in the main thread, possibly while it holds the lock
_TEMP_DIRS: set[Path] = set()  # folders this process made temporary files in (swept once, cleaned on SIGTERM)


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (or might: anything but a clear 'no such process' counts as alive)."""
    if pid <= 0 or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


def _temp_files(folder: Path) -> Iterator[tuple[Path, int]]:
    """(path, writer PID) of every silhouette temporary file directly in `folder`."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        m = TEMP_RE.match(entry.name)
        if m and entry.is_file(follow_symlinks=False):
            yield Path(entry.path), int(m.group(1))


def sweep_stale(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that dead processes (SIGKILL, power loss) left in `folder`; returns them."""
    removed = []
    for path, pid in _temp_files(Path(folder)):
        if not _pid_alive(pid):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    if removed:
        log.info("removed %d temporary file(s) left in %s by an interrupted run", len(removed), folder)
    return removed


def remove_own_temps() -> list[Path]:
    """Delete every temporary file this process has in flight (what SIGTERM must not leave behind)."""
    with _LOCK:
        folders = list(_TEMP_DIRS)
    removed = []
    for folder in folders:
        for path, pid in _temp_files(folder):
            if pid == os.getpid():
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path)
    return removed


def new_temp(path: str | os.PathLike[str], suffix: str | None = None) -> Path:
    """Create an empty temporary file beside `path`, with the permissions a normal new file gets (0666 & ~umask)."""
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    with _LOCK:
        first = folder.resolve() not in _TEMP_DIRS
        _TEMP_DIRS.add(folder.resolve())  # registered before the file exists, so SIGTERM cleanup never misses it
    if first:
        sweep_stale(folder)
    # keep the real suffix so libraries that infer the format from it (cv2, PIL, torch) still work
    suffix = suffix or path.suffix or ".tmp"
    for _ in range(100):
        # the stem is cut so that long output names still fit the 255-byte file-name limit with the tag added
        tmp = folder / f".{path.stem[:150]}{TEMP_TAG}{os.getpid()}-{secrets.token_hex(4)}{suffix}"
        try:
            # os.open with 0o666 lets the kernel apply the umask (and default ACLs), unlike mkstemp's fixed 0600
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{folder}: could not create a unique temporary file for {path.name}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    tmp = new_temp(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # nothing left after a successful rename


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing that replaces `path` on success."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


class Terminated(SystemExit):
    """SIGTERM arrived while a command was writing: unwinds like Ctrl+C (partial outputs are discarded), exits 143."""

    def __init__(self) -> None:
        super().__init__(EXIT_SIGTERM)


@contextlib.contextmanager
def cleanup_on_sigterm(command: str) -> Iterator[None]:
    """While active, SIGTERM stops `command` cleanly: its partial outputs and temporary files go, and it exits 143."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed (and only run) in the main thread
        return
    hits = [0]

    def handler(signum: int, frame: object) -> None:
        hits[0] += 1
        if hits[0] == 1:
            raise Terminated()  # in the main thread: every `finally` on the way out discards what it was writing
        remove_own_temps()  # a second SIGTERM while unwinding: stop now
        os._exit(EXIT_SIGTERM)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except Terminated:
        remove_own_temps()  # also what a worker thread may still have had open when the main thread unwound
        print(f"silhouette {command}: terminated (SIGTERM); partial outputs removed", file=sys.stderr, flush=True)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
    """Write JSON atomically."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=indent)
        fh.write("\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read JSON, turning a missing or corrupt file into a user-facing error."""
    from silhouette.errors import SilhouetteError

    path = Path(path)
    if not path.is_file():
        raise SilhouetteError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SilhouetteError(f"{path}: not valid JSON ({exc}); delete it or re-create it") from exc


def read_yaml(path: str | os.PathLike[str], what: str) -> Any:
    """Parse a YAML file; a missing, unreadable or malformed one is a one-line error that starts with `what` and the path."""
    import yaml

    from silhouette.errors import SilhouetteError

    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError):
        raise SilhouetteError(f"{what} {path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise SilhouetteError(f"{what} {path}: not UTF-8 text (byte {exc.start}); save it as UTF-8 YAML") from None
    except OSError as exc:
        raise SilhouetteError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SilhouetteError(f"{what} {path}: not valid YAML ({' '.join(str(exc).split())})") from None


def write_yaml(path: str | os.PathLike[str], obj: Any) -> None:
    """Write YAML atomically, keys in the order given."""
    import yaml

    with atomic_open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(obj, fh, sort_keys=False)


def csv_line(cells: Sequence[Any]) -> str:
    """One CSV line with its newline, quoted as the csv module quotes (for files and streamed responses alike)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(cells)
    return buf.getvalue()


def write_csv(path: str | os.PathLike[str], fields: Sequence[str],
              rows: Iterable[Mapping[str, Any] | Sequence[Any]]) -> None:
    """Write a CSV file atomically: the header `fields`, then each row (a mapping is read by field, missing ones empty)."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(csv_line(fields))
        for row in rows:
            fh.write(csv_line([row.get(k, "") for k in fields] if isinstance(row, Mapping) else row))
