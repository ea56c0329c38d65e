"""The accepted webhook's answer and the rollback process: "the downgrade's preview is recorded".

The answer to the webhook that starts a rollback shows what the database phase found (SQL, objects,
rows, action), which the rollback process records in its preflight, before any change. Instead of
polling the store, the web process hands the rollback process the write end of a pipe
(``rollback.spawn``); the process closes it as soon as the preview is recorded or the preflight is
over (``recorded``), and the kernel closes it when the process ends whatever happens. The answer
waits for that end of file (``wait``): it is woken at once, never by a timer.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time

# Web process: the read end of each spawned rollback process's pipe, by incident id.
_pending: dict[str, int] = {}
_pending_lock = threading.Lock()
# Rollback process: the write end it closes once the preview is recorded (None: nobody waits).
_announce: list[int] = []


def expect(incident_id: str, fd: int) -> None:
    """Web process: the rollback process of ``incident_id`` will close the other end of ``fd``."""
    with _pending_lock:
        old = _pending.pop(incident_id, None)
        _pending[incident_id] = fd
    if old is not None:
        os.close(old)


def forget(incident_id: str) -> None:
    """Web process: nobody will wait for ``incident_id`` any more (its process ended)."""
    with _pending_lock:
        fd = _pending.pop(incident_id, None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def wait(incident_id: str, timeout: float) -> bool:
    """Web process: until the rollback process recorded the preview, ended, or ``timeout`` passed.

    True when it said so (or ended); False on timeout or when no such process was started here.
    """
    with _pending_lock:
        fd = _pending.pop(incident_id, None)
    if fd is None:
        return False
    try:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                return os.read(fd, 64) == b""  # end of file: closed (nothing is ever written)
    finally:
        os.close(fd)


def announce_to(fd: int) -> None:
    """Rollback process: close ``fd`` once the preview is recorded."""
    _announce.append(fd)


def recorded() -> None:
    """Rollback process: the preview is recorded (or there will be none); wakes the answer. Idempotent."""
    while _announce:
        with contextlib.suppress(OSError):
            os.close(_announce.pop())
