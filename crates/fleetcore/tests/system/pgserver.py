"""A private PostgreSQL for the scale-out tests: `initdb` into a temporary folder and `postgres`
on a free loopback port, run as the `postgres` user when the tests run as root (PostgreSQL
refuses root). test.sh installs the Debian package; where it is missing, `find_bin_dir` returns
None and the tests that need it report themselves skipped with that reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from brokers import HOST, free_port, wait_until


def find_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<v>/bin holding initdb (or $FLEETCORE_TEST_PG_BIN)."""
    if os.environ.get("FLEETCORE_TEST_PG_BIN"):
        return Path(os.environ["FLEETCORE_TEST_PG_BIN"])
    root = Path("/usr/lib/postgresql")
    found = sorted(p / "bin" for p in root.glob("*") if (p / "bin" / "initdb").exists()) \
        if root.exists() else []
    return found[-1] if found else None


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *cmd]
    return cmd


class PostgresServer:
    """One PostgreSQL server; `database(name)` makes a fresh database and returns its URL."""

    def __init__(self, bin_dir: Path):
        self.bin = bin_dir
        # Under /tmp, not pytest's tmp_path: the postgres user must be able to reach it.
        self.dir = Path(tempfile.mkdtemp(prefix="fleetcore-pg-", dir="/tmp"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        self.log_path = self.dir / "postgres.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgres://postgres@{HOST}:{self.port}/postgres"

    def start(self) -> "PostgresServer":
        data = self.dir / "data"
        out = subprocess.run(_as_postgres([str(self.bin / "initdb"), "-U", "postgres",
                                           "--auth=trust", "--no-sync", "-D", str(data)]),
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise AssertionError(f"initdb failed: {out.stderr[-2000:]}")
        self._spawn()
        return self

    def _spawn(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            _as_postgres([str(self.bin / "postgres"), "-D", str(self.dir / "data"),
                          "-p", str(self.port), "-c", f"listen_addresses={HOST}",
                          "-k", str(self.dir), "-c", "fsync=off"]),
            stdout=log, stderr=log)
        wait_until(self.accepting, 30, what=f"PostgreSQL on port {self.port}")

    def accepting(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"postgres exited: {self.log_path.read_text()[-2000:]}")
        return subprocess.run([str(self.bin / "pg_isready"), "-h", HOST, "-p", str(self.port)],
                              capture_output=True).returncode == 0

    def sql(self, statement: str, database: str = "postgres") -> str:
        out = subprocess.run([str(self.bin / "psql"), "-h", HOST, "-p", str(self.port),
                              "-U", "postgres", "-d", database, "-At", "-v", "ON_ERROR_STOP=1",
                              "-c", statement], capture_output=True, text=True)
        if out.returncode != 0:
            raise AssertionError(f"psql {statement!r}: {out.stderr}")
        return out.stdout

    def database(self, name: str) -> str:
        self.sql(f'CREATE DATABASE "{name}"')
        return f"postgres://postgres@{HOST}:{self.port}/{name}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
