"""A throwaway PostgreSQL 15 cluster on a free loopback port (trust auth), for a test session."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testkit.net import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str = "postgres"

    def url(self, database: str = "postgres", driver: str = "postgresql") -> str:
        return f"{driver}://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        subprocess.run(
            [str(PG_BIN / "psql"), "-h", self.host, "-p", str(self.port), "-U", self.user,
             "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", f'CREATE DATABASE "{name}"'],
            check=True, capture_output=True, text=True,
        )
        return self.url(name)


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """initdb + pg_ctl start in a temporary directory; stopped and removed on exit."""
    if not (PG_BIN / "initdb").exists():
        pytest.fail("PostgreSQL 15 is not installed: run 'make bootstrap'")
    owner = pwd.getpwnam("postgres")
    base = Path(tempfile.mkdtemp(prefix="sre-pg-"))
    os.chown(base, owner.pw_uid, owner.pw_gid)
    data = base / "data"
    port = free_port()

    def as_postgres(*cmd: str) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *cmd], check=True, capture_output=True, text=True)

    try:
        as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "start",
            "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off",
        )
        yield PostgresServer(host="127.0.0.1", port=port)
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)
