"""Results, planned requests and the errors checks raise."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Status(str, enum.Enum):
    PASS = "PASS"  # noqa: S105 - a status, not a password
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass
class CheckResult:
    name: str
    status: Status
    detail: str
    duration_s: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "detail": self.detail,
            "duration_s": round(self.duration_s, 3),
            "data": self.data,
        }


@dataclass(frozen=True)
class Planned:
    """A request a check would make; printed by --dry-run (secrets masked on output)."""

    check: str
    action: str  # "POST https://…", "SMTP smtp.sendgrid.net:587 (STARTTLS, AUTH apikey)"
    body: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "action": self.action, "body": self.body}


class CheckError(Exception):
    """The check ran and found a problem; ``detail`` says what, for the table."""

    def __init__(self, detail: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.data = data or {}


class SkipCheckError(Exception):
    """The check cannot run (a secret or setting is missing); ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Outcome:
    """What a check returns when it passes."""

    detail: str
    data: dict[str, Any] = field(default_factory=dict)
