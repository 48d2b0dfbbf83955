"""Schema migrations (Alembic), run from code.

There is no ``alembic.ini``: the configuration is built here and points at this directory, so migrations run
the same from a checkout and from an installed wheel. ``SqlStore.migrate()`` calls ``upgrade`` inside one of
its own write transactions (serialized like any other write), handing Alembic the open connection. Every
revision is written with explicit operations and must run on SQLite and PostgreSQL;
``tests/conformance/test_store.py`` checks the result against ``godel.store.tables``.

To write a new revision against a scratch database::

    python -m godel.store.migrations revision -m "what changes" --autogenerate   # then edit by hand
"""

from __future__ import annotations

import sys
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import CommandLine, Config

SCRIPT_LOCATION = Path(__file__).parent


def alembic_config(connection: sa.Connection | None = None, url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(connection: sa.Connection, revision: str = "head") -> None:
    """Upgrade the database behind an open (sync) connection, inside the caller's transaction."""
    command.upgrade(alembic_config(connection), revision)


def main(argv: list[str] | None = None) -> None:
    """Alembic's own command line with this package's configuration (the URL comes from Godel's settings)."""
    from godel.settings import Settings

    cli = CommandLine(prog="python -m godel.store.migrations")
    options = cli.parser.parse_args(argv if argv is not None else sys.argv[1:])
    if not hasattr(options, "cmd"):
        cli.parser.error("too few arguments")
    cli.run_cmd(alembic_config(url=Settings().resolved_database_url), options)
