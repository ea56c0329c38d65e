"""Build the sample service's release history: a real git repository.

    python build_releases.py DEST [--bundle FILE]

Releases (annotated tags) and what each one changes:

    v1       users, transactions, balances; migration 0001
    v2       + spending by category; migration 0002            (parent v1)
    v2.1     a healthy maintenance release: no migration       (parent v2, branch maintenance)
    v3       + transaction fees charged in fee_charges; migration 0003; DEFECT: every
               transaction above 200 fails with a 500          (parent v2, branch main)
    v3-slow  + the same fees and migration 0003; DEFECT: every
               transaction takes over a second                 (parent v2, branch slow)

Each release is the tree ``src/`` with the overlays ``releases/<name>/`` of
its ancestors and itself copied over it. Authors and dates are fixed, so the
same sources always give the same commit shas: rebuilding is a no-op and the
lab stays idempotent. ``--bundle`` also writes a git bundle of every ref, the
file the lab copies to the app hosts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import git

HERE = Path(__file__).resolve().parent
AUTHOR = "Sample Release Bot <releases@sample-app.invalid>"
IGNORED = {"__pycache__", ".venv", ".pytest_cache"}


@dataclass(frozen=True)
class Release:
    name: str
    parent: str | None
    date: str
    message: str
    branch: str | None = None


RELEASES = (
    Release("v1", None, "2026-01-05T10:00:00+00:00", "Release v1: users, transactions and balances"),
    Release("v2", "v1", "2026-01-12T10:00:00+00:00", "Release v2: spending by category (migration 0002)"),
    Release(
        "v2.1", "v2", "2026-01-15T10:00:00+00:00",
        "Release v2.1: maintenance (no migration, no behaviour change)\n\n"
        "A healthy release: the lab deploys it before breaking something that is not\n"
        "the release (make lab-break SCENARIO=not-the-cause).",
        branch="maintenance",
    ),
    Release(
        "v3", "v2", "2026-01-19T10:00:00+00:00",
        "Release v3: transaction fees (migration 0003)\n\n"
        "Known defect (the lab's bad release): the fee schedule has no top tier,\n"
        "so every transaction above 200 fails with HTTP 500.",
        branch="main",
    ),
    Release(
        "v3-slow", "v2", "2026-01-19T11:00:00+00:00",
        "Release v3-slow: transaction fees from monthly volume (migration 0003)\n\n"
        "Known defect (the lab's slow release): the volume query makes every\n"
        "transaction take more than a second.",
        branch="slow",
    ),
)
BY_NAME = {r.name: r for r in RELEASES}


def chain(release: Release) -> list[Release]:
    """The release and its ancestors, oldest first."""
    out = [release]
    while out[-1].parent is not None:
        out.append(BY_NAME[out[-1].parent])
    return out[::-1]


def copy_tree(src: Path, dest: Path) -> None:
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(part in IGNORED for part in rel.parts) or path.suffix == ".pyc":
            continue
        target = dest / rel
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
            target.chmod(0o755 if path.stat().st_mode & 0o100 else 0o644)


def release_tree(release: Release, dest: Path) -> None:
    copy_tree(HERE / "src", dest)
    for step in chain(release)[1:]:
        overlay = HERE / "releases" / step.name
        if not overlay.is_dir():
            raise SystemExit(f"build-releases: missing overlay {overlay}")
        copy_tree(overlay, dest)


def build(dest: Path) -> dict[str, str]:
    repo = git.Repo.init(dest, initial_branch="main")
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", AUTHOR.split(" <")[0])
        cfg.set_value("user", "email", AUTHOR.split("<")[1].rstrip(">"))
        cfg.set_value("advice", "detachedHead", "false")
    shas: dict[str, str] = {}
    for release in RELEASES:
        env = {"GIT_AUTHOR_DATE": release.date, "GIT_COMMITTER_DATE": release.date}
        if release.parent is None:
            repo.git.checkout("--orphan", "build")
        else:
            repo.git.checkout("--detach", release.parent)
        for item in dest.iterdir():  # start from an empty tree: the release is its full file set
            if item.name != ".git":
                shutil.rmtree(item) if item.is_dir() else item.unlink()
        release_tree(release, dest)
        repo.git.add("-A")
        repo.git.commit("-q", "-m", release.message, env=env)
        repo.git.tag("-a", release.name, "-m", f"{release.name}\n\n{release.message}", env=env)
        shas[release.name] = repo.git.rev_parse(f"{release.name}^{{commit}}")
        if release.branch:
            repo.git.branch("-f", release.branch, release.name)
    repo.git.checkout("-q", "main")
    repo.git.branch("-D", "build") if "build" in [h.name for h in repo.heads] else None
    return shas


def existing(dest: Path) -> dict[str, str] | None:
    try:
        repo = git.Repo(dest)
        return {r.name: repo.git.rev_parse(f"{r.name}^{{commit}}") for r in RELEASES}
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, git.GitCommandError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", type=Path, help="where to create the git repository")
    parser.add_argument("--bundle", type=Path, help="also write a git bundle of every ref here")
    args = parser.parse_args(argv)
    dest: Path = args.dest.resolve()
    with tempfile.TemporaryDirectory(prefix="sample-releases-") as tmp:
        fresh = build(Path(tmp) / "repo")
        before = existing(dest)
        changed = before != fresh
        if changed:
            if dest.exists():
                shutil.rmtree(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(Path(tmp) / "repo", dest, symlinks=True)
    if args.bundle:
        bundle: Path = args.bundle.resolve()
        bundle.parent.mkdir(parents=True, exist_ok=True)
        if changed or not bundle.exists():
            tmp_bundle = bundle.with_suffix(".tmp")
            git.Repo(dest).git.bundle("create", str(tmp_bundle), "--all")
            tmp_bundle.replace(bundle)
    json.dump({"repo": str(dest), "changed": changed, "releases": fresh}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
