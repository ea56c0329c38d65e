"""Alembic: run the application's own alembic, and read revisions straight from a release's scripts.

The agent does not import alembic: the command in ``migrations.command`` (the application's venv)
does the work. To know which revision a release expects, the agent reads the release's migration
scripts out of git (``revision`` / ``down_revision`` assignments) without checking it out.
"""

from __future__ import annotations

import ast
import configparser
import os
import posixpath
import re
from collections.abc import Mapping
from pathlib import Path

from rollback_agent import procs
from rollback_agent.config import Config, MigrationsConfig
from rollback_agent.envfile import parse_environment_file
from rollback_agent.gitops import Deployment

BASE = "base"


class MigrationError(Exception):
    pass


class Migrations:
    def __init__(self, config: MigrationsConfig, repo: Path, hidden_env: list[str]) -> None:
        self.config = config
        self.repo = repo
        self.hidden_env = set(hidden_env)

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in self.hidden_env}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if self.config.environment_file is not None:
            try:
                env.update(parse_environment_file(self.config.environment_file))
            except OSError as exc:
                raise MigrationError(
                    f"migrations.environment_file {self.config.environment_file}: {exc.strerror or exc}"
                ) from None
            except ValueError as exc:
                raise MigrationError(f"migrations.environment_file: {exc}") from None
        return env

    def run(self, args: list[str], timeout: float) -> procs.CommandResult:
        return procs.run(
            [*self.config.command, *args], timeout=timeout, cwd=self.repo, env=self.environment()
        )

    def upgrade_head(self, timeout: float) -> procs.CommandResult:
        return self.run(["upgrade", "head"], timeout)

    def downgrade(self, revision: str, timeout: float) -> procs.CommandResult:
        return self.run(["downgrade", revision], timeout)

    def current(self, timeout: float) -> str:
        """The database's revision(s) as ``alembic current`` prints them (``base`` when empty)."""
        result = self.run(["current"], timeout)
        if not result.ok:
            raise MigrationError(f"alembic current failed: {result.excerpt()}")
        revisions = []
        for line in result.stdout.splitlines():
            token = line.strip().split(" ")[0] if line.strip() else ""
            if token and re.fullmatch(r"[\w-]+", token) and not line.startswith("INFO"):
                revisions.append(token)
        return " ".join(revisions) if revisions else BASE


def _literal(node: ast.AST | None) -> object:
    if node is None:
        return None
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError):
        return None


def _assignments(source: bytes) -> dict[str, object]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    found: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = _literal(node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found[node.target.id] = _literal(node.value)
    return found


def _as_tuple(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    return ()


def _version_dirs(ini_text: str, ini_path: str) -> list[str]:
    parser = configparser.ConfigParser(defaults={"here": posixpath.dirname(ini_path) or "."})
    try:
        parser.read_string(ini_text)
    except configparser.Error as exc:
        raise MigrationError(f"{ini_path}: not a valid ini file: {exc}") from None
    if not parser.has_option("alembic", "script_location"):
        raise MigrationError(f"{ini_path}: no script_location in [alembic]")
    location = parser.get("alembic", "script_location")
    if ":" in location and not location.startswith(("/", ".")):
        raise MigrationError(f"{ini_path}: script_location {location!r} is a package resource (unsupported)")
    dirs = [posixpath.join(location, "versions")]
    for option in ("version_locations",):
        if parser.has_option("alembic", option):
            raw = parser.get("alembic", option)
            dirs = [d for d in re.split(r"[\s,;:]+", raw) if d]
    out = []
    for d in dirs:
        d = posixpath.normpath(d)
        if d.startswith("/"):
            raise MigrationError(f"{ini_path}: absolute version location {d!r} cannot be read from git")
        out.append(d.removeprefix("./"))
    return out


def release_graph(deployment: Deployment, sha: str, config_file: str) -> dict[str, tuple[str, ...]]:
    """Every revision in release ``sha``'s migration scripts, with its down revision(s)."""
    rel = config_file
    if Path(rel).is_absolute():
        try:
            rel = str(Path(rel).relative_to(deployment.path))
        except ValueError:
            raise MigrationError(
                f"{config_file} is outside deployment.repo: cannot read it from git"
            ) from None
    rel = posixpath.normpath(rel)
    ini = deployment.read_file(sha, rel)
    if ini is None:
        raise MigrationError(f"release {sha[:12]} has no {rel}")
    revisions: dict[str, tuple[str, ...]] = {}
    for directory in _version_dirs(ini.decode("utf-8", "replace"), rel):
        for path, source in deployment.list_files(sha, directory, suffix=".py").items():
            values = _assignments(source)
            revision = values.get("revision")
            if isinstance(revision, str) and revision:
                if revision in revisions:
                    raise MigrationError(f"release {sha[:12]}: revision {revision} is defined twice ({path})")
                revisions[revision] = _as_tuple(values.get("down_revision"))
    return revisions


def heads_of(graph: dict[str, tuple[str, ...]]) -> list[str]:
    referenced = {parent for parents in graph.values() for parent in parents}
    return sorted(r for r in graph if r not in referenced)


def is_below(graph: dict[str, tuple[str, ...]], revision: str, head: str) -> bool:
    """Whether ``revision`` is an ancestor of ``head`` (``base`` is below everything)."""
    if revision == BASE:
        return head != BASE
    todo, seen = list(graph.get(head, ())), set()
    while todo:
        current = todo.pop()
        if current == revision:
            return True
        if current not in seen:
            seen.add(current)
            todo.extend(graph.get(current, ()))
    return False


def release_heads(deployment: Deployment, sha: str, config_file: str) -> list[str]:
    """The head revision(s) of the migration scripts in release ``sha`` (``[]`` when it has none)."""
    return heads_of(release_graph(deployment, sha, config_file))


def release_revision(deployment: Deployment, sha: str, config_file: str) -> str:
    """The single revision release ``sha`` runs on (``base`` when it has no migrations)."""
    heads = release_heads(deployment, sha, config_file)
    if not heads:
        return BASE
    if len(heads) > 1:
        raise MigrationError(f"release {sha[:12]} has several alembic heads ({', '.join(heads)})")
    return heads[0]


def build(config: Config) -> Migrations | None:
    if config.migrations is None:
        return None
    return Migrations(config.migrations, config.deployment.repo, config.secret_env_names())


def child_environment(config: Config, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for restart/status commands: ours minus the secrets."""
    hidden = set(config.secret_env_names()) | {"PROMETHEUS_MULTIPROC_DIR"}
    env = {k: v for k, v in os.environ.items() if k not in hidden}
    env.update(extra or {})
    return env
