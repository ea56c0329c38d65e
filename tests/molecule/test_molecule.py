"""`molecule test` of every role scenario (roles/<role>/molecule/default), one test per role.

Every scenario runs with the shared base configuration tests/molecule/base.yml (podman systemd
containers on a link-local network of their own, reached over SSH) and holds the heavy-suite
lock while it runs (lab_kit.lock, the one the lab and the e2e tests take: HEAVY_SUITE_LOCK, and
nothing taken twice under HEAVY_SUITE_LOCK_HELD=1), so that it never overlaps with the lab or
another heavy suite. The wall time of each scenario is measured from
the moment it holds the lock, printed at the end of the session and kept in
.cache/molecule/wall-times.json; the full output of a failed scenario is shown with the failure
and kept in .cache/molecule/<role>.log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lab_kit.lock import heavy_lock
from testkit import SERVICE_ROLES

pytestmark = pytest.mark.molecule

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BASE_CONFIG = ROOT / "tests" / "molecule" / "base.yml"
RESULTS = ROOT / ".cache" / "molecule"
SCENARIO_TIMEOUT = 25 * 60

SCENARIOS = sorted(p.parents[2].name for p in ROOT.glob("roles/*/molecule/default/molecule.yml"))
# The roles of issue 4 (names fixed) and the shared role whose tarball path has its own scenario.
REQUIRED = {*SERVICE_ROLES, "stack_common"}


def record(times: dict[str, tuple[float, str]], role: str, seconds: float, outcome: str) -> None:
    times[role] = (seconds, outcome)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "wall-times.json"
    times = json.loads(path.read_text()) if path.exists() else {}
    times[role] = {"seconds": round(seconds, 1), "outcome": outcome, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path.write_text(json.dumps(times, indent=2, sort_keys=True) + "\n")


def test_every_role_has_a_scenario() -> None:
    missing = sorted(REQUIRED - set(SCENARIOS))
    assert not missing, f"roles without a molecule scenario (roles/<role>/molecule/default): {missing}"


@pytest.mark.parametrize("role", SCENARIOS)
def test_molecule_scenario(role: str, molecule_wall_times: dict[str, tuple[float, str]]) -> None:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_FORCE_COLOR": "0",
        "PY_COLORS": "0",
        "NO_COLOR": "1",
    }
    # molecule writes the Ansible configuration of each scenario itself
    env.pop("ANSIBLE_CONFIG", None)
    command = [str(BIN / "molecule"), "--base-config", str(BASE_CONFIG), "test"]
    with heavy_lock():
        started = time.monotonic()
        try:
            proc = subprocess.run(
                command,
                cwd=ROOT / "roles" / role,
                env=env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=SCENARIO_TIMEOUT,
                check=False,
            )
            output, returncode = proc.stdout, proc.returncode
        except subprocess.TimeoutExpired as exc:
            partial = exc.stdout or ""
            output = partial if isinstance(partial, str) else partial.decode(errors="replace")
            returncode = -1
            output += f"\n*** molecule test did not finish within {SCENARIO_TIMEOUT} s ***\n"
            # leave no container behind
            subprocess.run(
                [str(BIN / "molecule"), "--base-config", str(BASE_CONFIG), "destroy"],
                cwd=ROOT / "roles" / role,
                env=env,
                capture_output=True,
                check=False,
            )
        elapsed = time.monotonic() - started
    record(molecule_wall_times, role, elapsed, "passed" if returncode == 0 else "FAILED")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{role}.log").write_text(output)
    print(f"molecule test of {role}: {elapsed:.1f} s, exit {returncode}")
    if returncode != 0:
        print(output)
        tail = "\n".join(output.splitlines()[-150:])
        pytest.fail(
            f"molecule test of roles/{role} failed (exit {returncode}) after {elapsed:.0f} s; "
            f"full output above and in {RESULTS / (role + '.log')}; last lines:\n{tail}",
            pytrace=False,
        )
