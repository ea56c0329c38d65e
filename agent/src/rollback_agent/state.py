"""Persistent state in SQLite (WAL): webhooks and decisions, incidents with phases, the deploy ledger.

Several processes use the file at once (gunicorn workers, the background rollback runner, the
CLI); each operation opens its own short connection. Tables are pruned to the sizes set in
``retention`` so the file stays bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rollback_agent.config import RetentionConfig
from rollback_agent.limits import cap

SCHEMA_VERSION = 1

# Incident statuses. The last four are the results of a rollback that ran.
RUNNING = "running"
BLOCKED = "blocked"
DRY_RUN = "dry_run"
SUCCESS = "success"
FAILED = "failed"
TIMED_OUT = "timed_out"
INTERRUPTED = "interrupted"
# A rollback that waited for an earlier wave of the fleet and stopped there: nothing changed.
ABORTED = "aborted"
EXECUTED = (RUNNING, SUCCESS, FAILED, TIMED_OUT, INTERRUPTED)
RESULTS = (SUCCESS, FAILED, TIMED_OUT, INTERRUPTED, ABORTED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS webhooks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    remote TEXT, receiver TEXT, group_key TEXT, alert_count INTEGER NOT NULL,
    status TEXT NOT NULL, incident_id TEXT, reason TEXT, decisions TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS handled_alerts (
    fingerprint TEXT NOT NULL, sha TEXT NOT NULL, incident_id TEXT, status TEXT NOT NULL,
    decided_at REAL NOT NULL, PRIMARY KEY (fingerprint, sha)
);
CREATE INDEX IF NOT EXISTS handled_alerts_time ON handled_alerts (decided_at);
CREATE TABLE IF NOT EXISTS incidents (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    created_at REAL NOT NULL,
    alert_name TEXT, fingerprint TEXT, trigger_id TEXT, confidence TEXT, reason TEXT,
    status TEXT NOT NULL, phase TEXT, progress INTEGER NOT NULL DEFAULT 0,
    from_sha TEXT, to_sha TEXT, from_revision TEXT, to_revision TEXT,
    started_at REAL, ended_at REAL, failed_step TEXT, error TEXT,
    runner_pid INTEGER, detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS incidents_status ON incidents (status);
CREATE TABLE IF NOT EXISTS phases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    name TEXT NOT NULL, progress INTEGER NOT NULL,
    started_at REAL NOT NULL, ended_at REAL, status TEXT NOT NULL, detail TEXT
);
CREATE INDEX IF NOT EXISTS phases_incident ON phases (incident_id);
CREATE TABLE IF NOT EXISTS deploys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    sha TEXT NOT NULL, ref TEXT, revision TEXT,
    started_at REAL NOT NULL, deployed_at REAL,
    outcome TEXT NOT NULL, previous_sha TEXT, incident_id TEXT, detail TEXT
);
CREATE INDEX IF NOT EXISTS deploys_sha ON deploys (sha);
CREATE TABLE IF NOT EXISTS bad_releases (
    sha TEXT PRIMARY KEY, marked_at REAL NOT NULL, incident_id TEXT, reason TEXT
);
CREATE TABLE IF NOT EXISTS alert_instances (
    fingerprint TEXT NOT NULL, starts_at TEXT NOT NULL, starts_ts REAL,
    alertname TEXT NOT NULL, trigger_id TEXT, confidence TEXT,
    decision TEXT NOT NULL, role TEXT, incident_id TEXT, reason TEXT, release_sha TEXT,
    decided_at REAL NOT NULL, resolved_at REAL,
    PRIMARY KEY (fingerprint, starts_at)
);
CREATE INDEX IF NOT EXISTS alert_instances_incident ON alert_instances (incident_id);
CREATE INDEX IF NOT EXISTS alert_instances_decision ON alert_instances (decision);
CREATE TABLE IF NOT EXISTS verifications (
    incident_id TEXT PRIMARY KEY, state TEXT NOT NULL, started_at REAL NOT NULL, deadline REAL NOT NULL,
    ended_at REAL
);
CREATE TABLE IF NOT EXISTS slack_threads (incident_id TEXT PRIMARY KEY, ts TEXT NOT NULL);
"""


_WRITERS = threading.RLock()
AUTOCHECKPOINT_PAGES = 1000  # SQLite's default wal_autocheckpoint, kept outside a served worker


def _now() -> float:
    return time.time()


def new_incident_id() -> str:
    """``INC-<date>-<time>-<64 random bits>``: unique without coordination between processes."""
    return time.strftime("INC-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(8)


class IncidentIdTakenError(Exception):
    """The incident id exists already (a collision): nothing was recorded; try again."""


@dataclass(frozen=True)
class Deploy:
    """One entry of the deploy ledger (a deploy, or a rollback's switch of the code)."""

    id: int
    kind: str
    sha: str
    ref: str | None
    revision: str | None
    started_at: float
    deployed_at: float | None
    outcome: str
    previous_sha: str | None
    incident_id: str | None
    detail: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Phase:
    """One phase of a rollback, with its output."""

    name: str
    progress: int
    started_at: float
    ended_at: float | None
    status: str
    detail: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Incident:
    """An incident: a decision that was recorded (blocked, dry run) or a rollback with its phases.

    ``as_dict()`` is the JSON the API answers; ``incident["key"]`` reads the same values.
    """

    id: str
    source: str
    created_at: float
    alert_name: str | None
    fingerprint: str | None
    trigger_id: str | None
    confidence: str | None
    reason: str | None
    status: str
    phase: str | None
    progress: int
    from_sha: str | None
    to_sha: str | None
    from_revision: str | None
    to_revision: str | None
    started_at: float | None
    ended_at: float | None
    failed_step: str | None
    error: str | None
    runner_pid: int | None
    detail: dict[str, Any] = field(default_factory=dict)
    phases: tuple[Phase, ...] = ()

    @property
    def duration(self) -> float | None:
        started, ended = self.started_at, self.ended_at
        return round(ended - started, 3) if started and ended else None

    @property
    def result(self) -> str | None:
        return self.status if self.status in RESULTS else None

    def as_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "phases"}
        data["duration"] = self.duration
        data["result"] = self.result
        data["phases"] = [p.as_dict() for p in self.phases]
        return data

    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]


@dataclass(frozen=True)
class AlertInstance:
    """One firing of one alert: (fingerprint, startsAt), decided once for ever."""

    fingerprint: str
    starts_at: str
    starts_ts: float | None
    alertname: str
    trigger_id: str | None
    confidence: str | None
    decision: str  # accepted, blocked, dry_run, attached, ignored, waiting, cancelled
    role: str | None  # trigger or attached, when the instance belongs to an incident
    incident_id: str | None
    reason: str | None
    release_sha: str | None
    decided_at: float
    resolved_at: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Verification:
    """Whether a successful rollback cleared its alerts: pending, confirmed or not_confirmed."""

    incident_id: str
    state: str
    started_at: float
    deadline: float
    ended_at: float | None


@dataclass(frozen=True)
class Handled:
    """An alert already decided against a deployed release (deduplication)."""

    incident_id: str | None
    status: str


class Store:
    def __init__(self, path: Path, retention: RetentionConfig | None = None) -> None:
        self.path = path
        self.retention = retention or RetentionConfig()
        self._ready = False
        self._connections: dict[tuple[int, int], sqlite3.Connection] = {}
        self._autocheckpoint_pages: dict[tuple[int, int], int] = {}  # as set on each connection
        # False in a served worker, whose Checkpointer thread copies the WAL (checkpoints.py).
        self.autocheckpoint = True

    # --- plumbing ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, opened once per process and thread.

        Kept open on purpose: closing the last connection to a WAL database checkpoints and
        removes the WAL file, which would cost milliseconds on every webhook.
        """
        if not self._ready:
            self.initialize()
        key = (os.getpid(), threading.get_ident())
        conn = self._connections.get(key)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=15.0, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._connections[key] = conn
        # Set on every use, not only when opened: a thread's identifier is reused by a later thread,
        # which then gets the connection opened before the setting changed.
        pages = AUTOCHECKPOINT_PAGES if self.autocheckpoint else 0
        if self._autocheckpoint_pages.get(key) != pages:
            conn.execute(f"PRAGMA wal_autocheckpoint={pages}")
            self._autocheckpoint_pages[key] = pages
        yield conn

    def close(self) -> None:
        for key, conn in list(self._connections.items()):
            if key[0] == os.getpid():
                conn.close()
            self._connections.pop(key, None)
            self._autocheckpoint_pages.pop(key, None)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        # Threads of one process (gthread workers) queue here, not in SQLite's busy handler, which
        # sleeps in growing steps: a write waits for the one before it, not for a timer.
        with _WRITERS, self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextlib.contextmanager
    def single_write(self) -> Iterator[sqlite3.Connection]:
        """For ONE statement, which SQLite runs as its own transaction (begun, written and committed,
        as durable as ``transaction``'s) inside one call: the write lock is never held while this
        thread waits for the GIL between statements, as BEGIN / INSERT / COMMIT would."""
        with _WRITERS, self.connect() as conn:
            yield conn

    def initialize(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        old_umask = os.umask(0o027)
        try:
            conn = sqlite3.connect(self.path, timeout=15.0, isolation_level=None)
        finally:
            os.umask(old_umask)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot switch {self.path} to WAL mode (got {mode})")
            conn.executescript(_SCHEMA)
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            version = int(conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise sqlite3.OperationalError(
                    f"{self.path} was written by a newer agent (schema {version} > {SCHEMA_VERSION})"
                )
        finally:
            conn.close()
        self._ready = True

    def checkpoint(self) -> tuple[int, int, int]:
        """Copy the WAL into the database (``PASSIVE``): (busy, WAL frames, frames copied)."""
        with self.connect() as conn:
            busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(busy), int(frames), int(copied)

    def journal_mode(self) -> str:
        with self.connect() as conn:
            return str(conn.execute("PRAGMA journal_mode").fetchone()[0])

    def counts(self) -> dict[str, int]:
        with self.connect() as conn:
            return {
                table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
                for table in ("webhooks", "handled_alerts", "incidents", "phases", "deploys", "bad_releases")
            }

    # --- webhooks and decisions -----------------------------------------------------------------
    def record_webhook(
        self,
        *,
        remote: str | None,
        receiver: str | None,
        group_key: str | None,
        alert_count: int,
        status: str,
        incident_id: str | None,
        reason: str,
        decisions: list[dict[str, Any]],
    ) -> int:
        blob = json.dumps(decisions)[:16384]
        with self.single_write() as conn:  # the hot path of the intake: one statement, one commit
            cur = conn.execute(
                "INSERT INTO webhooks (received_at, remote, receiver, group_key, alert_count, status,"
                " incident_id, reason, decisions) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    _now(),
                    remote,
                    cap(receiver or ""),
                    cap(group_key or ""),
                    alert_count,
                    status,
                    incident_id,
                    cap(reason),
                    blob,
                ),
            )
            row_id = int(cur.lastrowid or 0)
        keep = self.retention.webhooks
        if row_id % 50 == 0:  # pruned every 50 rows: bounded at keep + 50, not a scan per webhook
            with self.transaction() as conn:
                conn.execute("DELETE FROM webhooks WHERE id <= ?", (row_id - keep,))
                conn.execute(
                    "DELETE FROM handled_alerts WHERE rowid IN (SELECT rowid FROM handled_alerts"
                    " ORDER BY decided_at DESC LIMIT -1 OFFSET ?)",
                    (keep,),
                )
        return row_id

    def recent_webhooks(self, limit: int = 20) -> list[dict[str, Any]]:
        with self.connect() as conn:
            rows = conn.execute("SELECT * FROM webhooks ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        out = []
        for row in rows:
            item = dict(row)
            item["decisions"] = json.loads(item["decisions"]) if item["decisions"].endswith("]") else []
            out.append(item)
        return out

    def handled(self, fingerprint: str, sha: str) -> Handled | None:
        with self.connect() as conn:
            row = conn.execute(
                "SELECT incident_id, status FROM handled_alerts WHERE fingerprint=? AND sha=?",
                (fingerprint, sha),
            ).fetchone()
        return Handled(row["incident_id"], row["status"]) if row else None

    @staticmethod
    def mark_handled(
        conn: sqlite3.Connection, fingerprints: list[str], sha: str, incident_id: str, status: str
    ) -> None:
        conn.executemany(
            "INSERT OR IGNORE INTO handled_alerts (fingerprint, sha, incident_id, status, decided_at)"
            " VALUES (?,?,?,?,?)",
            [(fp, sha, incident_id, status, _now()) for fp in fingerprints],
        )

    # --- incidents --------------------------------------------------------------------------------
    def create_incident(
        self,
        conn: sqlite3.Connection,
        *,
        incident_id: str,
        source: str,
        status: str,
        reason: str,
        alert_name: str | None = None,
        fingerprint: str | None = None,
        trigger_id: str | None = None,
        confidence: str | None = None,
        from_sha: str | None = None,
        to_sha: str | None = None,
        from_revision: str | None = None,
        to_revision: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        now = _now()
        ended = None if status == RUNNING else now
        conn.execute(
            "INSERT INTO incidents (id, source, created_at, alert_name, fingerprint, trigger_id, confidence,"
            " reason, status, phase, progress, from_sha, to_sha, from_revision, to_revision, started_at,"
            " ended_at, detail) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                incident_id,
                source,
                now,
                alert_name,
                fingerprint,
                trigger_id,
                confidence,
                cap(reason, 2048),
                status,
                "initiated" if status == RUNNING else None,
                0,
                from_sha,
                to_sha,
                from_revision,
                to_revision,
                now if status == RUNNING else None,
                ended,
                json.dumps(detail or {}),
            ),
        )
        keep = self.retention.incidents
        conn.execute(
            "DELETE FROM incidents WHERE status != 'running'"
            " AND coalesce(json_extract(detail, '$.stuck'), 0) != 1"
            " AND seq <= (SELECT max(seq) FROM incidents) - ?",
            (keep,),
        )

    def open_incident(
        self,
        incident_id: str,
        *,
        handled: tuple[list[str], str] | None = None,
        instances: list[AlertInstance] | None = None,
        bad_reason: str | None = None,
        **fields: Any,
    ) -> Incident:
        """The one way an incident is created, in one transaction.

        ``fields``: the keywords of ``create_incident``.
        ``handled``: (fingerprints, dedup key) recorded as decided by this incident.
        ``instances``: the alert instances this incident decides (recorded in the same transaction).
        ``bad_reason``: mark ``from_sha`` bad (a rollback that is going to run).
        """
        try:
            with self.transaction() as conn:
                self.create_incident(conn, incident_id=incident_id, **fields)
                if handled is not None:
                    self.mark_handled(conn, handled[0], handled[1], incident_id, fields["status"])
                if instances:
                    self.put_instances(conn, instances)
                if bad_reason is not None and fields.get("from_sha"):
                    self.mark_bad(conn, fields["from_sha"], incident_id, bad_reason)
        except sqlite3.IntegrityError as exc:
            if "incidents.id" in str(exc):
                raise IncidentIdTakenError(f"incident id {incident_id} exists already") from None
            raise
        created = self.incident(incident_id)
        assert created is not None
        return created

    def update_incident(self, incident_id: str, **fields: Any) -> None:
        if not fields:
            return
        if "detail" in fields and not isinstance(fields["detail"], str):
            fields["detail"] = json.dumps(fields["detail"])
        cols = ", ".join(f"{k}=?" for k in fields)
        with self.transaction() as conn:
            conn.execute(
                f"UPDATE incidents SET {cols} WHERE id=?",  # noqa: S608 - column names are ours
                (*fields.values(), incident_id),
            )

    def merge_detail(self, incident_id: str, **values: Any) -> None:
        """Set keys of an incident's ``detail`` (read and written in one transaction)."""
        with self.transaction() as conn:
            row = conn.execute("SELECT detail FROM incidents WHERE id=?", (incident_id,)).fetchone()
            if row is None:
                return
            detail = json.loads(row["detail"] or "{}")
            detail.update(values)
            conn.execute("UPDATE incidents SET detail=? WHERE id=?", (json.dumps(detail), incident_id))

    def stuck_incidents(self) -> list[Incident]:
        """Incidents that left the host inconsistent and were not resolved by a person yet."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT id FROM incidents WHERE json_extract(detail, '$.stuck') = 1 ORDER BY seq"
            ).fetchall()
        found = [self.incident(r["id"]) for r in rows]
        return [i for i in found if i is not None]

    def incident(self, incident_id: str) -> Incident | None:
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM incidents WHERE id=?", (incident_id,)).fetchone()
            if row is None:
                return None
            phases = conn.execute(
                "SELECT * FROM phases WHERE incident_id=? ORDER BY id", (incident_id,)
            ).fetchall()
        return _incident(row, phases)

    def incidents(self, limit: int = 20, statuses: tuple[str, ...] | None = None) -> list[Incident]:
        query = "SELECT * FROM incidents"
        args: list[Any] = []
        if statuses:
            query += f" WHERE status IN ({','.join('?' * len(statuses))})"
            args += list(statuses)
        query += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        with self.connect() as conn:
            rows = conn.execute(query, args).fetchall()
            out = []
            for row in rows:
                phases = conn.execute(
                    "SELECT * FROM phases WHERE incident_id=? ORDER BY id", (row["id"],)
                ).fetchall()
                out.append(_incident(row, phases))
        return out

    def running_incidents(self) -> list[Incident]:
        return self.incidents(limit=100, statuses=(RUNNING,))

    def last_executed(self) -> Incident | None:
        found = self.incidents(limit=1, statuses=EXECUTED)
        return found[0] if found else None

    def executed_since(self, since: float) -> int:
        with self.connect() as conn:
            return int(
                conn.execute(
                    "SELECT count(*) FROM incidents WHERE started_at >= ?"  # noqa: S608
                    f" AND status IN ({','.join('?' * len(EXECUTED))})",
                    (since, *EXECUTED),
                ).fetchone()[0]
            )

    def typical_duration(self) -> float | None:
        """Median duration of the last successful rollbacks (for the ETA in notifications)."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT ended_at - started_at FROM incidents WHERE status='success' AND ended_at IS NOT NULL"
                " ORDER BY seq DESC LIMIT 9"
            ).fetchall()
        values = sorted(float(r[0]) for r in rows)
        return values[len(values) // 2] if values else None

    def start_phase(self, incident_id: str, name: str, progress: int) -> int:
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO phases (incident_id, name, progress, started_at, status) VALUES (?,?,?,?,?)",
                (incident_id, name, progress, _now(), RUNNING),
            )
            conn.execute("UPDATE incidents SET phase=?, progress=? WHERE id=?", (name, progress, incident_id))
            return int(cur.lastrowid or 0)

    def add_phase_detail(self, phase_id: int, text: str) -> None:
        """Append a line to a phase's output."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE phases SET detail = COALESCE(detail || char(10), '') || ? WHERE id=?",
                (text[:1000], phase_id),
            )

    def end_phase(self, phase_id: int, status: str, detail: str = "") -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE phases SET ended_at=?, status=?,"
                " detail=CASE WHEN ?='' THEN detail ELSE COALESCE(detail || char(10), '') || ? END"
                " WHERE id=?",
                (_now(), status, detail[:4000], detail[:4000], phase_id),
            )

    def finish_incident(
        self,
        incident_id: str,
        status: str,
        *,
        progress: int | None = None,
        failed_step: str | None = None,
        error: str | None = None,
    ) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE phases SET ended_at=?, status=? WHERE incident_id=? AND status='running'",
                (_now(), status, incident_id),
            )
            conn.execute(
                "UPDATE incidents SET status=?, ended_at=?, failed_step=?, error=?,"
                " progress=COALESCE(?, progress) WHERE id=?",
                (status, _now(), failed_step, (error or "")[:4000] or None, progress, incident_id),
            )

    # --- deploy ledger and bad releases ------------------------------------------------------------
    def start_deploy(
        self,
        *,
        kind: str,
        sha: str,
        ref: str | None,
        previous_sha: str | None,
        incident_id: str | None = None,
    ) -> int:
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO deploys (kind, sha, ref, started_at, outcome, previous_sha, incident_id)"
                " VALUES (?,?,?,?,?,?,?)",
                (kind, sha, ref, _now(), RUNNING, previous_sha, incident_id),
            )
            row_id = int(cur.lastrowid or 0)
            conn.execute(
                "DELETE FROM deploys WHERE id <= ? AND outcome != 'running'",
                (row_id - self.retention.deploys,),
            )
            return row_id

    def finish_deploy(
        self, deploy_id: int, *, outcome: str, revision: str | None, deployed: bool, detail: str = ""
    ) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE deploys SET outcome=?, revision=?, deployed_at=?, detail=? WHERE id=?",
                (outcome, revision, _now() if deployed else None, detail[:4000], deploy_id),
            )

    def deploys(self, limit: int = 50) -> list[Deploy]:
        with self.connect() as conn:
            rows = conn.execute("SELECT * FROM deploys ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [Deploy(**dict(r)) for r in rows]

    def latest_deploy_of(self, sha: str) -> Deploy | None:
        """The last time ``sha`` went live (deploy or rollback whose code switch happened)."""
        with self.connect() as conn:
            row = conn.execute(
                "SELECT * FROM deploys WHERE sha=? AND deployed_at IS NOT NULL ORDER BY id DESC LIMIT 1",
                (sha,),
            ).fetchone()
        return Deploy(**dict(row)) if row else None

    def healthy_releases(self) -> list[Deploy]:
        """Ledger entries whose deploy was healthy, newest first."""
        with self.connect() as conn:
            rows = conn.execute("SELECT * FROM deploys WHERE outcome='healthy' ORDER BY id DESC").fetchall()
        return [Deploy(**dict(r)) for r in rows]

    def running_deploys(self) -> list[Deploy]:
        with self.connect() as conn:
            rows = conn.execute("SELECT * FROM deploys WHERE outcome='running' ORDER BY id").fetchall()
        return [Deploy(**dict(r)) for r in rows]

    @staticmethod
    def mark_bad(conn: sqlite3.Connection, sha: str, incident_id: str | None, reason: str) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO bad_releases (sha, marked_at, incident_id, reason) VALUES (?,?,?,?)",
            (sha, _now(), incident_id, reason[:1000]),
        )

    def unmark_bad(self, sha: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM bad_releases WHERE sha=?", (sha,))

    def bad_release(self, sha: str) -> dict[str, Any] | None:
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM bad_releases WHERE sha=?", (sha,)).fetchone()
        return dict(row) if row else None

    def bad_shas(self) -> set[str]:
        with self.connect() as conn:
            return {r[0] for r in conn.execute("SELECT sha FROM bad_releases")}

    # --- alert instances, verification, freeze, Slack threads -------------------------------------
    def put_instances(self, conn: sqlite3.Connection, instances: list[AlertInstance]) -> None:
        """Record decided instances (a waiting one is replaced by its decision)."""
        conn.executemany(
            "INSERT OR REPLACE INTO alert_instances (fingerprint, starts_at, starts_ts, alertname,"
            " trigger_id, confidence, decision, role, incident_id, reason, release_sha, decided_at,"
            " resolved_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    i.fingerprint,
                    i.starts_at,
                    i.starts_ts,
                    i.alertname[:200],
                    i.trigger_id,
                    i.confidence,
                    i.decision,
                    i.role,
                    i.incident_id,
                    (i.reason or "")[:1000],
                    i.release_sha,
                    i.decided_at,
                    i.resolved_at,
                )
                for i in instances
            ],
        )
        conn.execute(
            "DELETE FROM alert_instances WHERE rowid IN (SELECT rowid FROM alert_instances"
            " ORDER BY decided_at DESC LIMIT -1 OFFSET ?)",
            (self.retention.webhooks,),
        )

    def save_instances(self, instances: list[AlertInstance]) -> None:
        with self.transaction() as conn:
            self.put_instances(conn, instances)

    def _instances(self, where: str, args: tuple[Any, ...]) -> list[AlertInstance]:
        with self.connect() as conn:
            rows = conn.execute(
                f"SELECT * FROM alert_instances WHERE {where} ORDER BY decided_at, rowid",  # noqa: S608
                args,
            ).fetchall()
        return [AlertInstance(**dict(r)) for r in rows]

    def instance(self, fingerprint: str, starts_at: str) -> AlertInstance | None:
        found = self._instances("fingerprint=? AND starts_at=?", (fingerprint, starts_at))
        return found[0] if found else None

    def instances_of(self, incident_id: str) -> list[AlertInstance]:
        return self._instances("incident_id=?", (incident_id,))

    def waiting_instances(self) -> list[AlertInstance]:
        return self._instances("decision='waiting' AND resolved_at IS NULL", ())

    def resolve_instance(self, fingerprint: str, starts_at: str, at: float) -> AlertInstance | None:
        """Record that an instance resolved (a waiting one is cancelled); None when it is unknown."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE alert_instances SET resolved_at=?,"
                " decision=CASE decision WHEN 'waiting' THEN 'cancelled' ELSE decision END"
                " WHERE fingerprint=? AND starts_at=? AND resolved_at IS NULL",
                (at, fingerprint, starts_at),
            )
        return self.instance(fingerprint, starts_at)

    def start_verification(self, incident_id: str, started_at: float, deadline: float) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO verifications (incident_id, state, started_at, deadline)"
                " VALUES (?, 'pending', ?, ?)",
                (incident_id, started_at, deadline),
            )

    def verification(self, incident_id: str) -> Verification | None:
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM verifications WHERE incident_id=?", (incident_id,)).fetchone()
        return Verification(**dict(row)) if row else None

    def pending_verifications(self) -> list[Verification]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT * FROM verifications WHERE state='pending' ORDER BY started_at"
            ).fetchall()
        return [Verification(**dict(r)) for r in rows]

    def end_verification(self, incident_id: str, state: str, at: float) -> bool:
        """Claim the end of a pending verification; False when another process ended it first."""
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE verifications SET state=?, ended_at=? WHERE incident_id=? AND state='pending'",
                (state, at, incident_id),
            )
            return cur.rowcount == 1

    def unverified_successes(self) -> list[Incident]:
        """Successful rollbacks of alert instances that have no verification yet."""
        with self.connect() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM incidents WHERE status='success' AND id NOT IN"
                    " (SELECT incident_id FROM verifications) AND id IN"
                    " (SELECT incident_id FROM alert_instances WHERE role='trigger')"
                )
            ]
        return [i for i in (self.incident(x) for x in ids) if i is not None]

    def latest_incident_of(self, sha: str, since: float) -> Incident | None:
        """The newest incident that rolled ``sha`` back (or decided about it) since ``since``."""
        with self.connect() as conn:
            row = conn.execute(
                "SELECT id FROM incidents WHERE from_sha=? AND created_at >= ? AND source='webhook'"
                " ORDER BY seq DESC LIMIT 1",
                (sha, since),
            ).fetchone()
        return self.incident(row[0]) if row else None

    def latest_rollback_of(self, sha: str) -> Incident | None:
        """The newest incident about release ``sha`` that ran or was refused (webhook or CLI)."""
        statuses = (*EXECUTED, BLOCKED, ABORTED)
        with self.connect() as conn:
            row = conn.execute(
                "SELECT id FROM incidents WHERE from_sha=?"  # noqa: S608
                f" AND status IN ({','.join('?' * len(statuses))}) ORDER BY seq DESC LIMIT 1",
                (sha, *statuses),
            ).fetchone()
        return self.incident(row[0]) if row else None

    def freeze(self) -> dict[str, Any] | None:
        with self.connect() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key='freeze'").fetchone()
        return json.loads(row[0]) if row else None

    def set_freeze(self, until: float, reason: str, at: float) -> dict[str, Any]:
        value = {"until": until, "reason": reason[:500], "since": at}
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('freeze', ?)", (json.dumps(value),)
            )
        return value

    def clear_freeze(self) -> bool:
        with self.transaction() as conn:
            return conn.execute("DELETE FROM meta WHERE key='freeze'").rowcount == 1

    def slack_thread(self, incident_id: str) -> str | None:
        with self.connect() as conn:
            row = conn.execute("SELECT ts FROM slack_threads WHERE incident_id=?", (incident_id,)).fetchone()
        return str(row[0]) if row else None

    def set_slack_thread(self, incident_id: str, ts: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO slack_threads (incident_id, ts) VALUES (?,?)", (incident_id, ts)
            )

    def live_history(self) -> list[Deploy]:
        """Every time a release went live (deploy or rollback), newest first."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT * FROM deploys WHERE deployed_at IS NOT NULL ORDER BY id DESC"
            ).fetchall()
        return [Deploy(**dict(r)) for r in rows]


def _incident(row: sqlite3.Row, phases: list[sqlite3.Row]) -> Incident:
    item = dict(row)
    item.pop("seq", None)
    item["detail"] = json.loads(item.get("detail") or "{}")
    item["phases"] = tuple(
        Phase(**{k: p[k] for k in ("name", "progress", "started_at", "ended_at", "status", "detail")})
        for p in phases
    )
    return Incident(**item)
