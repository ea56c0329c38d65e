"""remote_write on the lab: both Prometheus replicas feed the long-term instance on mon2 (issue 14).

`playbooks/site.yml` runs roles/prometheus a second time on the `prometheus_longterm` hosts (mon2)
as `prometheus-longterm`: its own unit, port, directories and flags
(`--web.enable-remote-write-receiver`), beside mon2's own Prometheus. It scrapes nothing; every
series it holds was sent by a replica, labelled with that replica's `replica` external label.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from typing import Any

import pytest
import yaml
from lab_kit.inventory import Host, Lab
from lab_kit.podman import exec_in as in_host

pytestmark = pytest.mark.e2e

# inventories/lab/group_vars/all/monitoring.yml: prometheus_longterm_port
LONGTERM_PORT = 9096
LONGTERM_UNIT = "prometheus-longterm"
DATASOURCES = "/etc/grafana/provisioning/datasources/sre-monitoring.yaml"


def longterm_host(lab: Lab) -> Host:
    hosts = lab.group("prometheus_longterm")
    assert len(hosts) == 1, f"the lab should have one prometheus_longterm host, has {hosts}"
    return hosts[0]


def query(host: Host, promql: str) -> list[dict[str, Any]]:
    url = f"http://{host.address}:{LONGTERM_PORT}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def test_the_longterm_instance_holds_every_replicas_samples(lab: Lab) -> None:
    store = longterm_host(lab)
    replicas = {h.name for h in lab.group("monitoring")}
    # every replica scrapes node_exporter on every host: up == 1 for each, sent with its label
    want = {(r, f"{h.name}:9100") for r in replicas for h in lab.hosts.values()}
    deadline = time.monotonic() + 45  # the queues send within seconds; a fresh receiver, one scrape
    while True:
        result = query(store, 'up{job="node"}')
        have = {(s["metric"].get("replica", ""), s["metric"]["instance"]): s["value"][1] for s in result}
        if set(have) >= want or time.monotonic() > deadline:
            break
        time.sleep(2)
    missing = sorted(want - set(have))
    assert not missing, (
        f"{store.name}:{LONGTERM_PORT} ({LONGTERM_UNIT}) lacks up{{job=\"node\"}} series "
        f"(replica, instance) {missing}; it has {sorted(have)}"
    )
    assert {r for r, _ in have} == replicas, f"series with other replica labels: {sorted(have)}"
    down = {k: v for k, v in have.items() if v != "1"}
    assert not down, f"node_exporters reported down through remote_write: {down}"
    # the receiver scrapes nothing itself: no series lacks a replica label
    assert query(store, 'count({__name__=~"up|scrape_duration_seconds", replica=""})') == []


def unit_property(host: Host, unit: str, prop: str) -> str:
    out = in_host(host, "systemctl", "show", "--value", "-p", prop, unit).stdout
    return out.strip()


def test_the_longterm_instance_is_a_unit_of_its_own_beside_the_replica(lab: Lab) -> None:
    store = longterm_host(lab)
    units = {u: {p: unit_property(store, u, p) for p in ("ActiveState", "MainPID", "FragmentPath")}
             for u in ("prometheus", LONGTERM_UNIT)}
    assert all(u["ActiveState"] == "active" for u in units.values()), units
    assert units["prometheus"]["MainPID"] != units[LONGTERM_UNIT]["MainPID"], units
    # the package's unit stays Debian's (with the role's drop-in); the receiver gets a complete unit
    assert units["prometheus"]["FragmentPath"] == "/lib/systemd/system/prometheus.service", units
    assert units[LONGTERM_UNIT]["FragmentPath"] == f"/etc/systemd/system/{LONGTERM_UNIT}.service", units
    flags = {u: in_host(store, "cat", f"/etc/default/{u}").stdout for u in units}
    assert "--web.enable-remote-write-receiver" in flags[LONGTERM_UNIT], flags
    assert "--web.enable-remote-write-receiver" not in flags["prometheus"], flags
    assert f"--web.listen-address=0.0.0.0:{LONGTERM_PORT}" in flags[LONGTERM_UNIT], flags
    assert "--web.listen-address=0.0.0.0:9090" in flags["prometheus"], flags


def test_grafana_has_the_longterm_datasource(lab: Lab) -> None:
    store = longterm_host(lab)
    for mon in lab.group("monitoring"):
        sources = yaml.safe_load(in_host(mon, "cat", DATASOURCES).stdout)["datasources"]
        by_uid = {s["uid"]: s for s in sources}
        assert set(by_uid) == {"prometheus", "prometheus-longterm"}, f"{mon.name}: {sources}"
        longterm = by_uid["prometheus-longterm"]
        assert longterm["url"] == f"http://{store.address}:{LONGTERM_PORT}", f"{mon.name}: {longterm}"
        assert longterm["type"] == "prometheus" and longterm["isDefault"] is False, f"{mon.name}: {longterm}"
        assert by_uid["prometheus"]["isDefault"] is True, f"{mon.name}: {sources}"


def test_the_longterm_store_answers_on_the_loopback_port_the_lab_prints(lab: Lab) -> None:
    """`scripts/lab up` prints 127.0.0.1:<published port> for the long-term store: it must answer."""
    port = longterm_host(lab).port("prometheus-longterm")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=5) as r:
        assert r.status == 200
