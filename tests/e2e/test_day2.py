"""Day-2 on the lab: back up, destroy, restore (playbooks/backup.yml and restore.yml).

The drill of the production guide, end to end: a silence, a rollback in app1's ledger and
Prometheus samples exist; backup.yml saves them; the data is destroyed (app1's state database
removed, the silence deleted, mon1's TSDB wiped); restore.yml puts everything back; then the
silence is active again on both Alertmanagers, app1's agent shows the same history and refuses to
re-deploy the release it quarantined, and mon1's Prometheus answers for a moment before the backup.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lab_kit import deploys, incident
from lab_kit.inventory import Lab
from lab_kit.podman import exec_in as in_host
from lab_kit.runner import ensure_secrets, playbook
from testkit.lab import ensure_good, wait_cooldown

pytestmark = pytest.mark.e2e

DATA_DIR = "/var/lib/prometheus/metrics2"


def am_url(lab: Lab, host: str) -> str:
    return f"http://127.0.0.1:{lab.hosts[host].port('alertmanager')}"


def prom_query(lab: Lab, host: str, query: str, at: float) -> list[Any]:
    qs = urllib.parse.urlencode({"query": query, "time": f"{at:.3f}"})
    url = f"http://127.0.0.1:{lab.hosts[host].port('prometheus')}/api/v1/query?{qs}"
    data = incident.get_json(url, timeout=10)
    return list(data["data"]["result"])


def wait_ready(lab: Lab, host: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{lab.hosts[host].port('prometheus')}/-/ready"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"Prometheus on {host} not ready after {timeout}s")


def silences(lab: Lab, host: str) -> list[dict[str, Any]]:
    return list(incident.get_json(f"{am_url(lab, host)}/api/v2/silences", timeout=10))


def create_silence(lab: Lab, comment: str) -> str:
    now = time.time()
    body = {
        "matchers": [{"name": "alertname", "value": "Day2BackupDrill", "isRegex": False, "isEqual": True}],
        "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "endsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 7200)),
        "createdBy": "tests/e2e/test_day2.py",
        "comment": comment,
    }
    req = urllib.request.Request(
        f"{am_url(lab, 'mon1')}/api/v2/silences", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(json.loads(resp.read())["silenceID"])


def delete_silence(lab: Lab, silence_id: str) -> None:
    req = urllib.request.Request(f"{am_url(lab, 'mon1')}/api/v2/silence/{silence_id}", method="DELETE")
    with urllib.request.urlopen(req, timeout=10):
        pass


def active(items: list[dict[str, Any]], comment: str) -> list[dict[str, Any]]:
    return [s for s in items if s["comment"] == comment and s["status"]["state"] == "active"]


def run_playbook(name: str, *args: str) -> Any:
    return playbook(name, *args, quiet=True, label=f"test-day2-{Path(name).stem}")


def log_tail(result: Any, chars: int = 6000) -> str:
    return result.log.read_text()[-chars:] if result.log else ""


def is_active(lab: Lab, host: str, unit: str) -> bool:
    return in_host(lab.hosts[host], "systemctl", "is-active", unit, check=False).stdout.strip() == "active"


def main_pid(lab: Lab, host: str, unit: str) -> str:
    return in_host(lab.hosts[host], "systemctl", "show", "-p", "MainPID", "--value", unit).stdout.strip()


def cli(lab: Lab, host: str, *args: str) -> Any:
    return in_host(lab.hosts[host], "rollback-agent", *args, check=False, timeout=600)


@dataclass
class Drill:
    backup_dir: Path
    comment: str
    incident_id: str
    bad_sha: str
    before_backup: float
    status_before: dict[str, Any]
    backup_seconds: float
    restore_seconds: float
    wiped_series: list[Any]
    history_after_destroy: list[Any]
    silences_after_destroy: list[Any]


@pytest.fixture(scope="module")
def drill(lab: Lab, shas: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Any:
    ensure_good(lab, shas)
    wait_cooldown(lab)
    backup_dir = tmp_path_factory.mktemp("day2") / "backup"
    comment = f"day2 drill {secrets.token_hex(4)}"
    silence_id = create_silence(lab, comment)
    try:
        out = cli(lab, "app1", "rollback", "--json", "--reason", "day-2 drill: an incident in the ledger")
        assert out.returncode == 0, out.stdout + out.stderr
        rolled = json.loads(out.stdout)
        assert rolled["result"] == "success", rolled
        status_before = deploys.agent_status(lab, lab.hosts["app1"]) or {}
        time.sleep(2)
        before_backup = time.time() - 1
        assert prom_query(lab, "mon1", "up", before_backup), "mon1 has no sample to back up"

        result = run_playbook("backup.yml", "-e", f"backup_dir={backup_dir}", "-e", "backup_prometheus=true")
        assert result.rc == 0, log_tail(result)
        backup_seconds = result.seconds

        # destroy: app1's ledger, the silence, mon1's time series database
        in_host(lab.hosts["app1"], "sh", "-c",
                "systemctl stop rollback-agent && rm -f /var/lib/rollback-agent/state.db* "
                "&& systemctl start rollback-agent")
        delete_silence(lab, silence_id)
        in_host(lab.hosts["mon1"], "sh", "-c",
                f"systemctl stop prometheus && rm -rf {DATA_DIR}/* && systemctl start prometheus")
        wait_ready(lab, "mon1")
        wiped = prom_query(lab, "mon1", "up", before_backup)
        history_after = (deploys.agent_status(lab, lab.hosts["app1"]) or {}).get("history")
        silences_after = active(silences(lab, "mon1"), comment)

        result = run_playbook("restore.yml", "-e", f"backup_dir={backup_dir}")
        assert result.rc == 0, log_tail(result)
        yield Drill(
            backup_dir=backup_dir, comment=comment, incident_id=rolled["incident_id"], bad_sha=shas["v2"],
            before_backup=before_backup, status_before=status_before, backup_seconds=backup_seconds,
            restore_seconds=result.seconds, wiped_series=wiped, history_after_destroy=history_after or [],
            silences_after_destroy=silences_after,
        )
    finally:
        for s in active(silences(lab, "mon1"), comment):
            delete_silence(lab, s["id"])
        assert deploys.deploy(lab, "v2", force=True, quiet=True) == 0, "could not put v2 back"


def test_backup_folder_is_private_with_a_manifest_per_host(drill: Drill) -> None:
    root = drill.backup_dir
    assert root.stat().st_mode & 0o777 == 0o700
    kinds = {}
    for host in ("app1", "app2", "mon1", "mon2"):
        manifest = json.loads((root / host / "manifest.json").read_text())
        assert manifest["host"] == host
        kinds[host] = set(manifest["items"])
        for kind, item in manifest["items"].items():
            path = root / host / item["file"]
            assert path.stat().st_size == item["size"], (host, kind)
            assert hashlib.sha256(path.read_bytes()).hexdigest() == item["sha256"], (host, kind)
            assert item["versions"] and all(item["versions"].values()), (host, kind, item)
    assert kinds["app1"] == kinds["app2"] == {"agent_state"}
    assert kinds["mon1"] == kinds["mon2"] == {"silences", "alertmanager_config", "prometheus"}
    print(f"\nbackup of the lab: {sum(p.stat().st_size for p in root.rglob('*') if p.is_file())} bytes "
          f"in {drill.backup_seconds:.0f}s; restore in {drill.restore_seconds:.0f}s")


def test_no_secret_in_the_backup(drill: Drill) -> None:
    values = [v for v in ensure_secrets().values() if len(v) >= 8]
    for path in drill.backup_dir.rglob("*"):
        if path.is_file() and not path.name.endswith(".tar.gz"):
            data = path.read_bytes()
            assert not [v for v in values if v.encode() in data], f"{path} holds a secret of the lab"
    assert not list(drill.backup_dir.rglob("secrets*")) and not list(drill.backup_dir.rglob("web.yml"))


def test_the_data_was_really_destroyed(drill: Drill) -> None:
    assert drill.wiped_series == []
    assert drill.history_after_destroy == []
    assert drill.silences_after_destroy == []


def test_the_silence_is_back_on_both_alertmanagers(lab: Lab, drill: Drill) -> None:
    deadline = time.monotonic() + 30
    while True:
        found = {h: active(silences(lab, h), drill.comment) for h in ("mon1", "mon2")}
        if all(len(v) == 1 for v in found.values()) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert all(len(v) == 1 for v in found.values()), found
    assert found["mon1"][0]["matchers"][0]["value"] == "Day2BackupDrill"


def test_the_agent_has_its_history_and_refuses_the_quarantined_release(lab: Lab, drill: Drill) -> None:
    status = deploys.agent_status(lab, lab.hosts["app1"]) or {}
    before = [(i["incident_id"], i["status"]) for i in drill.status_before["history"]]
    assert [(i["incident_id"], i["status"]) for i in status["history"]] == before
    assert (drill.incident_id, "success") in before
    out = cli(lab, "app1", "deploy", "v2")
    assert out.returncode == 3, out.stdout + out.stderr
    assert "bad" in (out.stdout + out.stderr).lower()
    for unit in ("rollback-agent", "sample-app"):
        assert is_active(lab, "app1", unit), unit


def test_prometheus_answers_for_a_sample_before_the_backup(lab: Lab, drill: Drill) -> None:
    series = prom_query(lab, "mon1", "up", drill.before_backup)
    assert series, "mon1 lost the samples recorded before the backup"
    assert {s["metric"]["job"] for s in series} >= {"prometheus", "alertmanager"}
    for host in ("mon1", "mon2"):
        for unit in ("prometheus", "prometheus-alertmanager"):
            assert is_active(lab, host, unit), (host, unit)


def test_restore_refuses_a_damaged_file_or_another_version(lab: Lab, drill: Drill, tmp_path: Path) -> None:
    pid_before = main_pid(lab, "app1", "rollback-agent")
    copy = tmp_path / "copy"
    shutil.copytree(drill.backup_dir, copy)
    ledger = copy / "app1" / "rollback-agent" / "state.db"
    original = ledger.read_bytes()
    damaged = bytearray(original)
    damaged[-100] ^= 0xFF
    ledger.write_bytes(bytes(damaged))
    restore = ("restore.yml", "-e", f"backup_dir={copy}", "--tags", "agent_state", "--limit", "app1")
    result = run_playbook(*restore)
    assert result.rc != 0
    assert "does not match the manifest" in log_tail(result), log_tail(result)
    ledger.write_bytes(original)
    manifest_path = copy / "app1" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["items"]["agent_state"]["versions"]["rollback_agent"] = "0.0.1"
    manifest_path.write_text(json.dumps(manifest))
    result = run_playbook(*restore)
    assert result.rc != 0
    assert "rollback_agent 0.0.1 but this host runs" in log_tail(result), log_tail(result)
    # refused before anything changed: the agent was not restarted, its history is the restored one
    assert main_pid(lab, "app1", "rollback-agent") == pid_before
    status = deploys.agent_status(lab, lab.hosts["app1"]) or {}
    assert drill.incident_id in [i["incident_id"] for i in status["history"]]


# --- upgrade.yml: one monitoring host at a time, alerting never stops -------------------------------
class AlertmanagerPoller(threading.Thread):
    """Asks both Alertmanagers' API for their status every 0.2 s while a playbook runs."""

    def __init__(self, lab: Lab) -> None:
        super().__init__(daemon=True)
        self.urls = {h: f"{am_url(lab, h)}/api/v2/status" for h in ("mon1", "mon2")}
        self.samples: list[tuple[float, dict[str, bool]]] = []
        self.done = threading.Event()

    def up(self, url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return resp.status == 200 and json.loads(resp.read())["cluster"]["status"] == "ready"
        except (OSError, ValueError, KeyError):
            return False

    def run(self) -> None:
        while not self.done.is_set():
            self.samples.append((time.time(), {h: self.up(u) for h, u in self.urls.items()}))
            self.done.wait(0.2)

    def stop(self) -> list[tuple[float, dict[str, bool]]]:
        self.done.set()
        self.join()
        return self.samples


def unit_times(lab: Lab, host: str, unit: str) -> dict[str, float | str]:
    out = in_host(lab.hosts[host], "systemctl", "show", unit, "--timestamp=unix", "-p", "MainPID",
                  "-p", "ActiveEnterTimestamp", "-p", "InactiveEnterTimestamp").stdout
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {
        "pid": props["MainPID"],
        "active": float(props["ActiveEnterTimestamp"].lstrip("@") or 0),
        "inactive": float(props["InactiveEnterTimestamp"].lstrip("@") or 0),
    }


MON_UNITS = ("prometheus", "prometheus-alertmanager")
# A change that needs a restart of both services (new flags), and the inventory's own flags back.
RESTART_CHANGE = {
    "prometheus_extra_args": ["--log.level=debug"],
    "alertmanager_extra_args": ["--log.level=debug"],
}


def upgrade(lab: Lab, extra: dict[str, Any] | None = None, *args: str) -> tuple[Any, list[Any]]:
    poller = AlertmanagerPoller(lab)
    poller.start()
    try:
        result = run_playbook("upgrade.yml", *(["-e", json.dumps(extra)] if extra else []), *args)
    finally:
        samples = poller.stop()
    return result, samples


def test_upgrade_restarts_one_monitoring_host_at_a_time_and_alerting_never_stops(lab: Lab) -> None:
    before = {(h, u): unit_times(lab, h, u) for h in ("mon1", "mon2") for u in MON_UNITS}
    try:
        result, samples = upgrade(lab, RESTART_CHANGE)
        assert result.rc == 0, log_tail(result)
        after = {(h, u): unit_times(lab, h, u) for h in ("mon1", "mon2") for u in MON_UNITS}
    finally:
        back, back_samples = upgrade(lab)  # the inventory's flags again (restarts both hosts once more)
    assert back.rc == 0, log_tail(back)
    for key in before:
        assert after[key]["pid"] != before[key]["pid"], f"{key}: not restarted by the upgrade"
    # mon2 went down only after mon1 was back (and had passed the checks), never both at once
    for unit in MON_UNITS:
        assert after[("mon2", unit)]["inactive"] > after[("mon1", unit)]["active"], (unit, after)
    for run in (samples, back_samples):
        assert len(run) > 50, f"too few polls: {len(run)}"
        gaps = [(t, s) for t, s in run if not any(s.values())]
        assert not gaps, f"no Alertmanager answered at {gaps[:5]}"
    log = result.log.read_text() if result.log else ""
    assert log.index("mon1: Prometheus") < log.index("mon2: Prometheus"), "hosts not upgraded in order"
    down = {h: sum(not s[h] for _, s in samples) for h in ("mon1", "mon2")}
    print(f"\nupgrade.yml on the lab: {result.seconds:.0f}s (back: {back.seconds:.0f}s), "
          f"{len(samples) + len(back_samples)} polls, one Alertmanager always answered; down polls: {down}")


def test_a_failed_upgrade_stops_on_the_first_host_and_leaves_the_other_untouched(lab: Lab) -> None:
    before = {h: unit_times(lab, h, "prometheus") for h in ("mon1", "mon2")}
    try:
        broken = {"prometheus_extra_args": ["--no-such-flag"], "day2_ready_timeout": 20}
        result, samples = upgrade(lab, broken)
        assert result.rc != 0
        assert unit_times(lab, "mon2", "prometheus")["pid"] == before["mon2"]["pid"], "mon2 was touched"
        assert "mon2: Prometheus" not in (result.log.read_text() if result.log else "")
        assert all(s["mon2"] for _, s in samples), "mon2's Alertmanager went down"
    finally:
        back, _ = upgrade(lab)
    assert back.rc == 0, log_tail(back)
    assert is_active(lab, "mon1", "prometheus")


def test_upgrade_refused_while_the_alertmanager_cluster_is_not_whole(lab: Lab) -> None:
    before = unit_times(lab, "mon1", "prometheus-alertmanager")
    in_host(lab.hosts["mon2"], "systemctl", "stop", "prometheus-alertmanager")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until mon1 sees its peer gone
            status = incident.get_json(f"{am_url(lab, 'mon1')}/api/v2/status", timeout=5)
            if len(status["cluster"]["peers"]) < 2:
                break
            time.sleep(1)
        result = run_playbook("upgrade.yml", "--limit", "mon1")
        assert result.rc != 0
        assert "upgrading it now could leave no Alertmanager running" in log_tail(result), log_tail(result)
        assert unit_times(lab, "mon1", "prometheus-alertmanager")["pid"] == before["pid"]
    finally:
        in_host(lab.hosts["mon2"], "systemctl", "start", "prometheus-alertmanager")
