"""What every check shares: the run context, timing and turning exceptions into results."""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

from ..http import describe_error
from ..model import CheckError, CheckResult, Outcome, Planned, SkipCheckError, Status
from ..secrets import Redactor, Secret
from ..settings import Settings, missing_secret_reason, spec_for

log = logging.getLogger(__name__)


@dataclass
class Context:
    settings: Settings
    session: requests.Session
    redact: Redactor
    cancel: threading.Event = field(default_factory=threading.Event)

    def secret(self, key: str) -> Secret:
        """A secret of Settings.secrets, or SkipCheckError saying how to give it."""
        secret = self.settings.secret(key)
        if secret is None:
            raise SkipCheckError(missing_secret_reason(spec_for(key)))
        return secret

    @property
    def timeout(self) -> float:
        return self.settings.timeout


class Check(ABC):
    """One line of the table. ``group`` is what --only/--skip match besides the full name."""

    name: str
    group: str

    def skip_reason(self, ctx: Context) -> str | None:
        """Why the check cannot run (a missing secret or setting), or None."""
        return None

    @abstractmethod
    def plan(self, ctx: Context) -> list[Planned]:
        """The requests the check would make, for --dry-run."""

    @abstractmethod
    def run(self, ctx: Context) -> Outcome:
        """Do the check: return an Outcome (PASS) or raise CheckError / SkipCheckError."""

    def execute(self, ctx: Context) -> list[CheckResult]:
        return [run_timed(self.name, lambda: self.run(ctx))]


def run_timed(name: str, func: Callable[[], Outcome]) -> CheckResult:
    """Run ``func`` and turn what happens into a CheckResult with its duration."""
    started = time.monotonic()
    try:
        outcome: Outcome = func()
        result = CheckResult(name, Status.PASS, outcome.detail, data=outcome.data)
    except CheckError as exc:
        result = CheckResult(name, Status.FAIL, exc.detail, data=exc.data)
    except SkipCheckError as exc:
        result = CheckResult(name, Status.SKIP, exc.reason)
    except requests.RequestException as exc:
        url = exc.request.url if exc.request is not None and exc.request.url else ""
        result = CheckResult(name, Status.FAIL, describe_error(exc, url) if url else type(exc).__name__)
    except Exception as exc:  # a bug or an unexpected answer: report it, never a traceback with secrets
        log.debug("check %s raised", name, exc_info=True)
        result = CheckResult(name, Status.FAIL, f"unexpected error: {type(exc).__name__}: {exc}")
    result.duration_s = time.monotonic() - started
    return result
