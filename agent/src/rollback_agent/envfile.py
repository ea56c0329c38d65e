"""Environment files as systemd's ``EnvironmentFile=`` reads them."""

from __future__ import annotations

import re
from pathlib import Path

_ENV_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def parse_environment_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them (comments, quotes, blank lines)."""
    env: dict[str, str] = {}
    text = path.read_text(encoding="utf-8")
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("export "):
            line = line[len("export ") :]
        match = _ENV_LINE.match(line)
        if not match:
            raise ValueError(f"{path}:{number}: not a KEY=VALUE line")
        key, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
            if raw.strip().split("=", 1)[1].strip().startswith('"'):
                value = value.replace('\\"', '"').replace("\\\\", "\\")
        env[key] = value
    return env
