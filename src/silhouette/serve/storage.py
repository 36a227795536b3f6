"""Person counts in a SQL database (a SQLite file or PostgreSQL): exactly once per Idempotency-Key, queries, retention.

Schema (times are integer unix milliseconds, so that bucketing is integer division on both SQLite and PostgreSQL):

- detections: id, camera_id, idempotency_key (nullable), captured_at (edge clock, nullable), received_at (server
  clock), count, boxes (JSON [[x1, y1, x2, y2], ...]), scores (JSON), obfuscator_id (nullable), detector_id,
  request_sha256 (v3, nullable: the request's fingerprint, so that every worker refuses a key reused for other
  images). Unique (camera_id, idempotency_key) where the key is not null. There is no column for image bytes, by design.
- cameras: id, first_seen, last_seen, frames (lifetime frames counted; kept when old detections are pruned).
- schema_version: one row per applied migration (version, applied_at, description).

Migrations are a schema_version table and ordered Python functions (MIGRATIONS), not Alembic: three tables on two
backends, applied automatically when the service opens the database (several workers may do so at once, so the
upgrade runs in one locked transaction); Alembic would add an env.py, a versions folder and a second CLI for that.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError

from silhouette.errors import SilhouetteError
from silhouette.fileio import csv_line

log = logging.getLogger("silhouette.serve")

DB_OPTION = "--db"
DB_EXAMPLES = "e.g. sqlite:////var/lib/silhouette/counts.db or postgresql://user:password@host:5432/silhouette"
SQLITE_BUSY_TIMEOUT_S = 30.0  # uvicorn workers queue for SQLite's single write lock instead of failing at once
PG_CONNECT_TIMEOUT_S = 10  # a black-holed host fails the start in seconds, not after the kernel's TCP timeout
PG_MIGRATION_LOCK = 0x5111_0E77E  # pg_advisory_xact_lock key: workers starting together migrate one at a time
MAX_CAMERA_ID, MAX_KEY, MAX_MODEL_ID = 64, 200, 128
CSV_COLUMNS = ("id", "camera_id", "idempotency_key", "captured_at", "received_at", "count", "boxes", "scores",
               "obfuscator_id", "detector_id")
_SQLITE_BEGIN = {"DEFERRED", "IMMEDIATE"}


def _v1_tables(md: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """The tables of schema v1 as first released; frozen, because later changes are new migrations."""
    detections = sa.Table(
        "detections", md,
        # BIGINT does not alias SQLite's rowid, so SQLite gets INTEGER to keep autoincrement
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("camera_id", sa.String(MAX_CAMERA_ID), nullable=False),
        sa.Column("idempotency_key", sa.String(MAX_KEY), nullable=True),
        sa.Column("captured_at", sa.BigInteger(), nullable=True),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("boxes", sa.JSON(), nullable=False),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.Column("obfuscator_id", sa.String(MAX_MODEL_ID), nullable=True),
        sa.Column("detector_id", sa.String(MAX_MODEL_ID), nullable=False),
        sqlite_autoincrement=True,  # ids are never reused, even once retention has emptied the table
    )
    key = detections.c.idempotency_key
    # partial: frames sent without a key are all counted; with one, the index is what makes a retry count once
    sa.Index("uq_detections_camera_key", detections.c.camera_id, key, unique=True,
             sqlite_where=key.isnot(None), postgresql_where=key.isnot(None))
    cameras = sa.Table(
        "cameras", md,
        sa.Column("id", sa.String(MAX_CAMERA_ID), primary_key=True),
        sa.Column("first_seen", sa.BigInteger(), nullable=False),
        sa.Column("last_seen", sa.BigInteger(), nullable=False),
        sa.Column("frames", sa.BigInteger(), nullable=False),
    )
    return detections, cameras


def _v2_index(detections: sa.Table) -> sa.Index:
    """v2: per-camera time ranges (counts, export, latest) read an index instead of scanning every camera."""
    return sa.Index("ix_detections_camera_received", detections.c.camera_id, detections.c.received_at)


def _migrate_v1(conn: Connection) -> None:
    """Create the detections and cameras tables."""
    md = sa.MetaData()
    _v1_tables(md)
    md.create_all(conn)


def _v3_column() -> sa.Column[Any]:
    """v3: the fingerprint (sha256 hex) of the request a row came from; null for rows stored before v3."""
    return sa.Column("request_sha256", sa.String(64), nullable=True)


def _v3_index(detections: sa.Table) -> sa.Index:
    """v3: retention deletes by received_at alone; without this index every prune scans the whole table."""
    return sa.Index("ix_detections_received", detections.c.received_at)


def _migrate_v2(conn: Connection) -> None:
    """Index detections by (camera_id, received_at)."""
    detections, _ = _v1_tables(sa.MetaData())
    _v2_index(detections).create(conn)


def _migrate_v3(conn: Connection) -> None:
    """Add detections.request_sha256 and index detections by received_at."""
    detections, _ = _v1_tables(sa.MetaData())
    column = _v3_column()
    type_sql = column.type.compile(dialect=conn.dialect)
    # SQLAlchemy Core has no ADD COLUMN construct; this statement is the same on SQLite and PostgreSQL
    conn.exec_driver_sql(f"ALTER TABLE {detections.name} ADD COLUMN {column.name} {type_sql}")
    _v3_index(detections).create(conn)


MIGRATIONS: tuple[tuple[int, str, Callable[[Connection], None]], ...] = (
    (1, "detections and cameras", _migrate_v1),
    (2, "index detections by (camera_id, received_at)", _migrate_v2),
    (3, "detections.request_sha256 and an index by received_at", _migrate_v3),
)
SCHEMA_LATEST = MIGRATIONS[-1][0]

# the current schema, for queries only (never create_all): v1's tables plus what each later migration added
METADATA = sa.MetaData()
DETECTIONS, CAMERAS = _v1_tables(METADATA)
_v2_index(DETECTIONS)
DETECTIONS.append_column(_v3_column())
_v3_index(DETECTIONS)
SCHEMA_VERSION = sa.Table(
    "schema_version", METADATA,
    sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("applied_at", sa.BigInteger(), nullable=False),
    sa.Column("description", sa.String(200), nullable=False),
)


@dataclass(frozen=True)
class Detection:
    """One stored frame result; times are unix seconds."""

    id: int
    camera_id: str
    idempotency_key: str | None
    captured_at: float | None
    received_at: float
    count: int
    boxes: list[list[float]]
    scores: list[float]
    obfuscator_id: str | None
    detector_id: str
    request_sha256: str | None = None


@dataclass(frozen=True)
class Frame:
    """One frame's detector result, as record_many() stores it."""

    count: int
    boxes: Sequence[Sequence[float]]
    scores: Sequence[float]


@dataclass(frozen=True)
class Recorded:
    """What record() stored, or the first result stored under the same key when replayed is True."""

    detection: Detection
    replayed: bool

    @property
    def id(self) -> int:
        """The stored row id (the first row's on a replay)."""
        return self.detection.id


@dataclass(frozen=True)
class Camera:
    """A camera seen by the service; last_count is None once all its detections were pruned."""

    id: str
    first_seen: float
    last_seen: float
    frames: int
    last_count: int | None


@dataclass(frozen=True)
class Bucket:
    """Counts of one camera in [start, start + bucket_s); buckets without frames are left out."""

    start: float
    frames: int
    mean: float
    max: int
    last: int


def _ms(t: float) -> int:
    """Unix seconds to integer milliseconds."""
    return int(round(t * 1000))


def _seconds(ms: int | None) -> float | None:
    """Integer milliseconds to unix seconds."""
    return None if ms is None else ms / 1000


def _iso(ms: int | None) -> str:
    """Milliseconds as ISO 8601 UTC for CSV ('' for none)."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def redact(text: str) -> str:
    """`text` with the password of any URL in it replaced by ***, for messages about a URL that may not parse."""
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)


def _shown(url: URL) -> str:
    """The URL as it may appear in logs and messages: never with its password."""
    return url.render_as_string(hide_password=True)


def _parse_url(url: str) -> URL:
    """The parsed --db URL, with psycopg 3 as the PostgreSQL driver; SilhouetteError for anything unsupported."""
    try:
        parsed = sa.engine.make_url(url)
    except (ArgumentError, ValueError, TypeError):
        raise SilhouetteError(f"{DB_OPTION} {redact(str(url))!r} is not a database URL; give one {DB_EXAMPLES}") from None
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        return parsed.set(drivername="postgresql+psycopg")  # the driver installed with silhouette; psycopg2 is not
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        db = parsed.database or ""
        if db in ("", ":memory:") or db.startswith("file::memory:"):
            raise SilhouetteError(
                f"{DB_OPTION} {_shown(parsed)}: an in-memory SQLite database is lost on restart and not shared by "
                f"workers; give a file, {DB_EXAMPLES}")
        folder = Path(db).parent
        if not folder.is_dir():
            raise SilhouetteError(f"{DB_OPTION} {_shown(parsed)}: folder {folder} does not exist; create it or give another path")
        return parsed
    raise SilhouetteError(
        f"{DB_OPTION} {_shown(parsed)}: {parsed.drivername!r} is not supported; use SQLite or PostgreSQL (psycopg), "
        f"{DB_EXAMPLES}")


def _sqlite_engine(url: URL, memory: bool = False) -> Engine:
    """A SQLite engine (WAL mode for a file) with a busy timeout, emitting its own BEGIN (IMMEDIATE for writes)."""
    if memory:  # one connection, handed to one thread at a time: every connection would be another empty database
        engine = sa.create_engine(url, poolclass=sa.pool.QueuePool, pool_size=1, max_overflow=0, pool_timeout=60,
                                  connect_args={"check_same_thread": False})
    else:
        engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})  # sqlite3's timeout = busy_timeout

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        """Per new connection: SQLAlchemy owns BEGIN, the file is in WAL mode, temporary tables stay in RAM."""
        # take BEGIN away from sqlite3 (it skips it for DDL and SELECT): migrations become one transaction
        dbapi_conn.isolation_level = None
        dbapi_conn.execute("PRAGMA temp_store = MEMORY")  # sorts and temporary tables never become files in $TMPDIR
        if memory:
            return
        mode = dbapi_conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":  # e.g. a network file system; still correct, but writers block readers
            log.warning("SQLite database %s stays in journal mode %s, not WAL", url.database, mode)

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        """Emit BEGIN IMMEDIATE for writes, BEGIN DEFERRED for reads."""
        # a write begins IMMEDIATE: it waits (busy timeout) for the write lock up front, never failing mid-way
        # when upgrading a read lock; reads stay DEFERRED so a long CSV export never blocks the writers
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode if mode in _SQLITE_BEGIN else 'DEFERRED'}")

    return engine


def _reason(exc: BaseException, url: URL) -> str:
    """The first line of a driver error, without the URL's password."""
    orig = getattr(exc, "orig", None) or exc
    line = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    if url.password:
        line = line.replace(str(url.password), "***")
    return redact(line)


def open_engine(url: str) -> Engine:
    """An engine for a --db URL, checked with one connection; a bad URL is a one-line SilhouetteError."""
    parsed = _parse_url(url)
    sqlite_db = parsed.get_backend_name() == "sqlite"
    if sqlite_db:
        engine = _sqlite_engine(parsed)
    else:  # pre-ping: a PostgreSQL restart costs one reconnect, not an error on the next request
        engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
        engine.dispose()
        hint = ("check that it is a SQLite file this user can write" if sqlite_db else
                "check that the server runs, the database exists and the user and password are right")
        raise SilhouetteError(f"{DB_OPTION} {_shown(parsed)}: cannot open the database ({_reason(exc, parsed)}); {hint}") from None
    return engine


@contextmanager
def _transaction(engine: Engine, write: bool = False) -> Iterator[Connection]:
    """A connection in a transaction, committed on success; SQLite writes take the write lock when they begin."""
    with engine.connect() as conn:
        if write:
            conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            yield conn


def schema_version(engine: Engine) -> int:
    """The database's schema version (0 for an empty database)."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(SCHEMA_VERSION.name):
            return 0
        return conn.execute(sa.select(sa.func.max(SCHEMA_VERSION.c.version))).scalar() or 0


def upgrade(engine: Engine, target: int = SCHEMA_LATEST) -> int:
    """Apply the migrations up to `target` in one locked transaction; returns the version found before."""
    shown = _shown(engine.url)
    with _transaction(engine, write=True) as conn:
        if conn.dialect.name == "postgresql":  # SQLite's BEGIN IMMEDIATE already excludes the other workers
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(PG_MIGRATION_LOCK)))
        if not sa.inspect(conn).has_table(SCHEMA_VERSION.name):
            if sa.inspect(conn).has_table("detections"):
                raise SilhouetteError(f"{DB_OPTION} {shown} has a detections table but no silhouette schema_version; "
                                      "give a new database")
            SCHEMA_VERSION.create(conn)
        found = conn.execute(sa.select(sa.func.max(SCHEMA_VERSION.c.version))).scalar() or 0
        if found > SCHEMA_LATEST:
            raise SilhouetteError(f"{DB_OPTION} {shown} has schema v{found}, newer than this silhouette's "
                                  f"v{SCHEMA_LATEST}; upgrade silhouette or give another database")
        for version, description, step in MIGRATIONS:
            if found < version <= target:
                step(conn)
                conn.execute(SCHEMA_VERSION.insert().values(version=version, applied_at=_ms(time.time()),
                                                            description=description))
                log.info("count store %s: applied schema v%d (%s)", shown, version, description)
    return found


def _text(value: str | None, name: str, limit: int, required: bool = True) -> str | None:
    """A validated id or key: 1-`limit` characters, or None where allowed."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise ValueError(f"{name} must be a string of 1-{limit} characters, got {value!r}")
    return value


def _finite(value: Any, name: str) -> float:
    """A finite float (JSON and SQL cannot keep NaN or infinity)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _row_values(camera_id: str, count: int, boxes: Sequence[Sequence[float]], scores: Sequence[float],
                detector_id: str, key: str | None, captured_at: float | None, obfuscator_id: str | None,
                received_at: float | None, request_sha256: str | None = None) -> dict[str, Any]:
    """The detections row for record(), validated: results only (numbers and ids), nothing of the image."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be an integer >= 0, got {count!r}")
    # lists only: bytes would iterate as numbers and slip an image into the boxes column
    if not isinstance(boxes, (list, tuple)) or not all(isinstance(b, (list, tuple)) for b in boxes):
        raise ValueError("boxes must be a list of [x1, y1, x2, y2] lists")
    if not isinstance(scores, (list, tuple)):
        raise ValueError("scores must be a list of numbers")
    box_list = [[_finite(v, "box coordinate") for v in box] for box in boxes]
    if any(len(box) != 4 for box in box_list):
        raise ValueError("each box must be [x1, y1, x2, y2]")
    score_list = [_finite(s, "score") for s in scores]
    if len(score_list) != len(box_list):
        raise ValueError(f"{len(box_list)} boxes but {len(score_list)} scores")
    return {
        "camera_id": _text(camera_id, "camera_id", MAX_CAMERA_ID),
        "idempotency_key": _text(key, "idempotency_key", MAX_KEY, required=False),
        "captured_at": None if captured_at is None else _ms(_finite(captured_at, "captured_at")),
        "received_at": _ms(time.time() if received_at is None else _finite(received_at, "received_at")),
        "count": count, "boxes": box_list, "scores": score_list,
        "obfuscator_id": _text(obfuscator_id, "obfuscator_id", MAX_MODEL_ID, required=False),
        "detector_id": _text(detector_id, "detector_id", MAX_MODEL_ID),
        "request_sha256": _text(request_sha256, "request_sha256", 64, required=False),
    }


def _stored(row_id: int, values: dict[str, Any]) -> Detection:
    """The Detection of a row just inserted from `values` (as _row_values made them)."""
    return Detection(id=row_id, **{**values, "captured_at": _seconds(values["captured_at"]),
                                   "received_at": values["received_at"] / 1000})


def _detection(row: Any) -> Detection:
    """A detections row as a Detection (times in seconds)."""
    m = row._mapping
    return Detection(
        id=int(m["id"]), camera_id=m["camera_id"], idempotency_key=m["idempotency_key"],
        captured_at=_seconds(m["captured_at"]), received_at=float(_seconds(m["received_at"])), count=int(m["count"]),
        boxes=[list(b) for b in m["boxes"]], scores=list(m["scores"]), obfuscator_id=m["obfuscator_id"],
        detector_id=m["detector_id"], request_sha256=m.get("request_sha256"),
    )


def _in_range(camera_id: str, start: float | None, end: float | None) -> list[sa.ColumnElement[bool]]:
    """WHERE terms: one camera, received in [start, end) (either bound may be None)."""
    _text(camera_id, "camera_id", MAX_CAMERA_ID)
    terms = [DETECTIONS.c.camera_id == camera_id]
    if start is not None:
        terms.append(DETECTIONS.c.received_at >= _ms(_finite(start, "start")))
    if end is not None:
        terms.append(DETECTIONS.c.received_at < _ms(_finite(end, "end")))
    if start is not None and end is not None and end < start:
        raise ValueError(f"end {end} is before start {start}")
    return terms


def _csv_cell(value: Any) -> str:
    """A CSV cell; text starting like a formula gets a quote so spreadsheets show it instead of running it."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


class CountStore:
    """Detections and per-camera counts in a SQL database, shared by worker processes and kept across restarts."""

    def __init__(self, url: str) -> None:
        self._open(open_engine(url), memory=False)

    @classmethod
    def in_memory(cls) -> CountStore:
        """A private in-memory SQLite store: gone with the object, never shared (tests, embedding; not `--db`)."""
        store = cls.__new__(cls)
        store._open(_sqlite_engine(sa.engine.make_url("sqlite://"), memory=True), memory=True)
        return store

    def _open(self, engine: Engine, memory: bool) -> None:
        """Adopt `engine` and bring its schema up to date."""
        self.engine, self.memory = engine, memory
        self.url = _shown(self.engine.url)  # the only form of the URL that is logged or shown
        try:
            found = upgrade(self.engine)
        except BaseException:
            self.engine.dispose()
            raise
        log.info("count store %s at schema v%d%s", self.url, SCHEMA_LATEST,
                 f" (upgraded from v{found})" if 0 < found < SCHEMA_LATEST else "")

    def __repr__(self) -> str:
        return f"CountStore({self.url!r})"

    def __enter__(self) -> CountStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections (an in-memory store keeps its one connection: it is the database)."""
        if not self.memory:
            self.engine.dispose()

    def record(self, camera_id: str, count: int, boxes: Sequence[Sequence[float]], scores: Sequence[float],
               detector_id: str, *, idempotency_key: str | None = None, captured_at: float | None = None,
               obfuscator_id: str | None = None, received_at: float | None = None) -> Recorded:
        """Store one frame's result and count it; a repeated (camera_id, key) returns the first result, storing nothing."""
        keys = None if idempotency_key is None else [idempotency_key]
        return self.record_many(camera_id, [Frame(count, boxes, scores)], detector_id, keys=keys,
                                captured_at=captured_at, obfuscator_id=obfuscator_id, received_at=received_at)[0]

    def record_many(self, camera_id: str, frames: Sequence[Frame], detector_id: str, *,
                    keys: Sequence[str] | None = None, captured_at: float | None = None,
                    obfuscator_id: str | None = None, received_at: float | None = None,
                    request_sha256: str | None = None) -> list[Recorded]:
        """Store the frames of one request in one transaction, or, when their keys are taken, return the rows stored first.

        An IntegrityError is raised when only some of the keys are taken (or the first rows vanished meanwhile)."""
        if keys is not None and len(keys) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(keys)} idempotency keys")
        t = time.time() if received_at is None else received_at
        rows = [_row_values(camera_id, f.count, f.boxes, f.scores, detector_id, None if keys is None else keys[i],
                            captured_at, obfuscator_id, t, request_sha256) for i, f in enumerate(frames)]
        try:
            with _transaction(self.engine, write=True) as conn:
                ids = [conn.execute(DETECTIONS.insert().values(**row)).inserted_primary_key[0] for row in rows]
                if rows:
                    self._count_frame(conn, camera_id, rows[0]["received_at"], len(rows))
        except IntegrityError:
            # the unique index, not a read-before-write, decides: of two workers racing on one key exactly one
            # commits, the other lands here (PostgreSQL: after the first commits) and reads the winner's rows
            first = self.find(camera_id, keys) if keys else {}
            if not keys or len(first) != len(keys):  # no key, a partial overlap, or the winner was pruned meanwhile
                raise
            return [Recorded(first[k], replayed=True) for k in keys]
        return [Recorded(_stored(int(i), row), replayed=False) for i, row in zip(ids, rows)]

    def _count_frame(self, conn: Connection, camera_id: str, t_ms: int, frames: int = 1) -> None:
        """Upsert the camera's row in the detections' transaction, so a replayed frame is never counted."""
        insert = sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert
        stmt = insert(CAMERAS).values(id=camera_id, first_seen=t_ms, last_seen=t_ms, frames=frames)
        stmt = stmt.on_conflict_do_update(index_elements=[CAMERAS.c.id], set_={
            "frames": CAMERAS.c.frames + frames,
            # frames may arrive out of order (retries, several workers): keep the extremes, not the latest write
            "first_seen": sa.case((stmt.excluded.first_seen < CAMERAS.c.first_seen, stmt.excluded.first_seen),
                                  else_=CAMERAS.c.first_seen),
            "last_seen": sa.case((stmt.excluded.last_seen > CAMERAS.c.last_seen, stmt.excluded.last_seen),
                                 else_=CAMERAS.c.last_seen),
        })
        conn.execute(stmt)

    def find(self, camera_id: str, keys: Sequence[str]) -> dict[str, Detection]:
        """The detections stored under (camera_id, key) for each of `keys` that has one."""
        if not keys:
            return {}
        query = sa.select(DETECTIONS).where(DETECTIONS.c.camera_id == camera_id,
                                            DETECTIONS.c.idempotency_key.in_(list(keys)))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return {d.idempotency_key: d for d in map(_detection, rows) if d.idempotency_key is not None}

    def _by_key(self, camera_id: str, key: str) -> Detection | None:
        """The detection stored under (camera_id, key), if any."""
        return self.find(camera_id, [key]).get(key)

    def recent(self, camera_id: str, limit: int) -> list[Detection]:
        """The camera's `limit` most recently received detections, newest first."""
        query = (sa.select(DETECTIONS).where(*_in_range(camera_id, None, None))
                 .order_by(DETECTIONS.c.received_at.desc(), DETECTIONS.c.id.desc()).limit(max(0, int(limit))))
        with self.engine.connect() as conn:
            return [_detection(r) for r in conn.execute(query).all()]

    def latest(self, camera_id: str) -> Detection | None:
        """The camera's most recently received detection, if any."""
        found = self.recent(camera_id, 1)
        return found[0] if found else None

    def cameras(self, camera_id: str | None = None) -> list[Camera]:
        """Every camera seen (or only `camera_id`), by id, with its first/last frame time, frames counted and latest count."""
        last = (sa.select(DETECTIONS.c.count).where(DETECTIONS.c.camera_id == CAMERAS.c.id)
                .order_by(DETECTIONS.c.received_at.desc(), DETECTIONS.c.id.desc()).limit(1).scalar_subquery())
        query = sa.select(CAMERAS, last.label("last_count")).order_by(CAMERAS.c.id)
        if camera_id is not None:
            query = query.where(CAMERAS.c.id == _text(camera_id, "camera_id", MAX_CAMERA_ID))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [Camera(r.id, r.first_seen / 1000, r.last_seen / 1000, int(r.frames),
                       None if r.last_count is None else int(r.last_count)) for r in rows]

    def counts(self, camera_id: str, start: float | None = None, end: float | None = None,
               bucket_s: float = 60.0) -> list[Bucket]:
        """Per-bucket frames, mean, max and last count of a camera in [start, end), buckets aligned to the epoch."""
        bucket_ms = _ms(_finite(bucket_s, "bucket_s"))
        if bucket_ms < 1:
            raise ValueError(f"bucket_s must be at least 0.001, got {bucket_s}")
        t = DETECTIONS.c.received_at
        # times are >= 0 integers, so SQL integer division is floor(time / bucket) on SQLite and PostgreSQL alike
        bucket = t // bucket_ms
        newest_first = sa.func.row_number().over(partition_by=bucket, order_by=(t.desc(), DETECTIONS.c.id.desc()))
        inner = (sa.select(bucket.label("bucket"), DETECTIONS.c.count, newest_first.label("rank"))
                 .where(*_in_range(camera_id, start, end)).subquery())
        query = (sa.select(inner.c.bucket, sa.func.count().label("frames"), sa.func.avg(inner.c.count).label("mean"),
                           sa.func.max(inner.c.count).label("max"),
                           sa.func.max(sa.case((inner.c.rank == 1, inner.c.count))).label("last"))
                 .group_by(inner.c.bucket).order_by(inner.c.bucket))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [Bucket(int(r.bucket) * bucket_ms / 1000, int(r.frames), float(r.mean), int(r.max), int(r.last))
                for r in rows]

    def export_csv(self, camera_id: str, start: float | None = None, end: float | None = None) -> Iterator[str]:
        """CSV lines (header first) of a camera's detections in [start, end), read from the database as they stream."""
        query = (sa.select(DETECTIONS).where(*_in_range(camera_id, start, end))  # validated now, before streaming
                 .order_by(DETECTIONS.c.received_at, DETECTIONS.c.id))
        return self._csv_lines(query)

    def _csv_lines(self, query: sa.Select[Any]) -> Iterator[str]:
        """The CSV lines of `query`'s detections, fetched in batches on a server-side cursor."""
        yield csv_line(CSV_COLUMNS)
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=500).execute(query)
            for row in result:
                d = row._mapping
                yield csv_line([d["id"], _csv_cell(d["camera_id"]), _csv_cell(d["idempotency_key"]),
                                _iso(d["captured_at"]), _iso(d["received_at"]), d["count"],
                                _json(d["boxes"]), _json(d["scores"]), _csv_cell(d["obfuscator_id"]),
                                _csv_cell(d["detector_id"])])

    def prune(self, keep_days: float, now: float | None = None) -> int:
        """Delete detections received more than keep_days ago (retention); returns how many were removed."""
        if _finite(keep_days, "keep_days") < 0:
            raise ValueError(f"keep_days must be >= 0, got {keep_days}")
        # a key pruned here could be counted again, so keep_days must outlast the edge's retry window (minutes)
        cutoff = _ms(time.time() if now is None else _finite(now, "now")) - _ms(keep_days * 86400)
        with _transaction(self.engine, write=True) as conn:
            removed = conn.execute(DETECTIONS.delete().where(DETECTIONS.c.received_at < cutoff)).rowcount
        if removed:
            log.info("count store %s: pruned %d detections older than %g days", self.url, removed, keep_days)
        return int(removed)


def _json(value: Any) -> str:
    """Compact JSON for a CSV cell."""
    return json.dumps(value, separators=(",", ":"))
