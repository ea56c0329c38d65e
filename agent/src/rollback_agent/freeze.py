"""A freeze: no automated rollback until a time, for planned maintenance.

Set by ``rollback-agent freeze --for 2h --reason TEXT`` or ``POST /api/admin/rollback/freeze``
(``playbooks/freeze.yml`` does it across the fleet); while it lasts every trigger is ``blocked``
("frozen until ...: reason"). ``unfreeze`` ends it early.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from rollback_agent.durations import format_duration, parse_duration
from rollback_agent.host import Host
from rollback_agent.planner import utc

log = logging.getLogger(__name__)

MAX_FREEZE = 7 * 86400.0


class FreezeError(ValueError):
    """The freeze asked for is not usable; the message says why."""


def freeze(host: Host, duration: object, reason: object) -> dict[str, Any]:
    """Freeze for ``duration`` (``2h``, seconds ...) with ``reason``; returns the freeze."""
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise FreezeError(f"for: {exc}") from None
    if not math.isfinite(seconds) or seconds > MAX_FREEZE:
        raise FreezeError(f"for: at most {format_duration(MAX_FREEZE)}, got {duration!r}")
    if not isinstance(reason, str) or not reason.strip():
        raise FreezeError("reason: say why (it is shown in every blocked decision)")
    now = host.now()
    value = host.store.set_freeze(now + seconds, reason.strip(), now)
    log.warning("frozen until %s: %s", utc(value["until"]), value["reason"])
    return {**value, "until_utc": utc(value["until"])}


def unfreeze(host: Host) -> bool:
    """End the freeze; False when there was none."""
    was = host.store.clear_freeze()
    if was:
        log.warning("unfrozen: automated rollbacks allowed again")
    return was
