"""The relational index, written once for both backends (SQLite, PostgreSQL).

Statements use ``?`` parameters; the PostgreSQL backend hands them to psycopg as
``%s``. A backend subclass of ``SqlIndex`` supplies the connections:

- ``_query(sql, args)`` every row as a dict, ``_one`` the first or None;
- ``_reading()`` a context manager yielding ``execute(sql, args)`` for the reads of
  one search: rows (mappings) as they come, for scans too long for one list;
- ``_transaction()`` a context manager yielding a connection whose ``execute`` and
  ``executemany`` give cursors (rows as sequences), committed on a clean exit;
- ``_new_id(conn, sql, args)`` runs an INSERT and returns the new row's id;
- ``_integrity_error`` what the driver raises when a uniqueness rule refuses a write;
- ``dialect`` the litevna.index.search Dialect; and ``migrate()``.
"""

import contextlib
import importlib.resources

import orjson
from zope.interface import implementer

from litevna.dicom import frames as frame_table
from litevna.dicom.levels import SERIES_TAGS, STUDY_TAGS
from litevna.index import Conflict
from litevna.index import search as qido
from litevna.interfaces import IIndex, IIndexWriter


def schema_files(dialect):
    """The numbered schema scripts of a dialect, in order: [(version, sql)]."""
    folder = importlib.resources.files("litevna.index") / "schema" / dialect
    scripts = sorted(p for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(int(p.name.split("_", 1)[0]), p.read_text()) for p in scripts]


def upgrade_schema(conn, dialect, version, record):
    """Run on conn the dialect's schema scripts newer than version, each with its
    Python step; ``record(number)`` after each one."""
    for number, script in schema_files(dialect):
        if number > version:
            for statement in _statements(script):
                conn.execute(statement)
            upgrade = _UPGRADES.get(number)
            if upgrade is not None:
                upgrade(conn)
            record(number)


@implementer(IIndex)
class SqlIndex:
    """IIndex as SQL; a subclass connects (see the module docstring)."""

    def _one(self, sql, args=()):
        rows = self._query(sql, args)
        return rows[0] if rows else None

    def _insert(self, sql, args):
        try:
            with self._transaction() as conn:
                return self._new_id(conn, sql, args)
        except self._integrity_error as exc:
            raise Conflict(str(exc)) from None

    # Accounts, stores, keys.

    def create_account(self, email, password_hash):
        return self._insert("INSERT INTO accounts (email, password_hash, created_at) "
                            "VALUES (?, ?, ?)", (email, password_hash, self._clock()))

    def account_by_email(self, email):
        return self._one("SELECT * FROM accounts WHERE email = ?", (email,))

    def create_store(self, label, owner_id):
        try:
            with self._transaction() as conn:
                conn.execute("UPDATE counters SET value = value + 1 WHERE name = 'stores'")
                store_id = conn.execute(
                    "SELECT value FROM counters WHERE name = 'stores'").fetchone()[0]
                conn.execute("INSERT INTO stores (id, label, owner_id, created_at) "
                             "VALUES (?, ?, ?, ?)", (store_id, label, owner_id, self._clock()))
                return store_id
        except self._integrity_error as exc:
            raise Conflict(str(exc)) from None

    def store_by_label(self, label):
        return self._one("SELECT * FROM stores WHERE label = ?", (label,))

    def list_stores(self):
        return self._query("SELECT s.*, a.email AS owner FROM stores s "
                           "JOIN accounts a ON a.id = s.owner_id ORDER BY s.label")

    def create_api_key(self, key_id, store_id, name, permissions, expires_at):
        self._insert("INSERT INTO api_keys (id, store_id, name, permissions, created_at, "
                     "expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                     (key_id, store_id, name, ",".join(permissions), self._clock(), expires_at))

    def api_key(self, key_id):
        return self._one("SELECT * FROM api_keys WHERE id = ?", (key_id,))

    def revoke_api_key(self, store_id, key_id, when):
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) "
                "WHERE id = ? AND store_id = ?", (when, key_id, store_id))
            return cursor.rowcount > 0

    def api_keys_of(self, store_id):
        return self._query("SELECT * FROM api_keys WHERE store_id = ? ORDER BY created_at, id",
                           (store_id,))

    def stores_of(self, owner_id):
        return self._query("SELECT * FROM stores WHERE owner_id = ? ORDER BY label", (owner_id,))

    def delete_store(self, store_id):
        with self._transaction() as conn:
            conn.execute("DELETE FROM stores WHERE id = ?", (store_id,))

    def add_revocation(self, identifier, store_id, expires_at, when):
        with self._transaction() as conn:
            conn.execute("DELETE FROM revocations WHERE expires_at <= ?", (when,))
            conn.execute("INSERT INTO revocations (id, store_id, expires_at, revoked_at) "
                         "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                         (identifier, store_id, expires_at, when))

    def revoked(self, identifier):
        return self._one("SELECT 1 AS hit FROM revocations WHERE id = ?",
                         (identifier,)) is not None

    def revocations_since(self, when):
        return [r["id"] for r in self._query(
            "SELECT id FROM revocations WHERE expires_at IS NULL OR expires_at > ?", (when,))]

    def create_session(self, session_id, account_id, csrf, expires_at):
        now = self._clock()
        with self._transaction() as conn:
            conn.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
            conn.execute("INSERT INTO sessions (id, account_id, csrf, created_at, expires_at) "
                         "VALUES (?, ?, ?, ?, ?)", (session_id, account_id, csrf, now, expires_at))

    def session(self, session_id):
        return self._one("SELECT s.*, a.email AS email FROM sessions s "
                         "JOIN accounts a ON a.id = s.account_id WHERE s.id = ?", (session_id,))

    def delete_session(self, session_id):
        with self._transaction() as conn:
            conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    # The query model.

    @contextlib.contextmanager
    def write(self):
        with self._transaction() as conn:
            yield _Writer(conn, self._clock, self._new_id)

    def instance(self, store_id, sop_instance_uid):
        row = self._one(
            f"SELECT {_INSTANCE_COLUMNS}, se.series_uid, st.study_uid FROM instances i "
            "JOIN series se ON se.id = i.series_pk JOIN studies st ON st.id = se.study_pk "
            "WHERE i.store_id = ? AND i.sop_instance_uid = ?", (store_id, sop_instance_uid))
        if row is not None:
            row["frames"] = frame_table.unpack(row["frames"])
        return row

    def instances_of(self, store_id, study_uid, series_uid=None, sop_instance_uid=None,
                     columns="i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax, "
                             "i.blob_key, i.size, i.sha256, i.number_of_frames"):
        """Rows of the instances at a level, in series then instance order (empty if none)."""
        sql = (f"SELECT {columns}, se.series_uid, st.study_uid FROM instances i "
               "JOIN series se ON se.id = i.series_pk JOIN studies st ON st.id = se.study_pk "
               "WHERE st.store_id = ? AND st.study_uid = ?")
        args = [store_id, study_uid]
        if series_uid is not None:
            sql += " AND se.series_uid = ?"
            args.append(series_uid)
        if sop_instance_uid is not None:
            sql += " AND i.sop_instance_uid = ?"
            args.append(sop_instance_uid)
        sql += (" ORDER BY se.series_number IS NULL, se.series_number, se.id, "
                "i.instance_number IS NULL, i.instance_number, i.sop_instance_uid")
        return self._query(sql, args)

    def search(self, store_id, query, use_sql=True, scope=None):
        """(hits, total) of a QIDO-RS Query in a store (litevna.index.search)."""
        with self._reading() as execute:
            return qido.search(execute, self.dialect, store_id, query, use_sql, scope)

    def study(self, store_id, study_uid):
        return self._one("SELECT id, study_uid, patient_id FROM studies "
                         "WHERE store_id = ? AND study_uid = ?", (store_id, study_uid))

    def generation(self, store_id):
        row = self._one("SELECT generation FROM stores WHERE id = ?", (store_id,))
        return row["generation"] if row else 0

    def count_instances(self, store_id):
        return self._one("SELECT COUNT(*) AS n FROM instances WHERE store_id = ?",
                         (store_id,))["n"]


@implementer(IIndexWriter)
class _Writer:
    def __init__(self, conn, clock, new_id):
        self._conn = conn
        self._clock = clock
        self._new_id = new_id
        self._touched = set()

    @contextlib.contextmanager
    def savepoint(self):
        """Undo only this block's writes if it raises."""
        self._conn.execute("SAVEPOINT one")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK TO one")
            self._conn.execute("RELEASE one")
            raise
        self._conn.execute("RELEASE one")

    def existing(self, store_id, sop_instance_uid):
        self._touch(store_id)
        row = self._conn.execute(
            "SELECT i.sha256, i.blob_key, st.study_uid FROM instances i "
            "JOIN series se ON se.id = i.series_pk JOIN studies st ON st.id = se.study_pk "
            "WHERE i.store_id = ? AND i.sop_instance_uid = ?",
            (store_id, sop_instance_uid)).fetchone()
        return tuple(row) if row is not None else None

    def add_instance(self, store_id, parsed, blob_key, metadata, replace):
        conn = self._conn
        self._touch(store_id)
        if replace:
            conn.execute("DELETE FROM instances WHERE store_id = ? AND sop_instance_uid = ?",
                         (store_id, parsed.sop_instance_uid))
        study_pk = self._upsert("studies", ("store_id", "study_uid"),
                                (store_id, parsed.study_uid), qido.study_columns, parsed.study)
        series_pk = self._upsert("series", ("study_pk", "series_uid"),
                                 (study_pk, parsed.series_uid), qido.series_columns,
                                 parsed.series)
        instance = parsed.instance
        conn.execute(
            "INSERT INTO instances (store_id, series_pk, sop_instance_uid, sop_class_uid, "
            "instance_number, number_of_frames, rows, columns, bits_allocated, transfer_syntax, "
            "blob_key, size, sha256, frames, metadata, stored_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (store_id, series_pk, parsed.sop_instance_uid, parsed.sop_class_uid,
             instance["instance_number"], parsed.number_of_frames, instance["rows"],
             instance["columns"], instance["bits_allocated"], parsed.transfer_syntax, blob_key,
             parsed.size, parsed.sha256, frame_table.pack(parsed.frames), metadata,
             self._clock()))

    def delete(self, store_id, study_uid, series_uid=None, sop_instance_uid=None):
        """Remove a study, series or instance with everything under it; the blob keys freed."""
        self._touch(store_id)
        where = "st.store_id = ? AND st.study_uid = ?"
        args = [store_id, study_uid]
        if series_uid is not None:
            where += " AND se.series_uid = ?"
            args.append(series_uid)
        if sop_instance_uid is not None:
            where += " AND i.sop_instance_uid = ?"
            args.append(sop_instance_uid)
        rows = self._conn.execute(
            "SELECT i.id, i.blob_key, se.id, st.id FROM instances i "
            "JOIN series se ON se.id = i.series_pk JOIN studies st ON st.id = se.study_pk "
            f"WHERE {where}", args).fetchall()
        if not rows:
            return []
        self._conn.executemany("DELETE FROM instances WHERE id = ?", [(r[0],) for r in rows])
        for series_pk in {r[2] for r in rows}:
            self._conn.execute("DELETE FROM series WHERE id = ? AND NOT EXISTS "
                               "(SELECT 1 FROM instances WHERE series_pk = ?)",
                               (series_pk, series_pk))
        for study_pk in {r[3] for r in rows}:
            self._conn.execute("DELETE FROM studies WHERE id = ? AND NOT EXISTS "
                               "(SELECT 1 FROM series WHERE study_pk = ?)", (study_pk, study_pk))
        return [r[1] for r in rows]

    def _touch(self, store_id):
        """Bump the store's generation once per transaction, before its first read or
        write of the store: on PostgreSQL the row stays locked until the commit, so
        writers of one store (on any node) queue here and what each reads stays true."""
        if store_id not in self._touched:
            self._touched.add(store_id)
            self._conn.execute("UPDATE stores SET generation = generation + 1 WHERE id = ?",
                               (store_id,))

    def _upsert(self, table, keys, key_values, columns_of, attrs):
        where = " AND ".join(f"{k} = ?" for k in keys)
        row = self._conn.execute(f"SELECT id FROM {table} WHERE {where}", key_values).fetchone()
        if row is not None:
            return row[0]
        columns = columns_of(attrs)
        names = list(keys) + list(columns) + ["attrs"]
        values = list(key_values) + list(columns.values()) + [orjson.dumps(attrs)]
        marks = ", ".join("?" * len(names))
        return self._new_id(self._conn, f"INSERT INTO {table} ({', '.join(names)}) "
                            f"VALUES ({marks})", values)


# What a read of one instance needs (never its metadata document).
_INSTANCE_COLUMNS = ", ".join("i." + c for c in (
    "sop_instance_uid", "sop_class_uid", "transfer_syntax", "blob_key", "size", "sha256",
    "number_of_frames", "rows", "columns", "bits_allocated", "frames", "instance_number"))


def _statements(script):
    """The statements of a schema script (comments dropped, split at semicolons)."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    return [s for s in "\n".join(lines).split(";") if s.strip()]


def _refill_query_columns(conn):
    """Schema 2: compute the new matching columns of the rows already stored."""
    for table, columns_of in (("studies", qido.study_columns), ("series", qido.series_columns)):
        for pk, attrs in conn.execute(f"SELECT id, attrs FROM {table}").fetchall():
            columns = columns_of(orjson.loads(attrs))
            conn.execute(f"UPDATE {table} SET {', '.join(c + ' = ?' for c in columns)} "
                         "WHERE id = ?", [*columns.values(), pk])


def _refill_level_attributes(conn):
    """Schema 4: level attributes again from each study's and series' first instance."""
    for table, tags, parent in (("studies", STUDY_TAGS, "se.study_pk"),
                                ("series", SERIES_TAGS, "i.series_pk")):
        rows = conn.execute(
            f"SELECT {parent} AS pk, i.metadata FROM instances i JOIN series se "
            f"ON se.id = i.series_pk WHERE i.id IN (SELECT MIN(i.id) FROM instances i "
            f"JOIN series se ON se.id = i.series_pk GROUP BY {parent})").fetchall()
        for pk, metadata in rows:
            document = orjson.loads(metadata)
            attrs = {tag: document[tag] for tag in tags if tag in document}
            conn.execute(f"UPDATE {table} SET attrs = ? WHERE id = ?", (orjson.dumps(attrs), pk))
    _refill_query_columns(conn)


_UPGRADES = {2: _refill_query_columns, 4: _refill_level_attributes}
