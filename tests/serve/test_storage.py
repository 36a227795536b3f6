"""The count store on real databases, a SQLite file and a PostgreSQL server: exactly once, restarts, queries, migrations."""

from __future__ import annotations

import csv
import io
import json
import logging
import multiprocessing
import os
import queue
from typing import Any, Callable, Iterator

import pytest
import sqlalchemy as sa

from pg_cluster import create_database
from silhouette.errors import SilhouetteError
from sqlalchemy.exc import IntegrityError

from silhouette.serve.storage import SCHEMA_LATEST, CountStore, Frame, open_engine, schema_version

BOX = [10.0, 20.0, 50.0, 120.0]
T0 = 1_699_999_200.0  # 2023-11-14T22:00:00Z, a boundary of 60 s and 3600 s buckets (unix seconds)

# schema v1 exactly as released, written out so that a change to the v1 migration cannot go unnoticed
V1_DDL = {
    "sqlite": """
        CREATE TABLE detections (id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, camera_id VARCHAR(64) NOT NULL,
            idempotency_key VARCHAR(200), captured_at BIGINT, received_at BIGINT NOT NULL, count INTEGER NOT NULL,
            boxes JSON NOT NULL, scores JSON NOT NULL, obfuscator_id VARCHAR(128), detector_id VARCHAR(128) NOT NULL)
    """,
    "postgresql": """
        CREATE TABLE detections (id BIGSERIAL NOT NULL, camera_id VARCHAR(64) NOT NULL,
            idempotency_key VARCHAR(200), captured_at BIGINT, received_at BIGINT NOT NULL, count INTEGER NOT NULL,
            boxes JSON NOT NULL, scores JSON NOT NULL, obfuscator_id VARCHAR(128), detector_id VARCHAR(128) NOT NULL,
            PRIMARY KEY (id))
    """,
}
V1_COMMON = [
    "CREATE TABLE cameras (id VARCHAR(64) NOT NULL, first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL, "
    "frames BIGINT NOT NULL, PRIMARY KEY (id))",
    "CREATE UNIQUE INDEX uq_detections_camera_key ON detections (camera_id, idempotency_key) "
    "WHERE idempotency_key IS NOT NULL",
    "CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at BIGINT NOT NULL, "
    "description VARCHAR(200) NOT NULL, PRIMARY KEY (version))",
    "INSERT INTO schema_version VALUES (1, 1699999200000, 'detections and cameras')",
    "INSERT INTO detections (camera_id, idempotency_key, captured_at, received_at, count, boxes, scores, "
    "obfuscator_id, detector_id) VALUES ('cam1', 'cam1:frame:1', 1699999199900, 1699999200000, 3, "
    "'[[10.0,20.0,50.0,120.0]]', '[0.9]', 'obf_w025', 'ssdlite')",
    "INSERT INTO cameras VALUES ('cam1', 1699999200000, 1699999200000, 1)",
]


@pytest.fixture
def open_store() -> Iterator[Callable[[str], CountStore]]:
    """Factory of CountStores, all closed after the test."""
    stores: list[CountStore] = []

    def make(url: str) -> CountStore:
        """Open a store that the fixture closes."""
        stores.append(CountStore(url))
        return stores[-1]

    yield make
    for store in stores:
        store.close()


def _race_worker(url: str, camera: str, keys: list[str], barrier: Any, out: Any) -> None:
    """One 'worker process': open the (fresh) database with the others, then record the same keys as they do."""
    try:
        barrier.wait(60)
        store = CountStore(url)  # every process migrates the empty database at the same moment
        barrier.wait(60)
        got = [(key, r.id, r.replayed, r.detection.count) for key in keys
               for r in [store.record(camera, os.getpid() % 97, [], [], "ssdlite", idempotency_key=key)]]
        store.close()
        out.put(got)
    except BaseException as exc:
        barrier.abort()  # the other workers fail now instead of waiting out the barrier's timeout
        out.put(f"worker failed: {exc!r}")
        raise


def test_record_and_replay(db_url: str, open_store: Callable[[str], CountStore]) -> None:
    store = open_store(db_url)
    first = store.record("cam1", 1, [BOX], [0.9], "ssdlite", idempotency_key="cam1:frame:1", captured_at=T0 - 0.25,
                         obfuscator_id="obf_w025", received_at=T0)
    assert not first.replayed and first.id > 0
    assert first.detection.boxes == [BOX] and first.detection.scores == [0.9] and first.detection.captured_at == T0 - 0.25
    again = store.record("cam1", 5, [], [], "other", idempotency_key="cam1:frame:1", received_at=T0 + 9)
    assert again.replayed and again.id == first.id
    assert again.detection == first.detection  # the FIRST result, not the retry's
    other_camera = store.record("cam2", 2, [BOX, BOX], [0.8, 0.7], "ssdlite", idempotency_key="cam1:frame:1")
    assert not other_camera.replayed and other_camera.id != first.id  # keys are per camera
    ids = {store.record("cam1", 4, [], [], "ssdlite", received_at=T0 + k).id for k in (1, 2)}
    assert len(ids) == 2  # without a key every frame counts
    cams = {c.id: c for c in store.cameras()}
    assert cams["cam1"].frames == 3 and cams["cam2"].frames == 1  # the replay was not counted
    assert cams["cam1"].first_seen == T0 and cams["cam1"].last_seen == T0 + 2 and cams["cam1"].last_count == 4
    assert store.latest("cam1").received_at == T0 + 2 and store.latest("nobody") is None
    with pytest.raises(ValueError):
        store.record("cam1", 1, [BOX], [], "ssdlite")  # a box without a score is refused before any SQL


def test_processes_racing_on_one_key_store_one_row(db_url: str, open_store: Callable[[str], CountStore]) -> None:
    """Three processes open a fresh database together, then record the same 25 keys at the same time."""
    ctx = multiprocessing.get_context("fork")  # the workers need this module, which only fork carries over
    keys = [f"cam-race:frame:{i}" for i in range(25)]
    barrier, out = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_race_worker, args=(db_url, "cam-race", keys, barrier, out)) for _ in range(3)]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=120) for _ in procs]
    except queue.Empty:
        pytest.fail("a racing worker did not answer within 120 s")
    finally:
        for p in procs:
            p.join(30)
    assert all(isinstance(r, list) for r in results), results
    assert [p.exitcode for p in procs] == [0, 0, 0]
    for i, key in enumerate(keys):
        answers = [r[i] for r in results]
        assert len({a[1] for a in answers}) == 1, f"{key}: workers got different rows {answers}"
        assert sum(not a[2] for a in answers) == 1, f"{key}: not exactly one first writer {answers}"
        assert len({a[3] for a in answers}) == 1, f"{key}: replays did not return the first count {answers}"
    store = open_store(db_url)
    assert [c.frames for c in store.cameras()] == [len(keys)]
    assert sum(1 for _ in store.export_csv("cam-race")) == 1 + len(keys)
    assert schema_version(store.engine) == SCHEMA_LATEST


def test_survives_restart(db_url: str) -> None:
    with CountStore(db_url) as store:
        first = store.record("cam1", 2, [BOX, BOX], [0.9, 0.5], "ssdlite", idempotency_key="k1", received_at=T0)
    with CountStore(db_url) as store:  # a restarted service still answers the retry with the first result
        again = store.record("cam1", 7, [], [], "ssdlite", idempotency_key="k1")
        assert again.replayed and again.detection == first.detection
        assert store.latest("cam1") == first.detection
        assert [(c.id, c.frames) for c in store.cameras()] == [("cam1", 1)]


def test_record_many_stores_a_request_all_or_nothing(db_url: str, open_store: Callable[[str], CountStore]) -> None:
    """The images of one request: one transaction, one fingerprint; a retry gets the first rows, a partial overlap nothing."""
    store = open_store(db_url)
    sha = "ab" * 32
    first = store.record_many("cam1", [Frame(1, [BOX], [0.9]), Frame(0, [], [])], "ssdlite", keys=["k", "k#1"],
                              request_sha256=sha, received_at=T0)
    assert [r.replayed for r in first] == [False, False] and first[0].detection.request_sha256 == sha
    again = store.record_many("cam1", [Frame(5, [], [])] * 2, "other", keys=["k", "k#1"])
    assert [r.replayed for r in again] == [True, True] and [r.detection for r in again] == [r.detection for r in first]
    with pytest.raises(IntegrityError):
        store.record_many("cam1", [Frame(2, [], [])] * 2, "ssdlite", keys=["new", "k#1"])  # one key taken
    assert store.find("cam1", ["new", "k", "nope"]).keys() == {"k"}  # the free key was not stored either
    assert [(c.frames, c.last_count, c.first_seen) for c in store.cameras()] == [(2, 0, T0)]
    with pytest.raises(ValueError):
        store.record_many("cam1", [Frame(1, [], [])], "ssdlite", keys=["a", "b"])


def test_in_memory_store_serves_threads_and_is_private() -> None:
    import threading

    store, other = CountStore.in_memory(), CountStore.in_memory()
    threads = [threading.Thread(target=lambda i=i: [store.record(f"cam{i}", n, [], [], "d", idempotency_key=str(n % 10))
                                                   for n in range(40)]) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [(c.id, c.frames) for c in store.cameras()] == [(f"cam{i}", 10) for i in range(4)]
    assert other.cameras() == [] and store.memory and store.url == "sqlite://"
    store.close()  # the one connection is the database: closing keeps it
    assert len(store.recent("cam0", 100)) == 10


def test_two_instances_share_one_database(db_url: str, open_store: Callable[[str], CountStore]) -> None:
    worker_a, worker_b = open_store(db_url), open_store(db_url)  # two uvicorn workers
    first = worker_a.record("cam1", 3, [], [], "ssdlite", idempotency_key="k1", received_at=T0)
    assert worker_b.record("cam1", 9, [], [], "ssdlite", idempotency_key="k1").id == first.id
    worker_b.record("cam1", 4, [], [], "ssdlite", idempotency_key="k2", received_at=T0 + 1)
    assert worker_a.latest("cam1").count == 4
    assert [(c.frames, c.last_count) for c in worker_a.cameras()] == [(2, 4)]


def test_bucketed_counts(db_url: str, open_store: Callable[[str], CountStore]) -> None:
    store = open_store(db_url)
    # (seconds after T0, count); inserted out of time order: 'last' is the latest received, not the latest inserted
    for dt, count in [(5, 2), (50, 6), (30, 1), (61, 3), (119.999, 5), (185, 0), (3600, 9)]:
        store.record("cam1", count, [], [], "ssdlite", received_at=T0 + dt)
    store.record("cam2", 40, [], [], "ssdlite", received_at=T0 + 10)  # another camera never leaks in
    buckets = store.counts("cam1", T0, T0 + 3600, bucket_s=60)
    got = [(b.start - T0, b.frames, round(b.mean, 6), b.max, b.last) for b in buckets]
    assert got == [(0, 3, 3.0, 6, 6), (60, 2, 4.0, 5, 5), (180, 1, 0.0, 0, 0)]  # end is exclusive; gaps left out
    hourly = store.counts("cam1", bucket_s=3600)
    assert [(b.start - T0, b.frames, b.max, b.last) for b in hourly] == [(0, 6, 6, 0), (3600, 1, 9, 9)]
    assert store.counts("cam1", T0 + 7200, T0 + 9000) == []
    with pytest.raises(ValueError):
        store.counts("cam1", bucket_s=0)


def test_csv_export(db_url: str, open_store: Callable[[str], CountStore]) -> None:
    store = open_store(db_url)
    store.record("cam1", 1, [BOX], [0.75], "ssdlite", idempotency_key="=HYPERLINK(1)", captured_at=T0 - 1,
                 obfuscator_id="obf_w025", received_at=T0)
    store.record("cam1", 0, [], [], "ssdlite", received_at=T0 + 30)
    store.record("cam1", 2, [], [], "ssdlite", received_at=T0 + 90)
    store.record("cam2", 5, [], [], "ssdlite", received_at=T0 + 10)
    lines = store.export_csv("cam1", T0, T0 + 60)
    assert iter(lines) is lines  # an iterator, for a streaming response
    text = list(lines)
    assert text[0].startswith("id,camera_id,idempotency_key,captured_at,received_at,count,")
    rows = list(csv.DictReader(io.StringIO("".join(text))))
    assert [r["count"] for r in rows] == ["1", "0"]
    assert rows[0]["received_at"] == "2023-11-14T22:00:00.000Z" and rows[0]["captured_at"] == "2023-11-14T21:59:59.000Z"
    assert json.loads(rows[0]["boxes"]) == [BOX] and json.loads(rows[0]["scores"]) == [0.75]
    assert rows[0]["idempotency_key"] == "'=HYPERLINK(1)"  # a spreadsheet shows it instead of evaluating it
    assert rows[0]["obfuscator_id"] == "obf_w025" and rows[1]["idempotency_key"] == ""
    assert len(list(store.export_csv("cam1"))) == 4
    with pytest.raises(ValueError):
        store.export_csv("cam1", T0 + 10, T0)  # refused when called, not halfway through a response


def test_retention(db_url: str, open_store: Callable[[str], CountStore]) -> None:
    store = open_store(db_url)
    day = 86400.0
    for age_days in (40, 31, 29, 1):
        store.record("cam1", int(age_days), [], [], "ssdlite", idempotency_key=f"k{age_days}", received_at=T0 - age_days * day)
    assert store.prune(keep_days=30, now=T0) == 2
    assert store.prune(keep_days=30, now=T0) == 0
    assert [r.split(",")[5] for r in list(store.export_csv("cam1"))[1:]] == ["29", "1"]
    assert [(c.frames, c.last_count) for c in store.cameras()] == [(4, 1)]  # lifetime frames stay
    assert store.prune(keep_days=0, now=T0) == 2
    assert store.cameras()[0].last_count is None and store.latest("cam1") is None
    with pytest.raises(ValueError):
        store.prune(keep_days=-1)


def _schema(engine: sa.Engine) -> dict[str, Any]:
    """Tables, columns and indexes as the database reports them."""
    inspector = sa.inspect(engine)
    return {t: ([(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(t)],
                sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(t)))
            for t in sorted(inspector.get_table_names())}


def test_upgrade_from_v1_keeps_data(db_url: str, tmp_path: Any) -> None:
    engine = open_engine(db_url)
    try:
        with engine.begin() as conn:  # a v1 database as an older silhouette left it, with one frame
            for statement in [V1_DDL[engine.dialect.name], *V1_COMMON]:
                conn.exec_driver_sql(statement)
        assert schema_version(engine) == 1
        assert "ix_detections_camera_received" not in str(_schema(engine))
    finally:
        engine.dispose()
    with CountStore(db_url) as store:
        assert schema_version(store.engine) == SCHEMA_LATEST == 3
        upgraded = _schema(store.engine)
        assert ("ix_detections_camera_received", ("camera_id", "received_at"), False) in upgraded["detections"][1]
        assert ("ix_detections_received", ("received_at",), False) in upgraded["detections"][1]  # v3: prune by time
        old = store.latest("cam1")
        assert (old.count, old.boxes, old.scores, old.received_at) == (3, [BOX], [0.9], T0)
        assert old.request_sha256 is None  # v3's column on a row stored before it
        assert old.captured_at == pytest.approx(T0 - 0.1, abs=1e-6)
        assert store.record("cam1", 8, [], [], "ssdlite", idempotency_key="cam1:frame:1").id == old.id
        assert store.record("cam1", 8, [], [], "ssdlite", idempotency_key="cam1:frame:2").detection.count == 8
        assert [(c.frames, c.last_count) for c in store.cameras()] == [(2, 8)]
    fresh_url = f"sqlite:///{tmp_path / 'fresh.db'}" if db_url.startswith("sqlite") else None
    if fresh_url:  # an upgraded database has exactly the schema of a new one
        with CountStore(fresh_url) as fresh:
            assert _schema(fresh.engine) == upgraded


def test_newer_schema_and_foreign_database_refused(db_url: str) -> None:
    with CountStore(db_url) as store, store.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO schema_version VALUES (99, 0, 'from the future')")
    with pytest.raises(SilhouetteError, match=r"--db .*schema v99, newer than this silhouette's v3; upgrade silhouette"):
        CountStore(db_url)
    engine = open_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE schema_version")
    finally:
        engine.dispose()
    with pytest.raises(SilhouetteError, match="no silhouette schema_version; give a new database"):
        CountStore(db_url)


def test_no_column_can_hold_images(db_url: str, open_store: Callable[[str], CountStore]) -> None:
    store = open_store(db_url)
    columns = {t: [c[0] for c in cols] for t, (cols, _) in _schema(store.engine).items()}
    assert columns == {
        "cameras": ["id", "first_seen", "last_seen", "frames"],
        "detections": ["id", "camera_id", "idempotency_key", "captured_at", "received_at", "count", "boxes", "scores",
                       "obfuscator_id", "detector_id", "request_sha256"],
        "schema_version": ["version", "applied_at", "description"],
    }
    types = {str(c[1]).upper() for cols, _ in _schema(store.engine).values() for c in cols}
    assert not {"BLOB", "BYTEA", "LARGEBINARY"} & types, types
    for boxes, scores in [([b"\x89PNG"], [0.5]), ([], b"\x89PNG\r\n\x1a\n")]:  # bytes iterate as numbers
        with pytest.raises(ValueError):
            store.record("cam1", 1, boxes, scores, "ssdlite")  # type: ignore[arg-type]


def test_sqlite_shares_the_file_between_workers(tmp_path: Any, open_store: Callable[[str], CountStore]) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'counts.db'}")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"  # readers never block the writer
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000  # writers wait their turn


@pytest.mark.parametrize("url, expected", [
    ("not a url", "is not a database URL"),
    ("postgresql://alice:s3cret-pw@db:notaport/counts", "is not a database URL"),
    ("mysql://alice:s3cret-pw@db/counts", "'mysql' is not supported; use SQLite or PostgreSQL"),
    ("sqlite://", "in-memory SQLite database is lost on restart"),
    ("sqlite:////nonexistent-folder/counts.db", "folder /nonexistent-folder does not exist; create it"),
    ("postgresql://alice:s3cret-pw@127.0.0.1:1/counts", "cannot open the database (connection"),
])
def test_bad_url_is_one_line_naming_db(url: str, expected: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SilhouetteError) as err:
        CountStore(url)
    message = str(err.value)
    assert message.startswith("--db ") and expected in message and "\n" not in message
    assert "s3cret-pw" not in message and "s3cret-pw" not in caplog.text


def test_unreadable_sqlite_file(tmp_path: Any) -> None:
    path = tmp_path / "counts.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SilhouetteError, match=r"^--db sqlite:///.*cannot open the database \(.*\); check that it is a SQLite"):
        CountStore(f"sqlite:///{path}")


def test_password_never_logged(pg_admin_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # the test server trusts its socket, so the password is accepted and ignored: only where it shows up matters
    url = sa.engine.make_url(create_database(pg_admin_url)).set(password="s3cret-pw")
    with CountStore(url.render_as_string(hide_password=False)) as store:
        store.record("cam1", 1, [], [], "ssdlite", idempotency_key="k")
        store.record("cam1", 1, [], [], "ssdlite", idempotency_key="k")
        store.prune(0, now=T0 + 10**9)
        shown = [repr(store), store.url, str(store.engine.url), repr(store.engine)]
    assert "s3cret-pw" not in caplog.text and "count store postgresql+psycopg://postgres:***@" in caplog.text
    assert not [s for s in shown if "s3cret-pw" in s]
