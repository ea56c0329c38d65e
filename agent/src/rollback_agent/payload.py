"""Alertmanager's webhook payload (version 4), validated with pydantic."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from rollback_agent.limits import FIELD_BYTES, cap

# Every string kept from a webhook is capped in bytes, with a visible "…[truncated N bytes]".
Capped = Annotated[str, AfterValidator(cap)]
Labels = dict[Annotated[str, AfterValidator(lambda v: cap(v, FIELD_BYTES // 4))], Capped]


class PayloadError(Exception):
    """The body is not a usable webhook; the message names the field at fault."""


class Alert(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    status: Literal["firing", "resolved"]
    labels: Labels
    annotations: Labels = {}
    startsAt: str | None = None  # noqa: N815 - Alertmanager's field names
    endsAt: str | None = None  # noqa: N815
    generatorURL: Capped | None = None  # noqa: N815
    fingerprint: Annotated[str, Field(max_length=128)] | None = None

    @field_validator("labels")
    @classmethod
    def _alertname(cls, v: Labels) -> Labels:
        if not v.get("alertname"):
            raise ValueError("every alert needs an 'alertname' label")
        return v

    @property
    def name(self) -> str:
        return self.labels["alertname"]

    def key(self) -> str:
        """Alertmanager's fingerprint, or a stable hash of the labels when it is missing."""
        if self.fingerprint:
            return self.fingerprint
        digest = hashlib.sha256(json.dumps(self.labels, sort_keys=True).encode()).hexdigest()
        return digest[:16]


class WebhookPayload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    alerts: Annotated[list[Alert], Field(max_length=1000)]
    receiver: Capped = ""
    groupKey: Capped = ""  # noqa: N815
    truncatedAlerts: Annotated[int, Field(ge=0)] = 0  # noqa: N815
    groupLabels: Labels = {}  # noqa: N815
    commonLabels: Labels = {}  # noqa: N815
    commonAnnotations: Labels = {}  # noqa: N815
    externalURL: Capped = ""  # noqa: N815


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def parse_webhook(data: Any) -> WebhookPayload:
    if not isinstance(data, dict):
        raise PayloadError(
            f"the body must be a JSON object (Alertmanager webhook v4), got {type(data).__name__}"
        )
    if "version" in data and data["version"] != "4":
        raise PayloadError(f"version: unsupported webhook version {data['version']!r} (this agent reads '4')")
    try:
        return WebhookPayload.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False)[:10]:
            msg = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{_where(err['loc'])}: {'missing' if err['type'] == 'missing' else msg}")
        raise PayloadError("; ".join(problems)) from None
