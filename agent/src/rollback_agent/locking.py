"""The host-wide operation lock: one rollback or deploy at a time, across workers and processes.

An ``flock`` on ``state_dir/rollback.lock``. The lock belongs to the open file, so a gunicorn
worker can take it, start the background runner with the descriptor inherited, and close its own
copy: the runner then holds the lock until it exits, whatever happens to the worker. When a
process dies (even by ``kill -9``) the kernel releases the lock, which is how a stale "running"
incident is told apart from a live one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any


class LockBusyError(Exception):
    def __init__(self, holder: dict[str, Any] | None) -> None:
        self.holder = holder or {}
        what = self.holder.get("kind", "an operation")
        ident = self.holder.get("id") or ""
        super().__init__(f"{what} {ident} is running (pid {self.holder.get('pid', '?')})".replace("  ", " "))


class OperationLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self, kind: str, ident: str = "") -> OperationLock:
        """Take the lock without waiting; raises LockBusyError with who holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockBusyError(read_holder(self.path)) from None
        self.fd = fd
        self.describe(kind, ident)
        return self

    def describe(self, kind: str, ident: str = "", pid: int | None = None) -> None:
        """Record who holds the lock (read by status and by refused callers)."""
        if self.fd is None:
            return
        info = json.dumps({"kind": kind, "id": ident, "pid": pid or os.getpid(), "since": time.time()})
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, info.encode(), 0)

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
        os.close(self.fd)  # closing the last descriptor of the open file releases the flock
        self.fd = None

    def detach(self) -> None:
        """Close our descriptor without clearing the holder info (a child process keeps the lock)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> OperationLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def adopt(fd: int, path: Path) -> OperationLock:
    """The runner's side of the hand-over: check that the inherited descriptor holds the lock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        raise LockBusyError(read_holder(path)) from exc
    os.set_inheritable(fd, False)
    lock = OperationLock(path)
    lock.fd = fd
    return lock


def is_held(path: Path) -> bool:
    """Whether some process holds the lock, without touching it (reads /proc/locks on Linux)."""
    try:
        info = path.stat()
    except OSError:
        return False
    wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii") as locks:
            for line in locks:
                fields = line.split()
                # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (blocked waiters have "->")
                if "FLOCK" in fields and "->" not in fields and len(fields) >= 6:
                    ident = fields[fields.index("FLOCK") + 4]
                    if ident == wanted:
                        return True
        return False
    except OSError:
        pass
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def read_holder(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        data = json.loads(text) if text.strip() else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
