"""The durable store: SQL tables shared by SQLite and PostgreSQL behind ``godel.core.ports.Store``.

``open_store(url)`` returns a ``SqlStore``; ``await store.migrate()`` brings the schema to the newest
revision.
"""

from godel.store.sql import SqlStore, open_store

__all__ = ["SqlStore", "open_store"]
