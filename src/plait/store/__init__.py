"""The state store: one SQLAlchemy code path, SQLite embedded or PostgreSQL."""

from plait.store.db import Store, open_store

__all__ = ["Store", "open_store"]
