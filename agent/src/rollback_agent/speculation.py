"""The downgrade's offline SQL, rendered while the preflight reads the database's revision.

Both are an ``alembic`` process each (most of their time is Python importing alembic and the
application's models), and the second needs the first's answer as its starting revision. The
revision the live release runs on is known from its migration scripts, and the database is at it
on a healthy host: the SQL from there is rendered at the same time (``--sql`` never connects to the
database, so this reads and changes nothing). When the database turns out to be elsewhere, the
guess is dropped and the SQL rendered again from the revision read.
"""

from __future__ import annotations

import threading
from types import TracebackType

from rollback_agent import datasafety
from rollback_agent.host import Host
from rollback_agent.steps import Deadline


class Speculation:
    def __init__(self, host: Host, expected: str | None, target: str | None, deadline: Deadline) -> None:
        self.host = host
        self.expected = expected
        self.target = target
        self.deadline = deadline
        self._check: datasafety.DowngradeCheck | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Speculation:
        guess = self.expected and self.target and self.expected != self.target
        if self.host.migrations is not None and guess:
            self._thread = threading.Thread(target=self._render, name="render-downgrade", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread is not None:  # never leave an alembic process behind the preflight
            self._thread.join()

    def _render(self) -> None:
        assert self.host.migrations is not None and self.expected and self.target
        self._check = datasafety.render(
            self.host.migrations, self.expected, self.target, self.deadline.cap(120.0)
        )

    def result(self, live_revision: str, target_revision: str) -> datasafety.DowngradeCheck:
        """The check from ``live_revision`` to ``target_revision``: the guess when it was right."""
        if self._thread is not None:
            self._thread.join()
        if self._check is not None and (live_revision, target_revision) == (self.expected, self.target):
            return self._check
        assert self.host.migrations is not None
        timeout = self.deadline.cap(120.0)
        return datasafety.render(self.host.migrations, live_revision, target_revision, timeout)
