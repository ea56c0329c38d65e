"""Releases on the lab's app hosts: deploys through playbooks/deploy.yml, the agents' status."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

from lab_kit.inventory import Host, Lab
from lab_kit.runner import ensure_secrets, playbook
from lab_kit.ui import die, ok, step, warn

# The extra variable of playbooks/deploy.yml that names the release to deploy.
DEPLOY_VAR = "release"


def _auth() -> str:
    secret = ensure_secrets()["webhook_secret"]
    return "Basic " + base64.b64encode(f"alertmanager:{secret}".encode()).decode()


def agent_get(lab: Lab, host: Host, path: str, timeout: float = 5) -> Any:
    url = f"http://127.0.0.1:{host.port('rollback-agent')}{path}"
    req = urllib.request.Request(url, headers={"Authorization": _auth()})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - http to the lab
        return json.loads(resp.read())


def agent_status(lab: Lab, host: Host) -> dict[str, Any] | None:
    try:
        return dict(agent_get(lab, host, "/api/admin/rollback/status"))
    except (OSError, ValueError, urllib.error.HTTPError):
        return None


def current_sha(status: dict[str, Any] | None) -> str | None:
    if not status:
        return None
    sha = (status.get("deployment") or {}).get("sha")
    return str(sha) if sha else None


def host_release_shas(lab: Lab) -> dict[str, str]:
    """{release: sha} as the first app host's release tree knows them (what a deploy would check out)."""
    from lab_kit.podman import exec_in
    from lab_kit.services import RELEASE_NAMES

    host = lab.group("app")[0]
    out = exec_in(host, "git", "-C", "/srv/sample-app", "rev-parse",
                  *[f"{name}^{{commit}}" for name in RELEASE_NAMES]).stdout.split()
    return dict(zip(RELEASE_NAMES, out, strict=True))


def release_name(sha: str | None, shas: dict[str, str]) -> str:
    for name, value in shas.items():
        if value == sha:
            return name
    return (sha or "none")[:10]


def describe_status(name: str, st: dict[str, Any], shas: dict[str, str] | None = None) -> str:
    dep = st.get("deployment") or {}
    running = st.get("in_progress")
    hist = st.get("history") or []
    sha = dep.get("sha")
    parts = [
        f"{name}: {release_name(sha, shas or {})} ({str(sha or '-')[:10]})",
        f"alembic {dep.get('alembic_revision') or '-'}",
        f"mode {(st.get('agent') or {}).get('mode', '?')}",
        f"incidents {len(hist)}" + (f" (last: {hist[0]['incident_id']} {hist[0]['status']})" if hist else ""),
    ]
    if dep.get("bad"):
        parts.append("MARKED BAD")
    if running:
        parts.append(f"IN PROGRESS: {running.get('kind')} {running.get('incident_id', '')} "
                     f"{running.get('phase', '')} {running.get('progress', '')}%")
    return ", ".join(parts)


def deploy(lab: Lab, release: str, *, force: bool = False, quiet: bool = False) -> int:
    args = ["-e", f"{DEPLOY_VAR}={release}"]
    if force:
        args += ["-e", "force=true"]
    step(f"deploy {release} (playbooks/deploy.yml)")
    res = playbook("deploy.yml", *args, quiet=quiet, label=f"deploy-{release}")
    if res.rc == 0:
        ok(f"{release} deployed in {res.seconds:.0f}s")
    return res.rc


def ensure_v2(lab: Lab, shas: dict[str, str], *, quiet: bool = False) -> None:
    """Deploy v1 then v2 once; a lab already on v2 stays as it is (idempotent)."""
    apps = lab.group("app")
    current = {h.name: current_sha(agent_status(lab, h)) for h in apps}
    if all(sha == shas["v2"] for sha in current.values()):
        ok("every app host already runs v2: nothing to deploy")
        return
    if any(sha not in (None, shas["v1"], shas["v2"]) for sha in current.values()):
        named = {v: k for k, v in shas.items()}
        warn(
            "an app host runs another release ("
            + ", ".join(f"{h}={named.get(s or '', s or 'none')}" for h, s in current.items())
            + "): left as it is; 'make lab-down && make lab' starts from scratch"
        )
        return
    if any(sha is None for sha in current.values()) and deploy(lab, "v1", quiet=quiet) != 0:
        die("deploying v1 failed: see the log above")
    if deploy(lab, "v2", quiet=quiet) != 0:
        die("deploying v2 failed: see the log above")
