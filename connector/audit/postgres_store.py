"""The shared audit store: PostgreSQL (CONNECTOR_AUDIT_DSN=postgresql://...), for several connector replicas
writing one chain.

Each append runs in a transaction that first locks the chain-head row (SELECT ... FOR UPDATE): a second
replica's append waits for the first to commit and then links after its records, so the chain never forks.
Creating the tables runs under a transaction-level advisory lock, so replicas starting together do not race.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .store import SqlStore

SCHEMA_LOCK = 0x61756469  # "audi": the advisory lock key around table creation
CONNECT_TIMEOUT_S = 5


class PostgresStore(SqlStore):
    ph = "%s"
    name = "postgresql"
    real = "DOUBLE PRECISION"
    bigint = "BIGINT"

    def __init__(self, dsn: str) -> None:
        super().__init__()
        self._dsn = dsn

    def __repr__(self) -> str:  # the DSN holds the password
        return "PostgresStore(<dsn>)"

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(self._dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                               application_name="connector-audit")

    @contextmanager
    def _locked(self, conn: Any) -> Iterator[Any]:
        with conn.transaction(), conn.cursor() as cur:
            yield cur

    @contextmanager
    def _locked_schema(self, conn: Any) -> Iterator[Any]:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            yield cur

    def _for_update(self) -> str:
        return " FOR UPDATE"
