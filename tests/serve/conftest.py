"""Fixtures of the service tests: real PETS frames, the default detector, a loopback server with small limits, and
a new empty database per test on SQLite and on PostgreSQL (a throwaway server, see pg_cluster.py)."""

from __future__ import annotations

import os
import subprocess
from typing import Any, Iterator

import pytest
import sqlalchemy as sa

from pg_cluster import PG_URL_ENV, PgCluster, create_database, pg_bindir, unavailable

API_KEY = "test-key-0123456789"


@pytest.fixture(scope="session")
def detector() -> Any:
    """YOLOX-Nano from the shared zoo (the service's default detector)."""
    from silhouette.detectors import create_detector

    return create_detector("yolox_nano")


@pytest.fixture(scope="session")
def server(detector: Any) -> Iterator[Any]:
    """A real uvicorn server on 127.0.0.1 (ephemeral port) with small limits, in a background thread."""
    from silhouette.serve.app import create_app
    from silhouette.serve.server import ServerThread

    app = create_app("yolox_nano", API_KEY, detector=detector, batch_size=4, max_bytes=300_000, max_pixels=1_000_000)
    srv = ServerThread(app).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A superuser URL of a PostgreSQL server: SILHOUETTE_TEST_PG_URL, else a throwaway cluster for this session."""
    given = os.environ.get(PG_URL_ENV)
    if given:
        url = sa.engine.make_url(given)
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        yield url.render_as_string(hide_password=False)
        return
    bindir = pg_bindir()
    if bindir is None:
        unavailable("no initdb and pg_ctl on PATH or in /usr/lib/postgresql/*/bin")
    try:
        cluster = PgCluster(bindir)
    except KeyError:  # pwd.getpwnam: root needs the postgres user, which Debian's package creates
        pytest.fail("the tests run as root but there is no 'postgres' user to run PostgreSQL as", pytrace=False)
    try:
        url = cluster.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        cluster.stop()
        pytest.fail(f"could not start a throwaway PostgreSQL server from {bindir}: {exc}", pytrace=False)
    yield url
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """URL of a new empty database, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'counts.db'}"
    return create_database(request.getfixturevalue("pg_admin_url"))
