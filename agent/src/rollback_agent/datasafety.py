"""What a downgrade would destroy, measured before it runs; the backup that must precede it.

* ``render``: the downgrade's SQL as alembic renders it offline (``downgrade --sql from:to``), with
  the application's own alembic and environment.
* ``classify``: ``safe`` (no DROP/TRUNCATE/DELETE/ALTER ... DROP/type change), ``destructive`` with
  the tables and columns it drops, or ``unknown`` when the SQL cannot be rendered offline (SQLite
  batch operations need a live connection): ``unknown`` is treated as destructive.
* ``count_rows``: the rows holding data in each dropped table/column, through the same
  ``DATABASE_URL``, read-only with a statement timeout (SQLite: a ``mode=ro`` URI; PostgreSQL:
  ``psql`` in a read-only transaction, the credentials in its environment, never in ``ps``).
* ``backup``: ``migrations.backup_command`` templated with the objects, the incident id and a path
  under ``state_dir/backups/``; without one, SQLite gets an online copy (the sqlite3 backup API) and
  PostgreSQL a ``pg_dump -Fc`` of the dropped tables (the whole database when they are unknown).
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from rollback_agent import procs
from rollback_agent.backup import sha256_of
from rollback_agent.gitops import Deployment
from rollback_agent.migrations import Migrations

SAFE, DESTRUCTIVE, UNKNOWN = "safe", "destructive", "unknown"
RELEASE_FILE = "rollback.yml"
RELEASE_DOWNGRADE = ("safe", "destructive", "forbidden")

_NAME = r'"?([\w$]+)"?(?:\."?([\w$]+)"?)?'
_DROP_TABLE = re.compile(rf"^DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?{_NAME}", re.I)
_ALTER = re.compile(rf"^ALTER\s+TABLE\s+(?:ONLY\s+)?(?:IF\s+EXISTS\s+)?{_NAME}\s+(.*)$", re.I | re.S)
_DROP_COLUMN = re.compile(r'DROP\s+(?:COLUMN\s+)?(?:IF\s+EXISTS\s+)?"?([\w$]+)"?', re.I)
_TYPE_CHANGE = re.compile(r"ALTER\s+(?:COLUMN\s+)?\"?[\w$]+\"?\s+(?:SET\s+DATA\s+)?TYPE\b", re.I)
_NOT_COLUMNS = ("CONSTRAINT", "DEFAULT", "NOT", "IDENTITY", "EXPRESSION")
_ROWS_GONE = re.compile(r"^(TRUNCATE|DELETE\s+FROM)\b", re.I)
_RENAME_TMP = re.compile(r"^ALTER\s+TABLE\s+\"?_alembic_tmp_", re.I)


class DataSafetyError(Exception):
    pass


@dataclass
class Dropped:
    table: str
    column: str | None = None
    rows: int | None = None  # rows holding data; None: not counted

    def describe(self) -> str:
        what = f"column {self.table}.{self.column}" if self.column else f"table {self.table}"
        rows = "rows not counted" if self.rows is None else f"{self.rows:,} row{'s' * (self.rows != 1)}"
        return f"drops {what} ({rows})"


@dataclass
class DowngradeCheck:
    from_revision: str
    to_revision: str
    classification: str = SAFE
    sql: str = ""
    dropped: list[Dropped] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)  # every destructive statement
    error: str | None = None  # why the SQL could not be rendered (unknown)

    @property
    def data_at_risk(self) -> bool:
        """Destructive and some dropped object holds rows (or the rows could not be counted)."""
        if self.classification == SAFE:
            return False
        if self.classification == UNKNOWN or not self.dropped:
            return True
        return any(d.rows is None or d.rows > 0 for d in self.dropped)

    def tables(self) -> list[str]:
        return list(dict.fromkeys(d.table for d in self.dropped))

    def summary(self) -> str:
        if self.classification == SAFE:
            return f"downgrade {self.from_revision} -> {self.to_revision} is safe (drops nothing)"
        if self.classification == UNKNOWN:
            return (
                f"downgrade {self.from_revision} -> {self.to_revision}: its SQL cannot be rendered offline "
                f"({self.error}), treated as destructive"
            )
        objects = "; ".join(d.describe() for d in self.dropped) or "; ".join(self.statements[:3])
        return f"downgrade {self.from_revision} -> {self.to_revision} is destructive: {objects}"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["data_at_risk"] = self.data_at_risk
        data["summary"] = self.summary()
        return data


def _statements(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def classify(check: DowngradeCheck, sql: str) -> DowngradeCheck:
    """Fill ``check`` from the rendered SQL (the alembic_version bookkeeping is not destructive)."""
    check.sql = sql
    for statement in _statements(sql):
        flat = " ".join(statement.split())
        if "alembic_version" in flat or _RENAME_TMP.match(flat):
            continue
        drop = _DROP_TABLE.match(flat)
        alter = _ALTER.match(flat)
        if drop:
            table = drop.group(2) or drop.group(1)
            if not table.startswith("_alembic_tmp_"):
                check.dropped.append(Dropped(table))
                check.statements.append(flat)
        elif alter:
            table = alter.group(2) or alter.group(1)
            rest = alter.group(3)
            columns = [c for c in _DROP_COLUMN.findall(rest) if c.upper() not in _NOT_COLUMNS]
            if columns or _TYPE_CHANGE.search(rest):
                check.dropped.extend(Dropped(table, c) for c in columns)
                check.statements.append(flat)
        elif _ROWS_GONE.match(flat):
            check.statements.append(flat)
    check.classification = DESTRUCTIVE if check.statements else SAFE
    return check


def render(migrations: Migrations, from_revision: str, to_revision: str, timeout: float) -> DowngradeCheck:
    """The downgrade's offline SQL, classified (``unknown`` when alembic cannot render it)."""
    check = DowngradeCheck(from_revision, to_revision)
    result = migrations.run(["downgrade", "--sql", f"{from_revision}:{to_revision}"], timeout)
    if not result.ok:
        check.classification = UNKNOWN
        failed = [line for line in result.excerpt().splitlines() if "FAILED" in line or "Error" in line]
        check.error = (failed[-1] if failed else result.excerpt())[:300]
        check.sql = result.stdout
        return check
    return classify(check, result.stdout)


# --- the database, read-only --------------------------------------------------------------------------
def database_url(migrations: Migrations) -> str:
    url = migrations.environment().get("DATABASE_URL", "")
    if not url:
        raise DataSafetyError("DATABASE_URL is not set in the migrations' environment")
    return url


def _scheme(url: str) -> str:
    return url.split(":", 1)[0].split("+", 1)[0].lower()


def sqlite_path(url: str) -> Path:
    path = url.split("://", 1)[1] if "://" in url else ""
    path = path[1:] if path.startswith("/") else path  # sqlite:////abs -> /abs; sqlite:///rel -> rel
    if not path or path == ":memory:":
        raise DataSafetyError(f"cannot read the SQLite database of {_scheme(url)}:// URL without a file")
    return Path(path.split("?", 1)[0])


def pg_environment(url: str, base: dict[str, str]) -> dict[str, str]:
    """libpq variables for ``url`` (psql/pg_dump read them: no password on a command line)."""
    parts = urlsplit(url)
    env = dict(base)
    values = {
        "PGHOST": parts.hostname,
        "PGPORT": str(parts.port) if parts.port else None,
        "PGUSER": unquote(parts.username) if parts.username else None,
        "PGPASSWORD": unquote(parts.password) if parts.password else None,
        "PGDATABASE": unquote(parts.path.lstrip("/")) or None,
    }
    env.update({k: v for k, v in values.items() if v})
    return env


def _quote(name: str) -> str:
    if not re.fullmatch(r"[\w$]+", name):
        raise DataSafetyError(f"unexpected identifier {name!r}")
    return f'"{name}"'


def _count_query(item: Dropped) -> str:
    where = f" WHERE {_quote(item.column)} IS NOT NULL" if item.column else ""
    return f"SELECT count(*) FROM {_quote(item.table)}{where}"  # noqa: S608 (identifiers checked, quoted)


def count_rows(migrations: Migrations, check: DowngradeCheck, timeout: float) -> None:
    """Set ``rows`` of each dropped object (left ``None`` when it cannot be counted)."""
    if not check.dropped:
        return
    url = database_url(migrations)
    scheme = _scheme(url)
    if scheme == "sqlite":
        path = sqlite_path(url)
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
        try:
            for item in check.dropped:
                item.rows = int(conn.execute(_count_query(item)).fetchone()[0])
        except sqlite3.Error as exc:
            raise DataSafetyError(f"counting rows in {path}: {exc}") from None
        finally:
            conn.close()
    elif scheme in ("postgresql", "postgres"):
        env = pg_environment(url, migrations.environment())
        millis = max(1, int(timeout * 1000))
        env["PGOPTIONS"] = f"-c default_transaction_read_only=on -c statement_timeout={millis}"
        for item in check.dropped:
            result = procs.run(
                ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", _count_query(item)],
                timeout=timeout + 5.0,
                env=env,
            )
            if not result.ok:
                raise DataSafetyError(f"counting rows of {item.table}: {result.excerpt()}")
            item.rows = int(result.stdout.strip().splitlines()[-1])
    else:
        raise DataSafetyError(f"counting rows is not supported for {scheme}:// databases")


# --- what the release declares ------------------------------------------------------------------------
@dataclass
class ReleaseDeclaration:
    downgrade: str | None = None  # safe | destructive | forbidden
    code_compatible_with_newer_schema: bool = False


def release_declaration(deployment: Deployment, sha: str) -> ReleaseDeclaration:
    """``rollback.yml`` at the root of release ``sha`` (absent: nothing declared)."""
    raw = deployment.read_file(sha, RELEASE_FILE)
    if raw is None:
        return ReleaseDeclaration()
    try:
        data = yaml.safe_load(raw) or {}
    except yaml.YAMLError as exc:
        raise DataSafetyError(f"{RELEASE_FILE} of {sha[:10]} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise DataSafetyError(f"{RELEASE_FILE} of {sha[:10]} must be a mapping")
    downgrade = data.get("downgrade")
    if downgrade is not None and downgrade not in RELEASE_DOWNGRADE:
        raise DataSafetyError(
            f"{RELEASE_FILE} of {sha[:10]}: downgrade must be one of {', '.join(RELEASE_DOWNGRADE)}, "
            f"got {downgrade!r}"
        )
    compatible = data.get("code_compatible_with_newer_schema", False)
    if not isinstance(compatible, bool):
        raise DataSafetyError(
            f"{RELEASE_FILE} of {sha[:10]}: code_compatible_with_newer_schema must be true or false"
        )
    return ReleaseDeclaration(downgrade, compatible)


# --- the backup -------------------------------------------------------------------------------------------
@dataclass
class Backup:
    path: str
    sha256: str
    size: int
    command: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _expand(command: list[str], tables: list[str], incident_id: str, path: Path) -> list[str]:
    argv: list[str] = []
    for arg in command:
        if arg == "{tables}":
            argv.extend(tables)
        elif arg == "{table_args}":
            argv.extend(a for t in tables for a in ("-t", t))
        else:
            argv.append(arg.replace("{path}", str(path)).replace("{incident}", incident_id))
    return argv


def backup(
    migrations: Migrations, check: DowngradeCheck, incident_id: str, backups_dir: Path, timeout: float
) -> Backup:
    """Copy what the downgrade would drop to ``backups_dir``; raises ``DataSafetyError`` on any failure."""
    backups_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    url = database_url(migrations)
    scheme = _scheme(url)
    command = migrations.config.backup_command
    tables = check.tables() if check.classification == DESTRUCTIVE else []
    suffix = {"sqlite": ".sqlite"}.get(scheme, ".dump")
    path = backups_dir / f"{incident_id}{suffix}"
    if command is None and scheme == "sqlite":
        source = sqlite_path(url)
        try:
            src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=timeout)
            dest = sqlite3.connect(path)
            try:
                src.backup(dest)
            finally:
                dest.close()
                src.close()
        except sqlite3.Error as exc:
            raise DataSafetyError(f"backup of {source} to {path}: {exc}") from None
        described = f"sqlite3 online backup of {source}"
    else:
        if command is None:
            if scheme not in ("postgresql", "postgres"):
                raise DataSafetyError(f"no migrations.backup_command for a {scheme}:// database")
            command = ["pg_dump", "-Fc", "-f", "{path}", "{table_args}"]
        env = (
            pg_environment(url, migrations.environment())
            if scheme.startswith("postgres")
            else (migrations.environment())
        )
        argv = _expand(command, tables, incident_id, path)
        result = procs.run(argv, timeout=timeout, cwd=migrations.repo, env=env)
        described = " ".join(argv)
        if not result.ok:
            raise DataSafetyError(f"backup command failed ({described}): {result.excerpt()}")
    if not path.is_file() or path.stat().st_size == 0:
        raise DataSafetyError(f"the backup left no file at {path}")
    path.chmod(0o600)
    return Backup(str(path), sha256_of(path), path.stat().st_size, described)


# --- the policy --------------------------------------------------------------------------------------------
RUN, BACKUP, BLOCK, CODE_ONLY = "run", "backup", "block", "code_only"


def decide(policy: str, declaration: ReleaseDeclaration, check: DowngradeCheck) -> tuple[str, str]:
    """What to do with ``check`` under ``migrations.destructive_downgrade`` and the release's word.

    ``run`` (nothing at risk, or the policy says so), ``backup`` (then run), ``code_only`` (roll the
    code back, leave the schema: the release declared its code compatible with the newer schema) or
    ``block``. A release declaring ``forbidden`` is blocked before this is asked.
    """
    if not check.data_at_risk:
        return RUN, check.summary()
    if policy == "run":
        return RUN, f"{check.summary()}; migrations.destructive_downgrade is run"
    if policy == "backup_then_run":
        return BACKUP, f"{check.summary()}; backing up first (migrations.destructive_downgrade)"
    if declaration.code_compatible_with_newer_schema:
        return CODE_ONLY, (
            f"{check.summary()}; blocked by migrations.destructive_downgrade, and the release declares "
            "code_compatible_with_newer_schema: code rolled back, schema left in place"
        )
    return BLOCK, f"{check.summary()}; blocked by migrations.destructive_downgrade: block"


SQL_SHOWN = 600  # characters of the downgrade's SQL in a webhook answer and a status line


def brief(preview: dict[str, Any] | None) -> dict[str, Any] | None:
    """A preview (or the incident's record) for answers and status: every key, the SQL shortened."""
    if not preview:
        return None
    out = dict(preview)
    sql = str(preview.get("sql") or "")
    if len(sql) > SQL_SHOWN:
        out["sql"] = sql[:SQL_SHOWN] + f"\n-- ... {len(sql) - SQL_SHOWN} more characters (full SQL: the plan)"
    out["sql_truncated"] = len(sql) > SQL_SHOWN
    return out


def preview(
    migrations: Migrations,
    deployment: Deployment,
    from_sha: str,
    from_revision: str,
    to_revision: str,
    timeout: float,
) -> dict[str, Any]:
    """What the rollback's database phase would do (the plan shows it): SQL, objects, rows, action."""
    try:
        declaration = release_declaration(deployment, from_sha)
    except DataSafetyError as exc:
        return {"error": str(exc), "action": BLOCK}
    check = render(migrations, from_revision, to_revision, timeout)
    try:
        count_rows(migrations, check, min(migrations.config.count_timeout, timeout))
    except DataSafetyError as exc:
        check.error = f"rows not counted: {exc}"
    policy = migrations.config.destructive_downgrade
    action, reason = decide(policy, declaration, check)
    if declaration.downgrade == "forbidden":
        action, reason = BLOCK, f"release {from_sha[:10]} declares downgrade: forbidden in {RELEASE_FILE}"
    return check.as_dict() | {
        "policy": policy,
        "action": action,
        "reason": reason,
        "declared": asdict(declaration),
    }
