#!/usr/bin/env python3
"""Online copy or check of a SQLite database (Grafana's), run on the host by backup.yml/restore.yml.

    sqlite_backup.py backup SOURCE TARGET   SQLite's backup API: consistent while the owner writes
    sqlite_backup.py check FILE             integrity check only

Prints one JSON object (size, sha256, integrity); exits 1 with a message when the file is not an
intact SQLite database. Only the Python standard library (the hosts' python3).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
from pathlib import Path


def describe(path: Path) -> dict[str, object]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        integrity = "; ".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall())
    finally:
        conn.close()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"path": str(path), "size": path.stat().st_size, "sha256": digest, "integrity": integrity}


def backup(source: Path, target: Path) -> dict[str, object]:
    if not source.is_file():
        raise sqlite3.DatabaseError(f"{source}: no such file")
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
            src.close()
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return describe(target)


def main(argv: list[str]) -> int:
    try:
        if len(argv) == 3 and argv[0] == "backup":
            info = backup(Path(argv[1]), Path(argv[2]))
        elif len(argv) == 2 and argv[0] == "check":
            info = describe(Path(argv[1]))
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except (OSError, sqlite3.Error) as exc:
        print(f"sqlite_backup: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(info))
    if info["integrity"] != "ok":
        print(f"sqlite_backup: {info['path']}: integrity check failed: {info['integrity']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
