"""Which audit store the settings ask for: PostgreSQL when audit_dsn (CONNECTOR_AUDIT_DSN) is set, else the
SQLite file at audit_path."""

from __future__ import annotations

from ..settings import ConnectorSettings
from .store import SqlStore


def open_store(settings: ConnectorSettings) -> SqlStore:
    """The store, not connected yet: its first use connects (and creates the tables)."""
    if settings.audit_dsn is not None:
        from .postgres_store import PostgresStore

        return PostgresStore(settings.audit_dsn.get_secret_value())
    from .sqlite_store import SqliteStore

    return SqliteStore(settings.audit_path)


def describe(settings: ConnectorSettings) -> str:
    """Where the records are, for messages (the DSN's password never shown)."""
    if settings.audit_dsn is None:
        return f"SQLite file {settings.audit_path}"
    from urllib.parse import urlsplit

    try:
        url = urlsplit(settings.audit_dsn.get_secret_value())
        return f"PostgreSQL {url.hostname or 'localhost'}{f':{url.port}' if url.port else ''}{url.path or ''}"
    except ValueError:
        return "PostgreSQL (CONNECTOR_AUDIT_DSN)"
