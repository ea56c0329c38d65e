"""Run external commands with a time limit; a command that runs out of time is stopped with its children."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_running: set[subprocess.Popen[str]] = set()
_running_lock = threading.Lock()


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def excerpt(self, limit: int = 800) -> str:
        """The end of the command's output, where errors usually are."""
        text = "\n".join(part.strip() for part in (self.stderr, self.stdout) if part.strip())
        if self.timed_out:
            text = (text + "\n" if text else "") + f"stopped after {self.duration:.1f}s (time limit reached)"
        elif not text:
            text = f"exit status {self.returncode}"
        return text if len(text) <= limit else "..." + text[-limit:]

    def describe(self) -> str:
        return " ".join(self.argv)


def _kill_group(proc: subprocess.Popen[str], grace: float = 3.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            # The leader is gone; make sure nothing of its group is left either.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            return
        except subprocess.TimeoutExpired:
            continue


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
) -> CommandResult:
    """Run ``argv`` (never through a shell) for at most ``timeout`` seconds."""
    started = time.monotonic()
    args = tuple(str(a) for a in argv)
    if timeout <= 0:
        return CommandResult(args, -1, "", "", 0.0, timed_out=True)
    try:
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            text=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: a timeout stops its children too
        )
    except OSError as exc:
        return CommandResult(args, 127, "", f"cannot run {args[0]}: {exc.strerror or exc}", 0.0)
    with _running_lock:
        _running.add(proc)
    try:
        try:
            out, err = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            log.warning("%s: time limit of %.1fs reached, stopping it", args[0], timeout)
            _kill_group(proc)
            out, err = proc.communicate()
            timed_out = True
    finally:
        with _running_lock:
            _running.discard(proc)
    return CommandResult(args, proc.returncode, out or "", err or "", time.monotonic() - started, timed_out)


def stop_all() -> None:
    """Stop every command still running (used when the runner is told to stop)."""
    with _running_lock:
        procs = list(_running)
    for proc in procs:
        _kill_group(proc, grace=2.0)
