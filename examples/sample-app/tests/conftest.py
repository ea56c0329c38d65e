"""Fixtures for the sample service's tests: its release repository, PostgreSQL, Redis, gunicorn."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from testkit.net import free_port, wait_for_port
from testkit.postgres import PG_BIN
from testkit.tools import require_tool

HERE = Path(__file__).resolve().parent
APP_DIR = HERE.parent
VENV_BIN = Path(sys.executable).parent
# postgres_server (a real PostgreSQL cluster) comes from testkit.plugin, like in every suite.


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    server = require_tool("redis-server")
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="sample-redis-"))
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True)
class Releases:
    repo: Path
    shas: dict[str, str]


@pytest.fixture(scope="session")
def releases(tmp_path_factory: pytest.TempPathFactory) -> Releases:
    """The release repository, built once by build_releases.py."""
    dest = tmp_path_factory.mktemp("releases") / "repo"
    out = subprocess.run(
        [sys.executable, str(APP_DIR / "build_releases.py"), str(dest)],
        check=True, capture_output=True, text=True,
    )
    return Releases(dest, json.loads(out.stdout)["releases"])


@dataclass
class Service:
    """One release checked out in its own worktree, its database migrated, served by gunicorn."""

    tree: Path
    env: dict[str, str]
    url: str = ""
    proc: subprocess.Popen[bytes] | None = None

    def alembic(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV_BIN / "alembic"), "-c", "alembic.ini", *args],
            cwd=self.tree, env=self.env, check=True, capture_output=True, text=True,
        )

    def psql(self, query: str) -> str:
        """One query on the service's database, rows as ``a|b`` lines."""
        return subprocess.run(
            [str(PG_BIN / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", self.env["DATABASE_URL"],
             "-c", query],
            check=True, capture_output=True, text=True,
        ).stdout

    def start(self) -> None:
        port = free_port()
        metrics_dir = Path(tempfile.mkdtemp(prefix="sample-metrics-"))
        env = self.env | {"BIND": f"127.0.0.1:{port}", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py"], cwd=self.tree, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{self.url}/version", timeout=1).read()
                return
            time.sleep(0.2)
        raise TimeoutError("gunicorn did not answer /version within 30 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(15)
            self.proc = None


@pytest.fixture
def service_factory(
    releases: Releases, postgres_server: object, redis_url: str, tmp_path: Path
) -> Iterator[object]:
    """service_factory(release, database) -> a started Service; stopped at the end of the test."""
    started: list[Service] = []

    def make(release: str, database: str, *, start: bool = True, migrate: bool = True) -> Service:
        tree = tmp_path / f"tree-{release}-{len(started)}"
        subprocess.run(["git", "clone", "-q", str(releases.repo), str(tree)], check=True)
        subprocess.run(
            ["git", "-c", "advice.detachedHead=false", "checkout", "-q", release], cwd=tree, check=True
        )
        env = {
            "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
            "DATABASE_URL": database,
            "REDIS_URL": redis_url,
            "SERVICE_NAME": "sample-test",
        }
        svc = Service(tree, env)
        if migrate:
            svc.alembic("upgrade", "head")
        if start:
            svc.start()
        started.append(svc)
        return svc

    yield make
    for svc in started:
        svc.stop()
