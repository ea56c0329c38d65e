"""The state database's WAL copied into the database file by a thread of its own, off the request path.

SQLite checkpoints on the commit that takes the WAL past 1000 pages (``wal_autocheckpoint``): that
webhook's thread copies the pages and syncs the files while it holds the process's write queue, about
every 350-500 webhooks (a duplicate webhook writes 2-3 pages), with two syncs. Measured under
gunicorn (agent README), fewer checkpoints gave the intake more webhooks/s (every 5 s here; every
0.5 s did not help). A served worker turns that off for the connections of its
request threads and checkpoints every ``interval`` seconds here instead (``PASSIVE``: never waits
for readers or writers). Commits are as durable as before: WAL, ``synchronous=NORMAL``; a checkpoint
syncs the WAL, so the commits a power loss can take are now at most ``interval`` old.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

from rollback_agent.state import Store

log = logging.getLogger(__name__)

INTERVAL = 5.0


class Checkpointer:
    def __init__(self, store: Store, interval: float = INTERVAL) -> None:
        self.store = store
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Checkpointer:
        """The store's connections leave checkpoints to this thread from their next use on."""
        self.store.autocheckpoint = False
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="rollback-agent-checkpoint", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.store.autocheckpoint = True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.store.checkpoint()
            except sqlite3.Error as exc:  # a busy or failing checkpoint is tried again next time
                log.warning("checkpoint of %s failed: %s", self.store.path, exc)
