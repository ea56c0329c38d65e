"""A sample application repository: three releases, each with real alembic migrations.

v1 creates ``accounts``; v2 adds ``transactions``; v3 adds ``accounts.email``. Every migration has
a real downgrade. ``DATABASE_URL`` comes from the environment file, like on a real host.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import git

ALEMBIC_INI = """\
[alembic]
script_location = %(here)s/migrations
"""

ENV_PY = """\
import os

from alembic import context
from sqlalchemy import create_engine, pool

engine = create_engine(os.environ["DATABASE_URL"], poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
"""

MIGRATIONS = {
    "v1": (
        "a1000001_accounts.py",
        "a1000001",
        None,
        """
        op.create_table(
            "accounts",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("name", sa.String(100), nullable=False),
        )
    """,
        """
        op.drop_table("accounts")
    """,
    ),
    "v2": (
        "b2000002_transactions.py",
        "b2000002",
        "a1000001",
        """
        op.create_table(
            "transactions",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
            sa.Column("amount_cents", sa.BigInteger, nullable=False),
        )
    """,
        """
        op.drop_table("transactions")
    """,
    ),
    "v3": (
        "c3000003_account_email.py",
        "c3000003",
        "b2000002",
        """
        with op.batch_alter_table("accounts") as batch:
            batch.add_column(sa.Column("email", sa.String(200), nullable=True))
    """,
        """
        with op.batch_alter_table("accounts") as batch:
            batch.drop_column("email")
    """,
    ),
}

REVISIONS = {"v1": "a1000001", "v2": "b2000002", "v3": "c3000003"}
TABLES = {
    "v1": {"accounts": ["id", "name"]},
    "v2": {"accounts": ["id", "name"], "transactions": ["id", "account_id", "amount_cents"]},
    "v3": {"accounts": ["id", "name", "email"], "transactions": ["id", "account_id", "amount_cents"]},
}


def migration_source(revision: str, down: str | None, upgrade: str, downgrade: str) -> str:
    return (
        f'"""revision {revision}"""\n'
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        f"revision = {revision!r}\ndown_revision = {down!r}\nbranch_labels = None\ndepends_on = None\n\n\n"
        "def upgrade() -> None:\n" + textwrap.indent(textwrap.dedent(upgrade).strip(), "    ") + "\n\n\n"
        "def downgrade() -> None:\n" + textwrap.indent(textwrap.dedent(downgrade).strip(), "    ") + "\n"
    )


def commit(repo: git.Repo, message: str, files: dict[str, str], tag: str | None = None) -> str:
    root = Path(repo.working_tree_dir or ".")
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    repo.index.add(list(files))
    sha = repo.index.commit(message).hexsha
    if tag:
        repo.create_tag(tag, ref=sha)
    return sha


def build_repo(path: Path) -> dict[str, str]:
    """Create the repository with releases v1, v2, v3 (tags); returns tag -> sha."""
    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", "Release Bot")
        cfg.set_value("user", "email", "release@example.invalid")
    shas = {}
    for number, tag in enumerate(("v1", "v2", "v3"), start=1):
        name, revision, down, up, downgrade = MIGRATIONS[tag]
        files = {
            "app.py": f'VERSION = "{tag}"\n',
            f"migrations/versions/{name}": migration_source(revision, down, up, downgrade),
        }
        if number == 1:
            files.update(
                {
                    "alembic.ini": ALEMBIC_INI,
                    "migrations/env.py": ENV_PY,
                    ".gitignore": "*.pyc\n__pycache__/\n",
                }
            )
        shas[tag] = commit(repo, f"release {tag}", files, tag=tag)
    repo.close()
    return shas


def add_release(path: Path, tag: str, files: dict[str, str]) -> str:
    """Commit a release on top of main without changing what is checked out."""
    repo = git.Repo(path)
    head = repo.head.commit.hexsha
    try:
        repo.git.checkout("--quiet", "main")
        return commit(repo, f"release {tag}", files, tag=tag)
    finally:
        repo.git.checkout("--detach", "--quiet", head)
        repo.close()
