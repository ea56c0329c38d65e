"""The application's git working tree and its deployment ref (GitPython)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import git
from git.refs.symbolic import SymbolicReference

log = logging.getLogger(__name__)
_SHA = re.compile(r"[0-9a-f]{40}")


class GitError(Exception):
    """A git operation failed; the message says which and why."""


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    subject: str
    committed_at: float


def _short_error(exc: Exception) -> str:
    if isinstance(exc, git.GitCommandError):
        text = (exc.stderr or exc.stdout or str(exc)).strip()
        text = text.removeprefix("stderr:").strip().strip("'").strip()
        lines = text.splitlines()
        # "Unable to create '.../deployed.lock': File exists." names the file; the last line does not.
        named = [line.strip() for line in lines if ".lock'" in line]
        last = lines[-1] if lines else f"git exited with {exc.status}"
        return f"{named[0]} {last}" if named and named[0] != last else last
    return str(exc)


class Deployment:
    """The working tree at ``repo`` whose deployed release is named by ``ref``."""

    def __init__(self, repo: Path, ref: str, remote: str | None = None) -> None:
        self.path = repo
        self.ref = ref
        self.remote = remote
        self._repo: git.Repo | None = None

    @property
    def repo(self) -> git.Repo:
        if self._repo is None:
            try:
                self._repo = git.Repo(self.path)
            except git.NoSuchPathError:
                raise GitError(f"deployment.repo {self.path} does not exist") from None
            except git.InvalidGitRepositoryError:
                raise GitError(f"deployment.repo {self.path} is not a git working tree") from None
            if self._repo.bare:
                raise GitError(f"deployment.repo {self.path} is a bare repository (a working tree is needed)")
        return self._repo

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None

    # --- reading -------------------------------------------------------------------------------
    def current_sha(self) -> str | None:
        """The sha the deployment ref points at, or None when the ref does not exist yet.

        Read straight from the ref file or packed-refs (no git process, no path resolution):
        the webhook path asks for it on every request.
        """
        git_dir = Path(self.repo.git_dir)
        try:
            text = (git_dir / self.ref).read_text(encoding="ascii").strip()
        except FileNotFoundError:
            text = ""
        except OSError:
            return None
        if _SHA.fullmatch(text):
            return text
        if text.startswith("ref:"):  # a symbolic ref: let GitPython follow it
            try:
                sha = SymbolicReference.dereference_recursive(self.repo, self.ref)
            except (ValueError, OSError):
                return None
            return sha if _SHA.fullmatch(sha or "") else None
        try:
            packed = (git_dir / "packed-refs").read_text(encoding="ascii")
        except OSError:
            return None
        for line in packed.splitlines():
            sha, _, name = line.partition(" ")
            if name == self.ref and _SHA.fullmatch(sha):
                return sha
        return None

    def head_sha(self) -> str | None:
        try:
            return self.repo.head.commit.hexsha
        except ValueError:
            return None

    def resolve(self, rev: str, fetch: bool = False, timeout: float = 60.0) -> str:
        """Full sha of a commit named by ``rev`` (sha, tag, branch).

        With ``fetch`` and a remote configured, fetch first and prefer the remote's branch of that
        name over a possibly stale local one.
        """
        if not rev or rev.startswith("-") or any(c.isspace() for c in rev):
            raise GitError(f"invalid revision {rev!r}")
        candidates = [rev]
        if fetch and self.remote:
            self.fetch(timeout)
            candidates.insert(0, f"refs/remotes/{self.remote}/{rev}")
        for candidate in candidates:
            try:
                return str(self.repo.git.rev_parse("--verify", "--quiet", f"{candidate}^{{commit}}").strip())
            except git.GitCommandError:
                continue
        where = f"{self.path}" + (f" or {self.remote}" if fetch and self.remote else "")
        raise GitError(f"{rev!r} is not a commit of {where}")

    def commit_info(self, sha: str) -> CommitInfo | None:
        try:
            commit = self.repo.commit(sha)
        except (ValueError, git.BadName, git.GitCommandError):
            return None
        subject = str(commit.message).strip().splitlines()[0] if commit.message else ""
        return CommitInfo(commit.hexsha, subject, float(commit.committed_date))

    def dirty_files(self) -> list[str]:
        """Tracked files with local changes (untracked files are left alone by checkouts)."""
        out = self.repo.git.status("--porcelain", "--untracked-files=no")
        return [line[3:] for line in out.splitlines() if line.strip()]

    def read_file(self, sha: str, path: str) -> bytes | None:
        try:
            blob = self.repo.commit(sha).tree / path
        except (KeyError, ValueError):
            return None
        if blob.type != "blob":
            return None
        return bytes(blob.data_stream.read())

    def list_files(self, sha: str, directory: str, suffix: str = "") -> dict[str, bytes]:
        """Files directly under ``directory`` at ``sha`` (path -> content)."""
        try:
            tree = (
                self.repo.commit(sha).tree / directory
                if directory not in ("", ".")
                else self.repo.commit(sha).tree
            )
        except (KeyError, ValueError):
            return {}
        if tree.type != "tree":
            return {}
        return {
            str(blob.path): bytes(blob.data_stream.read())
            for blob in tree.blobs
            if blob.name.endswith(suffix)
        }

    # --- changing --------------------------------------------------------------------------------
    def checkout(self, sha: str, timeout: float) -> None:
        """Check ``sha`` out (HEAD detached at it). Fails, changing nothing, on local modifications."""
        try:
            self.repo.git.checkout("--detach", "--quiet", sha, kill_after_timeout=max(timeout, 0.1))
        except git.GitCommandError as exc:
            raise GitError(f"git checkout {sha[:12]} failed: {_short_error(exc)}") from None

    def move_ref(self, sha: str, old: str | None, message: str) -> None:
        args = ["-m", message, self.ref, sha]
        if old:
            args.append(old)  # only move it if nobody else did in the meantime
        try:
            self.repo.git.update_ref(*args)
        except git.GitCommandError as exc:
            raise GitError(f"git update-ref {self.ref} failed: {_short_error(exc)}") from None

    def fetch(self, timeout: float) -> None:
        if not self.remote:
            return
        try:
            self.repo.git.fetch("--quiet", "--tags", self.remote, kill_after_timeout=max(timeout, 0.1))
        except git.GitCommandError as exc:
            raise GitError(f"git fetch {self.remote} failed: {_short_error(exc)}") from None

    def push_ref(self, sha: str, timeout: float) -> None:
        """Publish the deployment ref to the GitOps remote (forced: rollbacks move it backwards)."""
        if not self.remote:
            return
        try:
            self.repo.git.push(
                "--quiet", self.remote, f"+{sha}:{self.ref}", kill_after_timeout=max(timeout, 0.1)
            )
        except git.GitCommandError as exc:
            raise GitError(f"git push {self.remote} {self.ref} failed: {_short_error(exc)}") from None
