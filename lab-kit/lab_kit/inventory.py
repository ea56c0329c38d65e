"""The lab's hosts, read from inventories/lab with ansible-inventory (one source of truth)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
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

    def var(self, key: str) -> Any:
        """A lab-wide variable, rendered; a clear error when it is missing or does not render."""
        return _need("the lab-wide settings", self.vars, key)

    @property
    def network(self) -> str:
        return str(self.var("lab_network"))

    @property
    def subnet(self) -> str:
        return str(self.var("lab_subnet"))

    @property
    def gateway(self) -> str:
        return str(self.var("lab_gateway"))

    @property
    def image(self) -> str:
        return str(self.var("lab_image"))

    @property
    def base_image(self) -> str:
        return str(self.var("lab_base_image"))

    @property
    def capture_port(self) -> int:
        return int(self.var("lab_capture_http_port"))

    @property
    def smtp_port(self) -> int:
        return int(self.var("lab_capture_smtp_port"))

    def group(self, name: str) -> list[Host]:
        return [h for h in self.hosts.values() if name in h.groups]


PER_HOST = ("lab_published_ports", "lab_container")


class InventoryError(RuntimeError):
    """The lab inventory lacks a variable the lab kit needs, or one of them does not render."""


class _Unrendered:
    def __init__(self, error: Exception) -> None:
        self.error = error


def _render(value: Any, context: dict[str, Any]) -> Any:
    if isinstance(value, str) and "{{" in value:
        return jinja2.Template(value, undefined=jinja2.StrictUndefined).render(**context)
    return value


def _render_all(wanted: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Render each variable (two passes: one may name another); keep failures as _Unrendered."""
    out: dict[str, Any] = {}
    for k, v in wanted.items():
        try:
            out[k] = _render(v, ctx)
        except jinja2.TemplateError as e:
            out[k] = _Unrendered(e)
    rendered = {k: v for k, v in out.items() if not isinstance(v, _Unrendered)}
    for k, v in list(out.items()):
        if isinstance(v, _Unrendered):
            v = wanted[k]
        try:
            out[k] = _render(v, {**ctx, **rendered})
        except jinja2.TemplateError as e:
            out[k] = _Unrendered(e)
    return out


def _need(where: str, values: dict[str, Any], key: str) -> Any:
    """``values[key]`` as rendered; an error naming the variable when it is missing or did not render.

    Only what the kit reads must render here: other lab_* variables may use Ansible's own context
    (groups, hostvars, role defaults) that a bare Jinja render lacks.
    """
    if key not in values:
        raise InventoryError(f"inventories/lab: {where} has no variable {key}")
    v = values[key]
    if isinstance(v, _Unrendered):
        raise InventoryError(f"inventories/lab: {key} of {where} does not render: {v.error}")
    return v


@cache
def load(inventory: Path = INVENTORY) -> Lab:
    out = subprocess.run(
        [str(VENV_BIN / "ansible-inventory"), "-i", str(inventory), "--list"],
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
        rendered = _render_all(wanted, ctx)
        where = f"host {name}"
        common = {k: v for k, v in rendered.items() if k.startswith("lab_") and k not in PER_HOST}
        ports = _need(where, rendered, "lab_published_ports") if "lab_published_ports" in hv else []
        hosts[name] = Host(
            name=name,
            address=str(_need(where, rendered, "ansible_host")),
            container=str(_need(where, rendered, "lab_container")),
            groups=tuple(sorted(groups.get(name, set()))),
            ports=tuple(Port(int(p["host"]), int(p["container"]), str(p["name"])) for p in ports),
        )
    return Lab(hosts, common)
