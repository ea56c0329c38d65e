"""Benchmarks on the lab (make bench): figures printed beside the product's targets.

- make lab / site.yml: wall time of the converge that built this lab (from .lab/timings.jsonl)
  and of a no-change run now, with task and changed counts (target: no-change < 60 s).
- an incident: bad deploy -> alert pending -> firing -> webhook at the agents -> rollback done
  -> resolved, each rollback phase's duration (targets: rollback starts < 30 s after firing,
  alert -> rollback < 1 min after the rule's for:, rollback < 5 min).
"""

from __future__ import annotations

import json

import pytest
from lab_kit import incident
from lab_kit.inventory import Lab
from lab_kit.paths import TIMINGS
from lab_kit.runner import playbook
from testkit.lab import ensure_good, wait_cooldown

pytestmark = pytest.mark.bench


def timings() -> list[dict]:
    if not TIMINGS.exists():
        return []
    return [json.loads(line) for line in TIMINGS.read_text().splitlines() if line.strip()]


def test_bench_lab_and_site_yml(lab: Lab) -> None:
    rows = timings()
    converges = [
        t for t in rows if t["kind"] == "playbook" and t["playbook"] == "site.yml" and t["changed"] > 0
    ]
    ups = [t for t in rows if t["kind"] == "lab_up"]
    again = playbook("site.yml", quiet=True, label="bench-site-no-change")
    assert again.rc == 0, f"site.yml failed: {again.log}"
    print("\n--- lab / site.yml (issue 4 and 7 benchmarks) ---")
    if ups:
        print(f"make lab, first run of this lab:        {ups[0]['seconds']:7.1f} s   (target < 900 s)")
        print(f"make lab, latest run:                   {ups[-1]['seconds']:7.1f} s")
    if converges:
        c = converges[0]
        print(
            f"site.yml converge (from scratch):       {c['seconds']:7.1f} s   "
            f"tasks {c['tasks']}, changed {c['changed']}"
        )
    else:
        print("site.yml converge (from scratch):       not recorded for this lab (run 'make lab-down' first)")
    print(
        f"site.yml no-change run:                 {again.seconds:7.1f} s   tasks {again.tasks}, "
        f"changed {again.changed}   (target < 60 s, changed 0)"
    )


def test_bench_incident_timeline(lab: Lab, shas: dict[str, str]) -> None:
    ensure_good(lab, shas)
    wait_cooldown(lab)
    r = incident.run(lab, "v3", timeout=480, quiet_load=True)
    assert r.success, r.reason
    m = r.marks
    live = min(v for k, v in m.items() if k.startswith("bad_live_"))
    hook = min(v for k, v in m.items() if k.startswith("webhook_"))
    done = max(v for k, v in m.items() if k.startswith("rollback_done_"))
    print("\n--- incident timeline (seconds after the bad deploy started) ---")
    print(f"bad release live on the first host      {live:7.1f}")
    print(f"alert pending                           {m['pending']:7.1f}")
    print(
        f"alert firing                            {m['firing']:7.1f}   (pending -> firing = the rule's for:)"
    )
    print(
        f"webhook reached an agent                {hook:7.1f}   firing -> webhook {hook - m['firing']:5.1f} s"
    )
    print(f"rollback complete on every host         {done:7.1f}   firing -> done {done - m['firing']:5.1f} s")
    print(f"alert resolved                          {m.get('resolved', float('nan')):7.1f}")
    print(
        "targets: rollback initiation < 30 s, alert -> rollback < 60 s after for:, rollback < 300 s"
    )
    for host, incs in sorted(r.incidents.items()):
        for inc in incs.values():
            if not inc.get("result"):
                continue
            phases = ", ".join(
                f"{p['name']} {(p['ended_at'] or 0) - p['started_at']:.2f}s"
                for p in inc["phases"]
                if p.get("ended_at")
            )
            print(f"{host}: rollback {inc['duration']:.1f} s ({phases})")
