"""The shared index: PostgreSQL through psycopg 3, one database for many nodes (SPEC §5).

The SQL is litevna.index.sql's, as SQLite runs it; only connecting, migrating and
streaming a search differ. Every call is one statement or one short transaction on a
connection borrowed from a pool, so the CPU pool's threads and the reactor thread
(small lookups) may call in at once.
"""

import contextlib
import functools
import itertools
import os
import threading
import time

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from litevna.index import search as qido
from litevna.index.sql import SqlIndex, upgrade_schema

#: Connections per process: the CPU pool's threads, the reactor's and the archive's.
POOL_SIZE = 8
#: Seconds a call waits for a free connection, or for the server to come back: small
#: lookups run on the reactor thread, which an outage must not hold for long.
POOL_WAIT = 5.0
#: Rows a search's server-side cursor brings per round trip.
SCAN_BATCH = 1000
#: The pg_advisory_xact_lock nodes take turns on to migrate (b"LiteVNA" as a number).
MIGRATION_LOCK = int.from_bytes(b"LiteVNA", "big")


class PostgresIndex(SqlIndex):
    """IIndex over a PostgreSQL database named by a ``postgresql://`` URL."""

    dialect = qido.PostgresDialect()
    _integrity_error = psycopg.IntegrityError

    def __init__(self, url, clock=time.time):
        self.url = url
        self._clock = clock
        self._lock = threading.Lock()
        self._pool = (None, None)  # (the process that opened it, the pool)

    def _connections(self):
        """The pool, opened on first use, and again in a forked child (twistd
        daemonizing after makeService), whose copy has lost its worker threads."""
        pid, pool = self._pool
        if pid == os.getpid():
            return pool
        with self._lock:
            if self._pool[0] != os.getpid():
                pool = ConnectionPool(self.url, min_size=1, max_size=POOL_SIZE,
                                      timeout=POOL_WAIT, kwargs={"autocommit": True},
                                      name="litevna-index", open=True)
                self._pool = (os.getpid(), pool)
            return self._pool[1]

    def _query(self, sql, args=()):
        with self._connections().connection() as conn:
            with conn.cursor(row_factory=dict_row) as cursor:
                return cursor.execute(_psycopg_sql(sql), _psycopg_args(args)).fetchall()

    @contextlib.contextmanager
    def _transaction(self):
        with self._connections().connection() as conn, conn.transaction():
            yield _Connection(conn)

    @contextlib.contextmanager
    def _reading(self):
        """The reads of one search in one transaction, each through a server-side
        cursor: a long scan comes SCAN_BATCH rows at a time, and the search may ask
        other queries on the same connection between two batches."""
        with self._connections().connection() as conn, conn.transaction():
            names, cursors = itertools.count(), []

            def execute(sql, args):
                cursor = conn.cursor(f"scan_{next(names)}", row_factory=dict_row)
                cursor.itersize = SCAN_BATCH
                cursors.append(cursor)
                return _closing(cursor.execute(_psycopg_sql(sql), _psycopg_args(args)))

            try:
                yield execute
            finally:
                for cursor in cursors:
                    cursor.close()

    @staticmethod
    def _new_id(conn, sql, args):
        return conn.execute(sql + " RETURNING id", args).fetchone()[0]

    def migrate(self):
        """Create or upgrade the schema. On a connection of its own, so that a wrong URL
        fails at once with the server's reason; nodes starting together take turns."""
        with psycopg.connect(self.url, autocommit=True) as raw, raw.transaction():
            conn = _Connection(raw)
            conn.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                         "applied_at DOUBLE PRECISION NOT NULL)")
            version = conn.execute(
                "SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
            upgrade_schema(conn, "postgresql", version, lambda number: conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                (number, self._clock())))

    def close(self):
        with self._lock:
            pid, pool = self._pool
            if pid == os.getpid():
                pool.close()


class _Connection:
    """A psycopg connection taking the shared SQL's ``?`` marks."""

    def __init__(self, conn):
        self._conn = conn

    def execute(self, sql, args=()):
        return self._conn.execute(_psycopg_sql(sql), _psycopg_args(args))

    def executemany(self, sql, rows):
        cursor = self._conn.cursor()
        cursor.executemany(_psycopg_sql(sql), [_psycopg_args(row) for row in rows])
        return cursor


@functools.lru_cache(maxsize=1024)
def _psycopg_sql(sql):
    """psycopg's form of a statement: ``%s`` marks, and a literal ``%`` doubled."""
    return sql.replace("%", "%%").replace("?", "%s")


def _psycopg_args(args):
    """The parameters, with NUL (which PostgreSQL's text cannot hold, and SQLite's can)
    as U+FFFD: stored and asked for alike, a value with NUL still finds itself. The JSON
    documents, in BYTEA, keep every byte."""
    return [a.replace("\x00", "\ufffd") if isinstance(a, str) and "\x00" in a else a
            for a in args]


def _closing(cursor):
    """The cursor's rows; it closes once they are read or no longer wanted."""
    with cursor:
        yield from cursor
