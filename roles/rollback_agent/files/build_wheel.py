#!/usr/bin/env python3
"""Build the rollback agent's wheel on the controller, reproducibly.

    build_wheel.py SOURCE_DIR OUTPUT_DIR

Copies SOURCE_DIR (agent/) to a temporary directory without build leftovers,
builds a wheel there with pip (no build isolation: the controller's setuptools
and wheel, no network) and SOURCE_DATE_EPOCH fixed, so the same source always
gives the same bytes. The wheel is moved into OUTPUT_DIR atomically; prints
{"wheel": PATH, "sha256": HEX} on stdout. Exits non-zero with pip's output when
the build fails.

Since the same source gives the same wheel, OUTPUT_DIR/.source-<hash of the
source files> names the wheel built from that source and its sha256: an
unchanged source tree is not built again while that wheel is still there with
those bytes (a no-change site.yml run spends no time in pip here).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

IGNORED = shutil.ignore_patterns(
    "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache", ".ruff_cache",
    "bench",
)
EPOCH = "315532800"  # 1980-01-01, the earliest time a zip file can hold


def source_hash(source: Path) -> str:
    """sha256 over the relative path and bytes of every file the build copies."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(source):
        skipped = IGNORED(root, [*dirs, *files])
        dirs[:] = sorted(d for d in dirs if d not in skipped)
        for name in sorted(f for f in files if f not in skipped):
            path = Path(root) / name
            digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def built_before(output: Path, record: Path) -> Path | None:
    """The wheel the record names, if it still holds the bytes built from that source."""
    if not record.is_file():
        return None
    name, _, digest = record.read_text().strip().partition(" ")
    wheel = output / name
    if wheel.is_file() and hashlib.sha256(wheel.read_bytes()).hexdigest() == digest:
        return wheel
    return None  # another source's wheel of the same version replaced it: build again


def report(wheel: Path, digest: str) -> int:
    print(json.dumps({"wheel": str(wheel), "sha256": digest}))
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    source, output = Path(argv[0]).resolve(), Path(argv[1])
    if not (source / "pyproject.toml").is_file():
        print(f"{source} has no pyproject.toml: not the agent's source tree", file=sys.stderr)
        return 2
    output.mkdir(parents=True, exist_ok=True)
    record = output / f".source-{source_hash(source)}"
    cached = built_before(output, record)
    if cached is not None:
        return report(cached, hashlib.sha256(cached.read_bytes()).hexdigest())
    with tempfile.TemporaryDirectory(prefix="rollback-agent-build-") as tmp:
        tree = Path(tmp) / "src"
        shutil.copytree(source, tree, ignore=IGNORED)
        wheels = Path(tmp) / "wheels"
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
             "--disable-pip-version-check", "--wheel-dir", str(wheels), str(tree)],
            capture_output=True, text=True, env={**os.environ, "SOURCE_DATE_EPOCH": EPOCH}, check=False,
        )
        built = sorted(wheels.glob("*.whl"))
        if proc.returncode != 0 or len(built) != 1:
            print(f"building the agent's wheel failed:\n{proc.stdout}\n{proc.stderr}", file=sys.stderr)
            return 1
        target = output / built[0].name
        staged = output / f".{built[0].name}.{os.getpid()}"
        shutil.copyfile(built[0], staged)
        os.replace(staged, target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    record.write_text(f"{target.name} {digest}\n")
    return report(target, digest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
