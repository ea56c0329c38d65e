"""What deploys and rollbacks share about their steps: how one fails and how long it may take."""

from __future__ import annotations

import time
from dataclasses import dataclass


class StepError(Exception):
    """A step of a deploy or rollback failed; ``timed_out`` when it ran out of time."""

    def __init__(self, step: str, message: str, timed_out: bool = False) -> None:
        super().__init__(message)
        self.step = step
        self.message = message
        self.timed_out = timed_out


@dataclass
class Deadline:
    """The time left for a whole operation (``guards.timeout``, ``deployment.timeout``)."""

    at: float  # time.monotonic()

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def cap(self, seconds: float) -> float:
        return max(0.0, min(seconds, self.remaining()))
