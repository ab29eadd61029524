"""The embedded index: SQLite in WAL mode, one writer, a connection per reader thread."""

import contextlib
import os
import sqlite3
import threading
import time

from litevna.index import search as qido
from litevna.index.sql import SqlIndex, schema_files, upgrade_schema

__all__ = ["SqliteIndex", "schema_files"]


class SqliteIndex(SqlIndex):
    """IIndex over one SQLite file (``:memory:`` gives a private in-memory index)."""

    dialect = qido.Dialect()
    _integrity_error = sqlite3.IntegrityError

    def __init__(self, path, clock=time.time):
        self.path = path
        self._clock = clock
        self._local = threading.local()
        self._write_lock = threading.Lock()
        if path == ":memory:":
            # One shared connection: a private in-memory database has no other name.
            self._shared = self._open(":memory:")
        else:
            self._shared = None
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def _open(self, path):
        conn = sqlite3.connect(path, timeout=30, isolation_level=None,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _conn(self):
        if self._shared is not None:
            return self._shared
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._open(self.path)
        return conn

    def _query(self, sql, args=()):
        if self._shared is not None:
            with self._write_lock:
                return [dict(r) for r in self._shared.execute(sql, args)]
        return [dict(r) for r in self._conn().execute(sql, args)]

    def _rows(self, sql, args=()):
        """Rows of a query as they come (a cursor), for scans too long for one list."""
        if self._shared is not None:
            return self._query(sql, args)
        return self._conn().execute(sql, args)

    def _reading(self):
        return contextlib.nullcontext(self._rows)

    @contextlib.contextmanager
    def _transaction(self):
        with self._write_lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @staticmethod
    def _new_id(conn, sql, args):
        return conn.execute(sql, args).lastrowid

    def migrate(self):
        with self._transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            upgrade_schema(conn, "sqlite", version,
                           lambda number: conn.execute(f"PRAGMA user_version = {number}"))

    def close(self):
        conn = getattr(self._local, "conn", None) or self._shared
        if conn is not None:
            conn.close()
