#!/usr/bin/python3
"""Molecule stand-in for Grafana's binary (the package is unreachable from the test machines).

`grafana server --config=FILE ... cfg:default.paths.data=DIR ...` reads what the
role wrote, the way Grafana would and as the service user inside the unit's
sandbox: grafana.ini with its $__file{} secrets, the provisioning files and the
dashboards they point at. It fails at start when any of it cannot be read or
parsed, writes to the data directory, then serves on http_addr:http_port:
  GET /api/health        {"database": "ok", "version": "molecule-stand-in"}
  GET /api/stand-in      what it loaded (dashboard uids, datasource file names,
                         which secrets were non-empty; never their values)
"""

from __future__ import annotations

import configparser
import getpass
import json
import os
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FILE_REF = re.compile(r"\$__file\{([^}]*)\}")


def expand(value: str) -> str:
    return FILE_REF.sub(lambda m: Path(m.group(1)).read_text().strip(), value)


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "server":
        print(f"stand-in supports 'server' only, got {argv}", file=sys.stderr)
        return 2
    opts = dict(a[2:].split("=", 1) for a in argv[1:] if a.startswith("--") and "=" in a)
    overrides = dict(a[4:].split("=", 1) for a in argv[1:] if a.startswith("cfg:"))
    ini = configparser.ConfigParser(interpolation=None)
    with open(opts["config"]) as fh:
        ini.read_file(fh)
    server = ini["server"]
    security = {k: expand(v) for k, v in ini["security"].items()}
    for key in ("admin_password", "secret_key"):
        if not security.get(key):
            print(f"[security] {key} is empty", file=sys.stderr)
            return 1
    provisioning = Path(ini["paths"]["provisioning"])
    datasources = sorted(p.name for p in (provisioning / "datasources").glob("*.yaml"))
    dash_paths = []
    for provider in (provisioning / "dashboards").glob("*.yaml"):
        dash_paths += re.findall(r"^\s+path:\s*(\S+)\s*$", provider.read_text(), re.M)
    uids = sorted(json.loads(f.read_text())["uid"] for d in dash_paths for f in Path(d).glob("*.json"))
    data = Path(overrides.get("default.paths.data", ini["paths"]["data"]))
    (data / "stand-in.state").write_text(json.dumps({"pid": os.getpid()}))
    Path(opts["pidfile"]).write_text(f"{os.getpid()}\n")
    state = {
        "user": getpass.getuser(),
        "dashboards": uids,
        "datasource_files": datasources,
        "secrets_loaded": {k: bool(security.get(k)) for k in ("admin_password", "secret_key")},
        "admin_user": security.get("admin_user"),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            health = {"database": "ok", "version": "molecule-stand-in"}
            routes = {"/api/health": health, "/api/stand-in": state}
            body = routes.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(body if body is not None else {"message": "Not found"}).encode())

    addr = server.get("http_addr", "0.0.0.0")  # noqa: S104 (Grafana's own default)
    port = int(server.get("http_port", "3000"))
    print(f"stand-in listening on {addr}:{port} with {len(uids)} dashboards", flush=True)
    ThreadingHTTPServer((addr, port), Handler).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
