"""Fixtures shared by every test suite.

Real components only: the tools and servers come from the Debian packages that
scripts/bootstrap installs. A missing tool fails the test with the command that
installs it; nothing is skipped silently.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def require_tool(name: str) -> str:
    """Absolute path of a command-line tool, or a failure that says how to get it."""
    found = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/sbin:/sbin:/bin")
    if not found:
        pytest.fail(f"{name} is not installed: run 'make bootstrap' (scripts/bootstrap installs it)")
    return found


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_tool("promtool")


@pytest.fixture(scope="session")
def amtool() -> str:
    return require_tool("amtool")


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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL 15 cluster on a free loopback port, trust auth, removed at the end."""
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

    as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    as_postgres(
        str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "start",
        "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off",
    )
    try:
        yield PostgresServer(host="127.0.0.1", port=port)
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)
