"""Alembic environment: online migrations against DATABASE_URL."""

from __future__ import annotations

import os
import sys
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)

url = os.environ.get("DATABASE_URL")
if not url:
    sys.exit("alembic: DATABASE_URL is not set (the lab puts it in /etc/sample-app/env)")
for _prefix in ("postgresql://", "postgres://"):  # the driver this service ships: psycopg2
    if url.startswith(_prefix):
        url = "postgresql+psycopg2://" + url[len(_prefix):]


def run_migrations_online() -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    context.configure(url=url, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
