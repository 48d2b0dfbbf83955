"""The column types and the one ``MetaData`` every table of the schema shares (``godel.store.tables`` and
``godel.store.access_tables``): portable types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

from godel.core.clock import utcnow


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp stored in UTC and read back timezone-aware.

    Naive datetimes are refused: their zone is a guess, and a wrong guess silently shifts time.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not UTC:  # the common case skips the conversion (this runs per event appended)
            if value.tzinfo is None or value.utcoffset() is None:
                raise ValueError(f"naive datetime {value!r}: pass a timezone-aware value")
            value = value.astimezone(UTC)
        # SQLite's DATETIME would drop the offset anyway; strip it explicitly so every stored value is UTC
        # text of one fixed width, which also keeps text comparison equal to time comparison.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        to_utc = self.process_bind_param

        # One step instead of two: ``isoformat`` writes the text SQLAlchemy's SQLite DATETIME writes
        # ("YYYY-MM-DD HH:MM:SS.ffffff", always with microseconds) several times faster than its %-format.
        def process(value: datetime | None) -> str | None:
            utc = to_utc(value, dialect)
            return None if utc is None else utc.isoformat(" ", "microseconds")

        return process

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def Json() -> sa.types.TypeEngine[Any]:  # named like the type it returns
    # none_as_null: Python None is SQL NULL, not the JSON literal null, on both dialects.
    return sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


# An autoincrementing 64-bit key that is SQLite's rowid alias there (INTEGER PRIMARY KEY), so appends are
# cheap and the value is the row's physical order.
BigIntKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

Uuid = sa.String(36)

# Python-side ``default=`` values exist only on the tables the store has no typed methods for yet (teams,
# tasks, workflows, budgets, clusters), so their future writers may insert partial rows; the typed mappers
# always write every column.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def created_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("created_at", UTCDateTime(), nullable=True, default=utcnow),
        sa.Column("updated_at", UTCDateTime(), nullable=True, default=utcnow, onupdate=utcnow),
    ]
