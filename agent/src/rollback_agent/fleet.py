"""Rollbacks in waves across a fleet of agents: the canary first, then the rest.

A host of wave N > 0 starts its rollback in phase ``waiting_for_wave``: it asks each peer
(``GET /api/admin/rollback/fleet?from_sha=SHA``, authenticated like every admin route, TLS with
``fleet.ca_file`` when set) for its incident about the same bad release (same from-sha), and

* proceeds once every peer of an earlier wave rolled back to the same target with ``success``;
* stops (result ``aborted``, nothing changed) as soon as one of them did not (failed, timed out,
  interrupted, blocked, aborted, or went to another target);
* after ``fleet.wave_timeout``, the peers still without an answer or a result follow
  ``fleet.on_peer_unreachable`` (``proceed`` or ``abort``), recorded in the incident.

A peer's wave comes from its answer; a peer that never answered may be of an earlier wave, so it is
awaited too. The wait is recorded in ``detail.fleet`` of the incident (status shows it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rollback_agent import report, verification
from rollback_agent.config import FleetConfig, PeerConfig
from rollback_agent.host import Host
from rollback_agent.notify import short
from rollback_agent.recovery import recover
from rollback_agent.state import RUNNING, SUCCESS, Incident

log = logging.getLogger(__name__)

FLEET_PATH = "/api/admin/rollback/fleet"
# Peer states while waiting.
DONE, WAIT, STOP, UNREACHABLE, LATER = "succeeded", "waiting", "stopped", "unreachable", "not_earlier"


class PeerError(Exception):
    """A peer did not give a usable answer (connection, TLS, timeout, HTTP status, JSON)."""


def view(host: Host, from_sha: str | None = None) -> dict[str, Any]:
    """What this agent tells its peers and ``fleet-status``: wave, release, the relevant incident.

    With ``from_sha``: the newest incident about that release (the wave's question); without: the
    last incident, with its verification.
    """
    recover(host)  # a rollback process that died is reported as interrupted, not as running
    fleet = host.config.fleet
    if from_sha:
        inc = host.store.latest_rollback_of(from_sha)
    else:
        found = host.store.incidents(limit=1)
        inc = found[0] if found else None
    release = report.current_release(host)
    return {
        "host": host.config.host,
        "wave": fleet.wave if fleet is not None else None,
        "peers": [p.host for p in fleet.peers] if fleet is not None else [],
        "release": {k: release.get(k) for k in ("sha", "subject", "deployed_at", "alembic_revision")},
        "in_progress": host.in_progress(),
        "incident": _incident(host, inc) if inc is not None else None,
    }


def _incident(host: Host, inc: Incident) -> dict[str, Any]:
    verified, _attached = verification.view(host, inc.id)
    return {
        "incident_id": inc.id,
        "status": inc.status,
        "result": inc.result,
        "phase": inc.phase,
        "source": inc.source,
        "from_sha": inc.from_sha,
        "to_sha": inc.to_sha,
        "failed_step": inc.failed_step,
        "error": inc.error,
        "started_at": inc.started_at,
        "ended_at": inc.ended_at,
        "verification": verified,
    }


def ask(peer: PeerConfig, fleet: FleetConfig, auth: tuple[str, str], from_sha: str | None) -> dict[str, Any]:
    """One peer's ``view``: retried (tenacity) on connection errors, timeouts and 5xx."""
    import requests
    from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

    def transient(exc: BaseException) -> bool:
        return isinstance(exc, (requests.ConnectionError, requests.Timeout, _ServerError))

    @retry(
        retry=retry_if_exception(transient),
        stop=stop_after_attempt(3),
        wait=wait_exponential(multiplier=0.2, max=1.0),
        reraise=True,
    )
    def once() -> dict[str, Any]:
        answer = requests.get(
            peer.url + FLEET_PATH,
            params={"from_sha": from_sha} if from_sha else None,
            auth=auth,
            timeout=fleet.request_timeout,
            verify=str(fleet.ca_file) if fleet.ca_file is not None else True,
        )
        if answer.status_code >= 500:
            raise _ServerError(f"HTTP {answer.status_code}")
        if answer.status_code != 200:
            raise PeerError(f"HTTP {answer.status_code}: {answer.text[:200]}")
        data = answer.json()
        if not isinstance(data, dict):
            raise PeerError("the answer is not a JSON object")
        return data

    try:
        return once()
    except PeerError:
        raise
    except (requests.RequestException, ValueError, _ServerError) as exc:
        raise PeerError(f"{type(exc).__name__}: {exc}"[:300]) from None


class _ServerError(Exception):
    pass


def ask_peers(host: Host, from_sha: str | None = None) -> list[dict[str, Any]]:
    """Every peer's ``view`` (``answered: true``) or why it gave none (``answered: false``, ``error``)."""
    config = host.config.fleet
    if config is None:
        return []
    auth = (host.config.auth.username, host.secrets.webhook)
    answers: list[dict[str, Any]] = []
    for peer in config.peers:
        try:
            answers.append({"answered": True, **ask(peer, config, auth, from_sha), "url": peer.url})
        except PeerError as exc:
            answers.append(
                {"host": peer.host, "url": peer.url, "answered": False, "error": host.redact(str(exc))}
            )
    return answers


@dataclass
class PeerState:
    host: str
    wave: int | None = None
    state: str = UNREACHABLE
    detail: str = "not asked yet"
    answered: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"wave": self.wave, "state": self.state, "detail": self.detail, "answered": self.answered}


def judge(answer: dict[str, Any], to_sha: str | None) -> tuple[str, str]:
    """A peer's incident about the same release: succeeded to the same target, still going, or stopped."""
    inc = answer.get("incident")
    if not isinstance(inc, dict):
        return WAIT, "no rollback of this release yet"
    status = inc.get("status")
    if status == RUNNING:
        return WAIT, f"rolling back ({inc.get('phase')})"
    if status == SUCCESS:
        if inc.get("to_sha") == to_sha:
            return DONE, f"rolled back to {short(to_sha)} ({inc.get('incident_id')})"
        return STOP, f"rolled back to {short(inc.get('to_sha'))}, not to {short(to_sha)}"
    return STOP, f"{status} at {inc.get('failed_step') or '?'}: {inc.get('error') or ''}".rstrip(": ")


@dataclass
class WaveOutcome:
    proceed: bool
    message: str
    record: dict[str, Any] = field(default_factory=dict)


class WaveWait:
    """The ``waiting_for_wave`` phase of one incident (runs in the rollback process or the CLI)."""

    def __init__(self, host: Host, incident: Incident, note: Callable[[str], None]) -> None:
        assert host.config.fleet is not None
        self.host = host
        self.fleet: FleetConfig = host.config.fleet
        self.incident = incident
        self.note = note
        self.auth = (host.config.auth.username, host.secrets.webhook)
        self.peers = {p.host: PeerState(p.host) for p in self.fleet.peers}
        self.started = time.monotonic()
        self.last_record: dict[str, Any] | None = None
        # When the release went live here (the deploy that put it in place began): a peer's incident
        # about it that ended before then is about an earlier deploy of the same release.
        record = host.store.latest_deploy_of(incident.from_sha) if incident.from_sha else None
        self.live_since = record.started_at - host.config.guards.clock_skew if record else None

    def awaited(self) -> list[PeerState]:
        """Peers of an earlier wave (or of a wave not known yet) without a success."""
        return [
            p for p in self.peers.values() if p.state != DONE and (p.wave is None or p.wave < self.fleet.wave)
        ]

    def _label(self, peer: PeerState) -> str:
        return "canary" if peer.wave == 0 else f"wave {peer.wave} peer"

    def _poll(self) -> PeerState | None:
        """Ask every awaited peer once; the first that stopped, if any."""
        for config in self.fleet.peers:
            peer = self.peers[config.host]
            if peer.state in (DONE, LATER):
                continue
            try:
                answer = ask(config, self.fleet, self.auth, self.incident.from_sha)
            except PeerError as exc:
                peer.detail = f"no answer: {self.host.redact(str(exc))}"
                if not peer.answered:
                    peer.state = UNREACHABLE
                continue
            peer.answered = True
            wave = answer.get("wave")
            peer.wave = wave if isinstance(wave, int) else 0  # an agent without waves acts at once
            if peer.wave >= self.fleet.wave:
                peer.state, peer.detail = LATER, f"wave {peer.wave}: not awaited"
                continue
            peer.state, peer.detail = judge(self._current(answer), self.incident.to_sha)
            if peer.state == STOP:
                return peer
        return None

    def _current(self, answer: dict[str, Any]) -> dict[str, Any]:
        """The peer's answer without its incident when that incident ended before the release went
        live here: the same release deployed again is a new occurrence (a stale success must not let
        this host go ahead, a stale failure must not stop it)."""
        inc = answer.get("incident")
        ended = inc.get("ended_at") if isinstance(inc, dict) else None
        if self.live_since is not None and isinstance(ended, (int, float)) and ended < self.live_since:
            return {**answer, "incident": None}
        return answer

    def _record(self, outcome: str | None = None, **extra: Any) -> dict[str, Any]:
        record = {
            "wave": self.fleet.wave,
            "awaiting": [p.host for p in self.awaited()],
            "peers": {name: p.as_dict() for name, p in self.peers.items()},
            "waited": round(time.monotonic() - self.started, 3),
            "wave_timeout": self.fleet.wave_timeout,
            "on_peer_unreachable": self.fleet.on_peer_unreachable,
            "outcome": outcome,
            **extra,
        }
        comparable = {k: v for k, v in record.items() if k != "waited"}
        if comparable != self.last_record:
            self.host.store.merge_detail(self.incident.id, fleet=record)
            self.last_record = comparable
        return record

    def run(self, sleep: Callable[[float], None] = time.sleep) -> WaveOutcome:
        names = ", ".join(self.peers) or "none"
        self.note(f"wave {self.fleet.wave}: waiting for the earlier waves among peers {names}")
        deadline = self.started + self.fleet.wave_timeout
        while True:
            stopped = self._poll()
            if stopped is not None:
                message = f"{self._label(stopped)} {stopped.host} {stopped.detail}"
                return WaveOutcome(False, message, self._record("aborted", reason=message))
            awaited = self.awaited()
            if not awaited:
                done = [p.host for p in self.peers.values() if p.state == DONE]
                message = "earlier waves succeeded: " + (", ".join(done) or "no earlier-wave peer")
                return WaveOutcome(True, message, self._record("proceed", reason=message))
            self._record()
            if time.monotonic() >= deadline:
                return self._timed_out(awaited)
            sleep(max(0.0, min(self.fleet.poll_interval, deadline - time.monotonic())))

    def _timed_out(self, awaited: list[PeerState]) -> WaveOutcome:
        policy = self.fleet.on_peer_unreachable
        what = "; ".join(f"{p.host}: {p.detail}" for p in awaited)
        message = (
            f"no result from {', '.join(p.host for p in awaited)} within fleet.wave_timeout "
            f"({self.fleet.wave_timeout:g}s): on_peer_unreachable={policy} ({what})"
        )
        outcome = "proceed" if policy == "proceed" else "aborted"
        record = self._record(outcome, reason=message, unreachable=[p.host for p in awaited])
        return WaveOutcome(policy == "proceed", message, record)


def waits(host: Host, incident: Incident) -> bool:
    """Whether ``incident`` starts in ``waiting_for_wave``: a webhook's (or a ``--fleet``) rollback on
    a host of wave > 0."""
    fleet = host.config.fleet
    if fleet is None or fleet.wave == 0:
        return False
    return incident.source != "cli" or bool(incident.detail.get("fleet_wave"))
