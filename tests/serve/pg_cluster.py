"""A throwaway PostgreSQL server for tests: initdb in a temp folder, unix socket only, deleted when the tests end.

SILHOUETTE_TEST_PG_URL (a superuser URL of a running server) is used instead when set. Without either, tests that
need PostgreSQL are skipped, except under CI=true where they fail: CI must test the PostgreSQL backend.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

PG_URL_ENV = "SILHOUETTE_TEST_PG_URL"
PORT = 5432  # on a private socket folder and with TCP off, the port only names the socket file
INSTALL_HINT = "install PostgreSQL (Debian: apt-get install -y postgresql) or set SILHOUETTE_TEST_PG_URL"


def on_ci() -> bool:
    """True under CI, where a missing PostgreSQL is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def pg_bindir() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<newest>/bin."""
    found = shutil.which("pg_ctl") and shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name.split(".")[0]))
    dirs = [d for d in dirs if Path(d, "initdb").is_file() and Path(d, "pg_ctl").is_file()]
    return Path(dirs[-1]) if dirs else None


class PgCluster:
    """A PostgreSQL cluster in a temporary folder, run as `postgres` when the tests run as root (initdb refuses root)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        # under /tmp, not pytest's tmp_path: the socket path must stay short and the postgres user must reach it
        self.root = Path(tempfile.mkdtemp(prefix="silhouette-pg-"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        """Run a PostgreSQL tool; its output becomes the failure message."""
        proc = subprocess.run([*self.as_user, *args], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed: {proc.stdout[-1000:]}{proc.stderr[-2000:]}{log}")

    def start(self) -> str:
        """initdb, start the server on a unix socket; returns the superuser URL."""
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync")
        settings = {"listen_addresses": "''", "unix_socket_directories": f"'{self.root}'", "port": str(PORT),
                    # a test server: durability off for speed; nothing survives the session anyway
                    "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", "max_connections": "100"}
        with open(self.data / "postgresql.conf", "a") as f:
            f.writelines(f"{k} = {v}\n" for k, v in settings.items())
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        return f"postgresql+psycopg://postgres@/postgres?host={self.root}&port={PORT}"

    def stop(self) -> None:
        """Stop the server at once and delete its folder."""
        if (self.data / "postmaster.pid").exists():
            subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                            "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


def unavailable(reason: str) -> None:
    """Skip the test, or fail it under CI."""
    message = f"PostgreSQL is not available: {reason}; {INSTALL_HINT}"
    if on_ci():
        pytest.fail(message + " (CI=true: the PostgreSQL backend must be tested)", pytrace=False)
    pytest.skip(message)


def create_database(admin_url: str) -> str:
    """A new empty database on the server of `admin_url`; returns its URL."""
    name = f"silhouette_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        engine.dispose()
    return sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
