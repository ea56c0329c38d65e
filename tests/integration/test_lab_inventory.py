"""The lab kit reads the lab's hosts from inventories/lab (what `make lab` and the e2e suite boot).

It renders the few variables it needs with plain Jinja, without Ansible's context: a lab-wide
variable that uses ``groups`` or ``hostvars`` (as lab_longterm_url does) must not stop it, and a
needed one that does not render must be named in the error. Caught here in seconds, not at the
start of the lab suite.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from pathlib import Path

import pytest
from lab_kit import inventory
from lab_kit.paths import INVENTORY, ROOT, VENV_BIN

pytestmark = pytest.mark.integration


def test_the_lab_inventory_loads_every_host_on_the_lab_subnet() -> None:
    lab = inventory.load()
    subnet = ipaddress.ip_network(lab.subnet)
    assert subnet.subnet_of(ipaddress.ip_network("169.254.0.0/16"))
    assert sorted(lab.hosts) == ["app1", "app2", "mon1", "mon2"]
    for host in lab.hosts.values():
        assert ipaddress.ip_address(host.address) in subnet, host
        assert host.container.startswith("sre-lab-"), host
        assert host.ports, host
    assert [h.name for h in lab.group("prometheus_longterm")] == ["mon2"]
    assert lab.capture_port > 0 and lab.image and lab.base_image


def _inventory(tmp_path: Path, host_vars: str) -> Path:
    (tmp_path / "group_vars" / "all").mkdir(parents=True)
    (tmp_path / "hosts.yml").write_text(
        "all:\n  children:\n    lab:\n      hosts:\n        h1:\n          ansible_host: 169.254.9.2\n"
    )
    (tmp_path / "group_vars" / "all" / "lab.yml").write_text(
        "lab_network: t\nlab_subnet: 169.254.9.0/24\nlab_gateway: 169.254.9.1\n"
        "lab_image: i\nlab_base_image: b\nlab_capture_http_port: 1\nlab_capture_smtp_port: 2\n"
        "lab_other: \"{{ hostvars[groups['lab'][0]].ansible_host }}\"\n" + host_vars
    )
    return tmp_path / "hosts.yml"


def test_a_lab_variable_using_ansibles_context_does_not_stop_the_kit(tmp_path: Path) -> None:
    lab = inventory.load(_inventory(tmp_path, 'lab_container: "c-{{ inventory_hostname }}"\n'))
    assert lab.hosts["h1"].container == "c-h1"
    assert lab.hosts["h1"].address == "169.254.9.2"
    assert lab.network == "t"
    with pytest.raises(inventory.InventoryError, match="lab_other"):
        lab.var("lab_other")


def test_a_needed_variable_that_does_not_render_is_named(tmp_path: Path) -> None:
    path = _inventory(tmp_path, 'lab_container: "{{ groups.lab[0] }}"\n')
    with pytest.raises(inventory.InventoryError, match="lab_container of host h1 does not render"):
        inventory.load(path)


def test_a_missing_variable_is_named(tmp_path: Path) -> None:
    with pytest.raises(inventory.InventoryError, match="host h1 has no variable lab_container"):
        inventory.load(_inventory(tmp_path, ""))


def test_ansible_reads_the_lab_inventory_without_a_warning() -> None:
    """Every file in inventories/lab is read as inventory: a playbook there gives warnings in every run."""
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-inventory"), "-i", str(INVENTORY), "--graph"],
        capture_output=True, text=True, check=True,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
    )
    assert "[WARNING]" not in proc.stderr, proc.stderr
    assert "@prometheus_longterm" in proc.stdout
