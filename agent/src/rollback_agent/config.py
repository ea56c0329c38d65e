"""The agent's YAML configuration, validated with pydantic.

Every error names the key at fault (``guards.cooldown: invalid duration 'soon' ...``,
``unknown key 'guard'``, ``missing required key 'deployment.repo'``) so that a bad file stops the
agent with a message an operator can act on.
"""

from __future__ import annotations

import math
import os
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from rollback_agent.durations import parse_duration
from rollback_agent.triggers import DEFAULT_TRIGGERS

DEFAULT_CONFIG_PATH = "/etc/rollback-agent/config.yml"
CONFIG_ENV = "ROLLBACK_AGENT_CONFIG"

MAX_DURATION = 366 * 86400.0


def _finite(seconds: float) -> float:
    # NaN passes "> 0" and inf overflows later: a duration is a finite number of seconds, up to a year.
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration must be a positive, finite number of seconds, got {seconds!r}")
    if seconds > MAX_DURATION:
        raise ValueError(f"duration must be at most 366d, got {seconds!r} seconds")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_finite)]
NonEmptyStr = Annotated[str, Field(min_length=1)]
Command = Annotated[list[NonEmptyStr], Field(min_length=1)]


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` lists one message per key."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))

    def render(self) -> str:
        lines = [f"configuration {self.source} is invalid:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _absolute(value: Path) -> Path:
    if not value.is_absolute():
        raise ValueError(f"must be an absolute path, got {str(value)!r}")
    return value


class AuthConfig(_Section):
    username: NonEmptyStr = "alertmanager"
    password_file: Path | None = None
    password_env: NonEmptyStr | None = None

    @model_validator(mode="after")
    def _one_source(self) -> AuthConfig:
        if (self.password_file is None) == (self.password_env is None):
            raise ValueError("set exactly one of password_file or password_env (the webhook secret)")
        if self.password_file is not None:
            _absolute(self.password_file)
        return self


class DeploymentConfig(_Section):
    repo: Path
    ref: NonEmptyStr = "refs/heads/deployed"
    remote: NonEmptyStr | None = None
    timeout: Duration = 900.0

    @field_validator("repo")
    @classmethod
    def _repo_abs(cls, v: Path) -> Path:
        return _absolute(v)

    @field_validator("ref")
    @classmethod
    def _full_ref(cls, v: str) -> str:
        if not v.startswith("refs/") or v.endswith("/") or ".." in v or " " in v:
            raise ValueError(f"must be a full git ref such as refs/heads/deployed, got {v!r}")
        return v


class MigrationsConfig(_Section):
    command: Command
    environment_file: Path | None = None
    # A downgrade that drops tables/columns holding rows: refuse it, back them up first, or run it.
    destructive_downgrade: Literal["block", "backup_then_run", "run"] = "backup_then_run"
    # {path} (under state_dir/backups/), {incident}, {tables} / {table_args} (-t T ...); None: built in.
    backup_command: Command | None = None
    count_timeout: Duration = 10.0  # statement timeout of the read-only row counts
    # Downgrade backups under state_dir/backups kept: the newest backup_keep, and (when set) none older
    # than backup_max_age; never the backup of a running incident or of the last one.
    backup_keep: Annotated[int, Field(ge=1, le=10000)] = 10
    backup_max_age: Duration | None = None

    @field_validator("environment_file")
    @classmethod
    def _env_abs(cls, v: Path | None) -> Path | None:
        return None if v is None else _absolute(v)

    def config_file(self) -> str:
        """The alembic ini file named by the command (``-c``/``--config``), default ``alembic.ini``."""
        args = self.command
        for i, arg in enumerate(args):
            if arg in ("-c", "--config") and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith("--config="):
                return arg.split("=", 1)[1]
        return "alembic.ini"


class ServicesConfig(_Section):
    units: Annotated[list[NonEmptyStr], Field(min_length=1)]
    restart_command: Command = ["systemctl", "restart"]
    status_command: Command = ["systemctl", "is-active", "--quiet"]
    start_timeout: Duration = 60.0


class HealthConfig(_Section):
    url: NonEmptyStr
    timeout: Duration = 60.0
    interval: Duration = 1.0

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"must be an http:// or https:// URL, got {v!r}")
        return v


class ScopeConfig(_Section):
    match_labels: dict[NonEmptyStr, str] = {}
    match_re: dict[NonEmptyStr, str] = {}

    @field_validator("match_re")
    @classmethod
    def _regexes(cls, v: dict[str, str]) -> dict[str, str]:
        for label, pattern in v.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"label {label!r}: invalid regular expression {pattern!r}: {exc}") from None
        return v

    def mismatch(self, labels: dict[str, str]) -> str | None:
        """Why ``labels`` are out of scope, or None when they match."""
        for key, want in self.match_labels.items():
            got = labels.get(key)
            if got != want:
                return f"label {key}={got!r} does not match scope {key}={want!r}"
        for key, pattern in self.match_re.items():
            got = labels.get(key)
            if got is None or not re.fullmatch(pattern, got):
                return f"label {key}={got!r} does not match scope {key}=~{pattern!r}"
        return None


class TriggerConfig(_Section):
    trigger: NonEmptyStr
    reason: NonEmptyStr
    auto_rollback: bool = True
    confidence: Literal["high", "medium"] = "high"


class GuardsConfig(_Section):
    rollback_window: Duration = 7200.0
    cooldown: Duration = 900.0
    max_rollbacks_per_day: Annotated[int, Field(ge=1)] = 3
    timeout: Duration = 600.0
    # An alert that started this long before the live release went live still counts against it.
    clock_skew: Duration = 30.0
    # A medium-confidence trigger alone acts once it has been firing this long.
    corroboration_window: Duration = 300.0
    # After a successful rollback, how long the triggering alerts have to resolve.
    verify_window: Duration = 600.0


class SlackConfig(_Section):
    webhook_url_file: Path | None = None
    webhook_url_env: NonEmptyStr | None = None
    # A bot token (chat.postMessage): each incident becomes one thread in ``channel``.
    bot_token_file: Path | None = None
    api_url: NonEmptyStr = "https://slack.com/api/chat.postMessage"
    channel: NonEmptyStr | None = None
    username: NonEmptyStr = "rollback-agent"
    timeout: Duration = 10.0
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 5

    @model_validator(mode="after")
    def _one_source(self) -> SlackConfig:
        if self.bot_token_file is not None:
            _absolute(self.bot_token_file)
            if self.webhook_url_file is not None or self.webhook_url_env is not None:
                raise ValueError("set bot_token_file (threads) or a webhook URL (flat messages), not both")
            if self.channel is None:
                raise ValueError("bot_token_file needs a channel (chat.postMessage posts to a channel)")
            return self
        if (self.webhook_url_file is None) == (self.webhook_url_env is None):
            raise ValueError("set exactly one of webhook_url_file, webhook_url_env or bot_token_file")
        if self.webhook_url_file is not None:
            _absolute(self.webhook_url_file)
        return self

    @property
    def threads(self) -> bool:
        return self.bot_token_file is not None


class PagerDutyConfig(_Section):
    """PagerDuty Events v2: a rollback that did not clear its alerts pages a person."""

    routing_key_file: Path
    api_url: NonEmptyStr = "https://events.pagerduty.com/v2/enqueue"
    severity: Literal["critical", "error", "warning", "info"] = "critical"
    timeout: Duration = 10.0

    @field_validator("routing_key_file")
    @classmethod
    def _key_abs(cls, v: Path) -> Path:
        return _absolute(v)


class NotifyConfig(_Section):
    slack: SlackConfig | None = None
    pagerduty: PagerDutyConfig | None = None


class ServerConfig(_Section):
    bind: NonEmptyStr = "0.0.0.0:9095"
    workers: Annotated[int, Field(ge=1, le=64)] = 2
    # Threads per worker: a slow client holds one thread, never a whole worker.
    threads: Annotated[int, Field(ge=2, le=256)] = 16
    # A request whose headers and body are not in after this long is cut off (slow clients).
    read_timeout: Duration = 10.0
    timeout: Annotated[int, Field(ge=5)] = 30
    access_log: bool = True
    certfile: Path | None = None
    keyfile: Path | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerConfig:
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("certfile and keyfile go together (set both for TLS, or neither)")
        return self


class RetentionConfig(_Section):
    webhooks: Annotated[int, Field(ge=10)] = 5000
    incidents: Annotated[int, Field(ge=10)] = 1000
    deploys: Annotated[int, Field(ge=10)] = 1000


class PeerConfig(_Section):
    """Another agent of the fleet: its name and the base URL of its HTTP API."""

    host: NonEmptyStr
    url: NonEmptyStr

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+(/\S*)?$", v):
            raise ValueError(f"must be an http:// or https:// URL, got {v!r}")
        return v.rstrip("/")


class FleetConfig(_Section):
    """Rollbacks in waves: wave N > 0 waits for every earlier-wave peer to succeed first."""

    wave: Annotated[int, Field(ge=0, le=1000)] = 0
    peers: list[PeerConfig] = []
    wave_timeout: Duration = 300.0
    on_peer_unreachable: Literal["proceed", "abort"] = "proceed"
    poll_interval: Duration = 2.0
    request_timeout: Duration = 5.0
    # CA bundle that signs the peers' certificates (https peers); the system's CAs when unset.
    ca_file: Path | None = None

    @field_validator("peers")
    @classmethod
    def _unique(cls, v: list[PeerConfig]) -> list[PeerConfig]:
        seen: set[str] = set()
        for peer in v:
            if peer.host in seen:
                raise ValueError(f"peer host {peer.host!r} is listed twice (peer hosts must be unique)")
            seen.add(peer.host)
        return v

    @field_validator("ca_file")
    @classmethod
    def _ca_abs(cls, v: Path | None) -> Path | None:
        return _absolute(v) if v is not None else None


class Config(_Section):
    host: NonEmptyStr = Field(default_factory=socket.gethostname)
    state_dir: Path = Path("/var/lib/rollback-agent")
    auth: AuthConfig
    deployment: DeploymentConfig
    migrations: MigrationsConfig | None = None
    services: ServicesConfig
    health: HealthConfig | None = None
    scope: ScopeConfig = ScopeConfig()
    triggers: Annotated[dict[NonEmptyStr, TriggerConfig], Field(validate_default=True)] = {}
    guards: GuardsConfig = GuardsConfig()
    notify: NotifyConfig = NotifyConfig()
    dry_run: bool = False
    server: ServerConfig = ServerConfig()
    retention: RetentionConfig = RetentionConfig()
    # Rollbacks in waves across the fleet; unset: this host rolls back on its own (no waiting).
    fleet: FleetConfig | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Where the configuration was read from (the background runner re-reads the same file).
    source: str | None = Field(default=None, exclude=True)

    @field_validator("state_dir")
    @classmethod
    def _state_abs(cls, v: Path) -> Path:
        return _absolute(v)

    @field_validator("triggers", mode="before")
    @classmethod
    def _merge_defaults(cls, v: Any) -> Any:
        # The seven default triggers (docs/contracts.md) always exist; entries here add to them or replace one
        # (set auto_rollback: false to switch a default off).
        if v is None:
            v = {}
        if not isinstance(v, dict):
            return v
        merged: dict[str, Any] = {name: dict(entry) for name, entry in DEFAULT_TRIGGERS.items()}
        merged.update(v)
        return merged

    @model_validator(mode="after")
    def _not_own_peer(self) -> Config:
        if self.fleet is not None and any(p.host == self.host for p in self.fleet.peers):
            raise ValueError(
                f"fleet.peers lists this host ({self.host!r}) itself: list the other agents only"
            )
        return self

    @property
    def db_path(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "rollback.lock"

    @property
    def mode(self) -> str:
        return "dry_run" if self.dry_run else "live"

    def secret_env_names(self) -> list[str]:
        """Environment variables that hold secrets: never passed on to the commands we run."""
        names = [self.auth.password_env] if self.auth.password_env else []
        if self.notify.slack and self.notify.slack.webhook_url_env:
            names.append(self.notify.slack.webhook_url_env)
        return names


def _location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in ("function-after", "function-before") or str(item).startswith("function-"):
            continue
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _describe(err: dict[str, Any]) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p and "function" in p))
    where = _location(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        parent, _, key = where.rpartition(".")
        return f"unknown key '{key}'" + (f" in '{parent}'" if parent else "") + _suggest(key)
    if kind == "missing":
        return f"missing required key '{where}'"
    msg = str(err["msg"]).removeprefix("Value error, ")
    value = err.get("input")
    shown = ""
    if not isinstance(value, (dict, list)) and value is not None and repr(value) not in msg:
        shown = f" (got {repr(value)[:80]})"
    if not where:
        return msg
    return f"{where}: {msg}{shown}"


_KNOWN_KEYS = {
    *Config.model_fields,
    *AuthConfig.model_fields,
    *DeploymentConfig.model_fields,
    *MigrationsConfig.model_fields,
    *ServicesConfig.model_fields,
    *HealthConfig.model_fields,
    *ScopeConfig.model_fields,
    *TriggerConfig.model_fields,
    *GuardsConfig.model_fields,
    *SlackConfig.model_fields,
    *PagerDutyConfig.model_fields,
    *ServerConfig.model_fields,
    *RetentionConfig.model_fields,
}


def _suggest(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(key, sorted(_KNOWN_KEYS - {"source"}), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def parse_config(data: Any, source: str = "<config>") -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [f"the top level must be a mapping of keys, got {type(data).__name__}"])
    if "source" in data:
        raise ConfigError(source, ["unknown key 'source'"])
    try:
        return Config.model_validate({**data, "source": source})
    except ValidationError as exc:
        problems = [_describe(dict(e)) for e in exc.errors(include_url=False)]
        raise ConfigError(source, sorted(dict.fromkeys(problems))) from None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate the YAML file at ``path`` (default: $ROLLBACK_AGENT_CONFIG, then /etc)."""
    chosen = str(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
    try:
        text = Path(chosen).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(chosen, [f"cannot read the file: {exc.strerror or exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(chosen, [f"not valid YAML: {exc}"]) from None
    return parse_config(data, source=str(Path(chosen).resolve()))
