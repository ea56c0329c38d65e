"""Real servers for a test: started, waited for until they answer, stopped at the end."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testkit.net import free_port, url_answers, wait_for
from testkit.tools import require_tool


def stop(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it is still there after ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def serving(
    cmd: Sequence[str], log: Path, ready_url: str, *, timeout: float = 30, **popen: Any
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` (output in ``log``) until ``ready_url`` answers 200; stopped on exit.

    Fails with the log when the process exits or does not answer within ``timeout`` seconds.
    """
    with log.open("w") as out:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, **popen)
        try:

            def ready() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"{cmd[0]} exited ({proc.returncode}):\n{log.read_text()}")
                return url_answers(ready_url, timeout=1)

            try:
                wait_for(ready, timeout, f"{ready_url} to answer", 0.1)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{log.read_text()}") from None
            yield proc
        finally:
            stop(proc)


@dataclass(frozen=True)
class RunningAlertmanager:
    url: str
    port: int
    log: Path


@contextlib.contextmanager
def alertmanager(
    config: Path,
    workdir: Path,
    *,
    port: int | None = None,
    cluster: Sequence[str] = (),
    external_url: bool = False,
) -> Iterator[RunningAlertmanager]:
    """Debian's Alertmanager on 127.0.0.1 with ``config``; single node unless ``cluster`` flags are given."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "alertmanager.log"
    cmd = [
        require_tool("prometheus-alertmanager"),
        f"--config.file={config}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        *([f"--web.external-url={url}"] if external_url else []),
        "--log.level=debug",
        *(cluster or ["--cluster.listen-address="]),
    ]
    with serving(cmd, log, f"{url}/-/ready"):
        yield RunningAlertmanager(url, port, log)
