"""Engines, dialect differences and error translation: everything the store does differently per database.

The rest of the store is one code path over SQLAlchemy Core; what differs lives here, small and named:

- SQLite: the file's directory is created; every connection gets WAL, the requested ``synchronous``,
  ``busy_timeout`` and ``foreign_keys``. SQLAlchemy (not the sqlite3 module) emits ``BEGIN``, so write
  transactions can say ``BEGIN IMMEDIATE``: the write lock is taken up front, never by upgrading a read
  lock, which is where SQLITE_BUSY comes from. Readers use plain ``BEGIN`` on other pooled connections and run
  concurrently with the one writer (WAL).
- SQLite connections are aiosqlite's, with one trip to their thread per statement and no statement left active by a
  cancelled task (``sqlite_driver``): without that, one cancelled write could hold the database's write lock for good.
- PostgreSQL: every transaction that appends events first takes a transaction-scoped advisory lock, so
  sequence numbers are handed out and committed in the same order across all processes. Without it, a reader
  that resumed after sequence N could later see a smaller sequence commit.
- Errors: SQL and connection failures become ``godel.errors`` exceptions here, once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from godel.errors import ConflictError, StoreError, ValidationError
from godel.store.sqlite_driver import connection_creator

SqliteSynchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]

# The execution option that makes a SQLite transaction begin IMMEDIATE (see ``_begin``).
WRITE_OPTION = "godel_write"

# Arbitrary but fixed advisory-lock keys ("godel" + a purpose) shared by every Godel process on a database.
EVENTS_LOCK_KEY = 0x676F64656C_01
MIGRATIONS_LOCK_KEY = 0x676F64656C_02

SQLITE_BUSY_TIMEOUT_MS = 5000


def normalize_url(url: str) -> URL:
    """Pick the async driver for a plain ``sqlite://`` or ``postgresql://`` URL; refuse other databases."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        if not u.database or u.database == ":memory:":
            # Each pooled connection would see its own empty database.
            raise ValueError("an in-memory SQLite database cannot be shared by the store's connections")
        return u.set(drivername="sqlite+aiosqlite", database=str(Path(u.database).expanduser()))
    if backend == "postgresql":
        return u.set(drivername="postgresql+asyncpg")
    raise ValueError(f"unsupported database {backend!r}: use sqlite or postgresql")


def create_engine(url: str, *, sqlite_synchronous: SqliteSynchronous = "NORMAL") -> AsyncEngine:
    u = normalize_url(url)
    sqlite = u.get_backend_name() == "sqlite"
    creator = {"async_creator": connection_creator(u)} if sqlite else {}
    engine = create_async_engine(u, json_serializer=json_dumps, json_deserializer=json_loads, **creator)
    if sqlite:
        if sqlite_synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"invalid SQLite synchronous mode {sqlite_synchronous!r}")
        assert u.database is not None
        if not u.query.get("uri"):
            _private_database(Path(u.database))
        _configure_sqlite(engine, sqlite_synchronous)
    return engine


def _private_database(path: Path) -> None:
    """The database holds secrets (sealed, but with their names, tasks and transcripts beside them): its folder is
    made 0700 when Godel creates it, and the file with its ``-wal``/``-shm`` is 0600 (SQLite gives those two the
    database file's mode, so creating the file first with 0600 covers them)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # an empty file is an empty database
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)


def _configure_sqlite(engine: AsyncEngine, synchronous: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop the sqlite3 module from issuing its own deferred BEGIN; ``_begin`` issues the right one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            f"synchronous={synchronous}",
            f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
            "foreign_keys=ON",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def is_sqlite(engine: AsyncEngine | AsyncConnection) -> bool:
    return engine.dialect.name == "sqlite"


async def lock_events(conn: AsyncConnection) -> None:
    """Serialize event appends across processes until this transaction ends (PostgreSQL).

    SQLite needs nothing: its one writer at a time is the database's own write lock, taken by BEGIN IMMEDIATE.
    """
    if not is_sqlite(conn):
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(EVENTS_LOCK_KEY)))


def insert_with_upsert(conn: AsyncConnection, table: sa.Table) -> Any:
    """The dialect's INSERT, which knows ``ON CONFLICT`` (spelled the same on SQLite and PostgreSQL)."""
    if is_sqlite(conn):
        return sqlite_insert(table)
    return pg_insert(table)


# ------------------------------------------------------------------------------------------------------ JSON


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_json_default).encode
# A JSON ``\u0000`` escape that is not itself an escaped backslash followed by "u0000".
_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def json_dumps(value: Any) -> str:
    # orjson: every event payload and agent document is encoded on the hot write path, several times faster
    # than the standard library. What orjson refuses (integers beyond 64 bits) goes through the stdlib.
    try:
        text = orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()
    except (orjson.JSONEncodeError, TypeError):
        text = _encode(value)
    # PostgreSQL's jsonb refuses NUL, and agent output can contain one; replace it on every dialect so both
    # stores hold the same document.
    return _NUL.sub(r"\1\\ufffd", text) if "\\u0000" in text else text


def json_loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)  # what only the stdlib reads back (integers beyond 64 bits)


# ---------------------------------------------------------------------------------------------------- errors


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn SQL and connection failures into Godel's errors; let everything else through."""
    try:
        yield
    except sa.exc.IntegrityError as exc:
        raise ConflictError(f"conflicts with stored data: {_reason(exc)}") from exc
    except sa.exc.DataError as exc:
        raise ValidationError(f"value rejected by the database: {_reason(exc)}") from exc
    except sa.exc.DBAPIError as exc:
        raise StoreError(f"database unavailable: {_reason(exc)}") from exc
    except sa.exc.StatementError as exc:
        # Raised while binding a parameter (a naive datetime, an unserializable payload): the caller's bug.
        if isinstance(exc.orig, ValueError | TypeError):
            raise exc.orig from exc
        raise StoreError(f"database error: {exc}") from exc
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"database error: {exc}") from exc
    except OSError as exc:  # asyncpg raises connection failures unwrapped
        raise StoreError(f"database unavailable: {exc}") from exc


def _reason(exc: sa.exc.DBAPIError) -> str:
    return str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
