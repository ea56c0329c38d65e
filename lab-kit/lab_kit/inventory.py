"""The lab's hosts, read from inventories/lab with ansible-inventory (one source of truth)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import jinja2

from lab_kit.paths import INVENTORY, VENV_BIN


@dataclass(frozen=True)
class Port:
    host: int
    container: int
    name: str


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    container: str
    groups: tuple[str, ...]
    ports: tuple[Port, ...] = field(default_factory=tuple)

    def port(self, name: str) -> int:
        for p in self.ports:
            if p.name == name:
                return p.host
        raise KeyError(f"{self.name} publishes no port named {name!r}")


@dataclass(frozen=True)
class Lab:
    hosts: dict[str, Host]
    vars: dict[str, Any]

    @property
    def network(self) -> str:
        return str(self.vars["lab_network"])

    @property
    def subnet(self) -> str:
        return str(self.vars["lab_subnet"])

    @property
    def gateway(self) -> str:
        return str(self.vars["lab_gateway"])

    @property
    def image(self) -> str:
        return str(self.vars["lab_image"])

    @property
    def base_image(self) -> str:
        return str(self.vars["lab_base_image"])

    @property
    def capture_port(self) -> int:
        return int(self.vars["lab_capture_http_port"])

    @property
    def smtp_port(self) -> int:
        return int(self.vars["lab_capture_smtp_port"])

    def group(self, name: str) -> list[Host]:
        return [h for h in self.hosts.values() if name in h.groups]


PER_HOST = ("lab_published_ports", "lab_container")


def _render(value: Any, context: dict[str, Any]) -> Any:
    if isinstance(value, str) and "{{" in value:
        return jinja2.Template(value, undefined=jinja2.StrictUndefined).render(**context)
    return value


@cache
def load() -> Lab:
    out = subprocess.run(
        [str(VENV_BIN / "ansible-inventory"), "-i", str(INVENTORY), "--list"],
        check=True, capture_output=True, text=True,
    )
    data = json.loads(out.stdout)
    hostvars: dict[str, dict[str, Any]] = data["_meta"]["hostvars"]
    groups: dict[str, set[str]] = {}
    for group, body in data.items():
        if group != "_meta" and isinstance(body, dict):
            for h in body.get("hosts", []):
                groups.setdefault(h, set()).add(group)
    hosts: dict[str, Host] = {}
    common: dict[str, Any] = {}
    for name, hv in sorted(hostvars.items()):
        wanted = {
            k: v for k, v in hv.items()
            if k == "ansible_host" or (k.startswith("lab_") and k != "lab_secrets")
        }
        ctx = {**wanted, "inventory_hostname": name}
        rendered = {k: _render(v, ctx) for k, v in wanted.items()}
        rendered = {k: _render(v, {**ctx, **rendered}) for k, v in rendered.items()}
        common = {k: v for k, v in rendered.items() if k.startswith("lab_") and k not in PER_HOST}
        hosts[name] = Host(
            name=name,
            address=str(rendered["ansible_host"]),
            container=str(rendered["lab_container"]),
            groups=tuple(sorted(groups.get(name, set()))),
            ports=tuple(Port(int(p["host"]), int(p["container"]), str(p["name"]))
                        for p in rendered.get("lab_published_ports", [])),
        )
    return Lab(hosts, common)
