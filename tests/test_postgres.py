"""The PostgreSQL index (litevna.index.postgres): the index contract, the QIDO property
that SQL answers as Python does, SQLite's schema, and what nodes sharing it need (SPEC §5).

The server is a private cluster started for the session, or LITEVNA_TEST_POSTGRES's.
"""

import os
import re
import sqlite3
import subprocess
import sys
import threading
import time

import orjson
import psycopg
import pytest
import requests
from twisted.trial.unittest import SynchronousTestCase

import test_query
from contracts import IndexContract
from helpers import DICOM, bearer, dataset, instance, new_uid, part10, sop_uid_of
from live import LiveServer, require_postgres
from litevna.config import Config
from litevna.dicom import query as q
from litevna.dicom.ingest import parse_part10
from litevna.index import Conflict
from litevna.index import search as qido
from litevna.index.postgres import PostgresIndex, _psycopg_sql
from litevna.index.sql import _statements, schema_files
from litevna.index.sqlite import SqliteIndex


def english_database(server):
    """A new database collated en-US, not in byte order, where the server can make one
    (ICU, PostgreSQL 15 and later): the index must not depend on the database's locale."""
    try:
        return server.create_database(options="LOCALE_PROVIDER icu ICU_LOCALE 'en-US'")
    except psycopg.Error:
        return server.create_database()


def fresh_database(testcase, english=False):
    """The URL of a new database, dropped after the test."""
    server = require_postgres()
    url = english_database(server) if english else server.create_database()
    testcase.addCleanup(server.drop_database, url)
    return url


def open_index(testcase, url, migrate=True):
    index = PostgresIndex(url)
    testcase.addCleanup(index.close)
    if migrate:
        index.migrate()
    return index


def versions(url):
    with psycopg.connect(url) as conn:
        return [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY 1")]


def stored(index, store, tmp, **attributes):
    """Add one instance (a fresh study unless study_uid is given); its parsed form."""
    path = os.path.join(tmp, new_uid())
    with open(path, "wb") as fp:
        fp.write(part10(dataset(rows=2, columns=2, **attributes)))
    parsed = parse_part10(path)
    with index.write() as writer:
        writer.add_instance(store, parsed, "k/" + parsed.sop_instance_uid,
                            orjson.dumps(parsed.metadata), replace=False)
    return parsed


class PostgresIndexTests(IndexContract, SynchronousTestCase):
    def make(self):
        return open_index(self, fresh_database(self))

    def test_migrate_twice(self):
        url = fresh_database(self)
        open_index(self, url).migrate()
        self.assertEqual(versions(url), [v for v, _ in schema_files("sqlite")])

    def test_versions_match_sqlite(self):
        self.assertEqual([v for v, _ in schema_files("postgresql")],
                         [v for v, _ in schema_files("sqlite")])

    def test_schema_is_sqlites(self):
        """Same tables, columns (types, NOT NULL), indexes and unique keys as SQLite."""
        sqlite = SqliteIndex(":memory:")
        sqlite.migrate()
        url = fresh_database(self)
        open_index(self, url)
        with psycopg.connect(url) as conn:
            self.assertEqual(_postgres_schema(conn), _sqlite_schema(sqlite))
            collations = conn.execute(
                "SELECT DISTINCT collation_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND data_type = 'text' "
                "AND table_name <> 'schema_version'").fetchall()
        self.assertEqual(collations, [("C",)])

    def test_byte_order_whatever_the_locale(self):
        """Labels sort as SQLite sorts them (byte order) on an en-US collated database."""
        index = open_index(self, fresh_database(self, english=True))
        owner = index.create_account("a@example.org", "h")
        labels = ["b", "B", "a", "_x", "É", "e", "Z"]
        for label in labels:
            index.create_store(label, owner)
        self.assertEqual([s["label"] for s in index.list_stores()], sorted(labels))

    def test_pool_under_many_threads(self):
        """More threads than pooled connections, writing and reading at once."""
        index = self.make()
        errors, ids = [], []

        def work(n):
            try:
                for i in range(15):
                    account = index.create_account(f"{n}-{i}@example.org", "h")
                    assert index.account_by_email(f"{n}-{i}@example.org")["id"] == account
                    ids.append(account)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(len(set(ids)), 12 * 15)

    def test_text_that_postgresql_cannot_hold(self):
        """NUL in a matching value is stored (U+FFFD in its column) and found, as on SQLite."""
        index = self.make()
        store = index.create_store("demo", index.create_account("a@example.org", "h"))
        tmp = self.mktemp()
        os.makedirs(tmp)
        parsed = stored(index, store, tmp, StudyDescription="a\x00b")
        query = q.parse_query("study", [("StudyDescription", "a\x00b")])
        hits, total = index.search(store, query)
        self.assertEqual(([h["study_uid"] for h in hits], total), ([parsed.study_uid], 1))


class PostgresSqlAgreesWithPythonTests(test_query.SqlAgreesWithPythonTests):
    """test_query's hypothesis property on PostgreSQL, on an en-US collated database."""

    @classmethod
    def make_index(cls, tmp):
        cls.url = english_database(require_postgres())
        return PostgresIndex(cls.url)

    @classmethod
    def tearDownClass(cls):
        cls.index.close()
        require_postgres().drop_database(cls.url)


class GlobTests(SynchronousTestCase):
    """PostgresDialect.glob (LIKE) matches what SQLite's GLOB does, escapes included."""

    values = ["100%", "100%_done", "a_b", "aXb", "a\\b", "[x]", "x", "", "ÅB", "åb", "a*b",
              "a?b", "日本語", "a\nb"]
    patterns = ["100%*", "100_*", "a_b", "a?b", "*\\*", "[x]", "*x*", "?", "*", "Å*", "å*",
                "a*b", "???", "%", "_", "a\\b", "日*", "*本?"]

    def test_same_matches(self):
        url = fresh_database(self)
        sqlite = sqlite3.connect(":memory:")
        expr = "CAST(? AS TEXT)"
        with psycopg.connect(url) as conn:
            for pattern in self.patterns:
                regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                                for c in pattern)
                lite_sql, lite_args = qido.Dialect().glob(expr, pattern)
                pg_sql, pg_args = qido.PostgresDialect().glob(expr, pattern)
                for value in self.values:
                    expected = re.fullmatch(regex, value, re.DOTALL) is not None
                    lite = sqlite.execute(f"SELECT {lite_sql}", [value, *lite_args]).fetchone()
                    pg = conn.execute(_psycopg_sql(f"SELECT {pg_sql}"),
                                      [value, *pg_args]).fetchone()
                    self.assertEqual((bool(lite[0]), pg[0]), (expected, expected),
                                     (value, pattern))


class NodesTests(SynchronousTestCase):
    """Two PostgresIndex objects over one database: two nodes of SPEC §5."""

    def setUp(self):
        url = fresh_database(self)
        self.first, self.second = open_index(self, url), open_index(self, url)
        self.tmp = self.mktemp()
        os.makedirs(self.tmp)

    def test_each_sees_the_others_writes(self):
        first, second = self.first, self.second
        store = first.create_store("demo", first.create_account("a@example.org", "h"))
        self.assertEqual(second.store_by_label("demo")["id"], store)
        before = second.generation(store)
        parsed = stored(first, store, self.tmp)
        self.assertGreater(second.generation(store), before)
        self.assertEqual(second.instance(store, parsed.sop_instance_uid)["study_uid"],
                         parsed.study_uid)
        hits, total = second.search(store, q.parse_query("study", []))
        self.assertEqual(([h["study_uid"] for h in hits], total), ([parsed.study_uid], 1))
        seen = first.generation(store)
        with second.write() as writer:
            writer.delete(store, parsed.study_uid)
        self.assertGreater(first.generation(store), seen)
        self.assertIsNone(first.instance(store, parsed.sop_instance_uid))
        second.add_revocation("key:k1", store, None, 1.0)
        self.assertTrue(first.revoked("key:k1"))
        self.assertRaises(Conflict, first.create_store, "demo", 1)

    def test_writers_of_one_study_at_once(self):
        """Nodes adding instances of one new study at the same moment: one study row."""
        store = self.first.create_store("demo", self.first.create_account("a@example.org", "h"))
        study = new_uid()
        barrier, errors = threading.Barrier(4), []

        def write(index):
            try:
                barrier.wait()
                for _ in range(5):
                    stored(index, store, self.tmp, study_uid=study, series_uid=study + ".1")
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(index,))
                   for index in (self.first, self.second) * 2]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(self.second.count_instances(store), 20)
        self.assertEqual(len(self.first.instances_of(store, study)), 20)


class MigrationTests(SynchronousTestCase):
    def test_nodes_starting_together(self):
        """Four nodes migrating an empty database at once: each version applied once."""
        url = fresh_database(self)
        indexes = [open_index(self, url, migrate=False) for _ in range(4)]
        barrier, errors = threading.Barrier(len(indexes)), []

        def migrate(index):
            try:
                barrier.wait()
                index.migrate()
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=migrate, args=(i,)) for i in indexes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(versions(url), [v for v, _ in schema_files("postgresql")])

    def test_version_one_rows_get_the_new_columns(self):
        """The Python steps of versions 2 and 4 refill the columns, as on SQLite."""
        url = fresh_database(self)
        version, script = schema_files("postgresql")[0]
        attrs = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]},
                 "00080030": {"vr": "TM", "Value": ["1230"]}}
        with psycopg.connect(url) as conn:
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
                         "applied_at DOUBLE PRECISION NOT NULL)")
            conn.execute("INSERT INTO schema_version VALUES (%s, 0)", (version,))
            conn.execute("INSERT INTO accounts VALUES (1, 'a@b.org', 'h', 0)")
            conn.execute("INSERT INTO stores VALUES (1, 'demo', 1, 0)")
            conn.execute("INSERT INTO studies (id, store_id, study_uid, attrs) "
                         "VALUES (1, 1, '1.2', %s)", (orjson.dumps(attrs),))
        index = open_index(self, url)
        row = index._one("SELECT pn_alphabetic, pn_words, study_time_key FROM studies")
        self.assertEqual(row, {"pn_alphabetic": "DOE^JOHN", "pn_words": " DOE JOHN ",
                               "study_time_key": "123000.000000"})
        self.assertEqual(versions(url), [v for v, _ in schema_files("postgresql")])
        # Store ids continue after the stores that version 1 made.
        self.assertEqual(index.create_store("later", 1), 2)


class ConfigTests(SynchronousTestCase):
    def test_database_urls(self):
        for url in ("postgresql://u@db.example/litevna", "postgres://db.example/x?sslmode=require"):
            self.assertEqual(Config.from_options({"database": url}).database, url)

    def test_admin_cli_on_postgresql(self):
        url = fresh_database(self)
        data = self.mktemp()

        def admin(*args, stdin=None):
            result = subprocess.run(
                [sys.executable, "-m", "litevna", "admin", *args, "--data-dir", data,
                 "--database", url], input=stdin, capture_output=True, text=True, timeout=60)
            self.assertEqual(result.returncode, 0, result.stderr)
            return orjson.loads(result.stdout)

        admin("create-account", "op@example.org", "--password-stdin",
              stdin="correct horse battery\n")
        admin("create-store", "ct-lab", "--owner", "op@example.org")
        self.assertEqual([s["label"] for s in admin("list-stores")], ["ct-lab"])
        self.assertFalse(os.path.exists(os.path.join(data, "index.sqlite3")))
        index = open_index(self, url)
        self.assertEqual(index.store_by_label("ct-lab")["id"], 1)


@pytest.fixture
def nodes(postgres, tmp_path):
    """Two servers on one data dir and one PostgreSQL database, no Redis; a key."""
    from litevna.accounts import Accounts
    from litevna.auth.keys import Keyring

    url = postgres.create_database()
    data_dir = str(tmp_path / "shared")
    index = PostgresIndex(url)
    index.migrate()
    accounts = Accounts(index, Keyring(os.path.join(data_dir, "keys")), time.time)
    accounts.create_account("owner@example.org", "correct horse battery")
    accounts.create_store("demo", "owner@example.org")
    key = accounts.create_api_key("demo")["value"]
    index.close()
    first = LiveServer(data_dir, "--database", url).start()
    second = LiveServer(data_dir, "--database", url).start()
    yield first, second, bearer(key)
    first.stop()
    second.stop()
    postgres.drop_database(url)


def test_nodes_share_the_index(nodes):
    """A STOW on one node is found on the other; a DELETE there is seen here (SPEC §5)."""
    first, second, headers = nodes
    data = instance()
    study = f"{first.url}/demo/dicomweb/studies"
    response = requests.post(study, data=data, timeout=30,
                             headers={**headers, "Content-Type": DICOM})
    assert response.status_code == 200, response.text
    found = requests.get(f"{second.url}/demo/dicomweb/instances", headers=headers, timeout=30)
    assert [r["00080018"]["Value"][0] for r in found.json()] == [sop_uid_of(data)]
    study_uid = found.json()[0]["0020000D"]["Value"][0]
    assert requests.get(f"{first.url}/demo/dicomweb/studies/{study_uid}/metadata",
                        headers=headers, timeout=30).status_code == 200
    assert requests.delete(f"{second.url}/demo/dicomweb/studies/{study_uid}",
                           headers=headers, timeout=30).status_code == 204
    for url in (f"{first.url}/demo/dicomweb/studies/{study_uid}/metadata",
                f"{first.url}/demo/dicomweb/studies/{study_uid}"):
        assert requests.get(url, headers=headers, timeout=30).status_code == 404
    listed = requests.get(f"{first.url}/demo/dicomweb/studies", headers=headers, timeout=30)
    assert (listed.status_code, listed.text) == (200, "[]")


def _sqlite_schema(index):
    """{table: [(column, type, not null)]}, {(table, columns)} of indexes and unique keys."""
    types = {"INTEGER": "bigint", "REAL": "double precision", "TEXT": "text", "BLOB": "bytea"}
    tables = [r["name"] for r in index._query(
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    columns, indexes = {}, set()
    for table in tables:
        columns[table] = [(c["name"], types[c["type"]], bool(c["notnull"] or c["pk"]))
                          for c in index._query(f"PRAGMA table_info({table})")]
        for entry in index._query(f"PRAGMA index_list({table})"):
            if entry["origin"] == "pk":
                continue
            names = tuple(c["name"] for c in index._query(f"PRAGMA index_info({entry['name']})"))
            name = entry["name"] if entry["origin"] == "c" else "unique"
            indexes.add((name, table, names))
    return columns, indexes


def _postgres_schema(conn):
    columns = {}
    for table, column, kind, nullable in conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable "
            "FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name <> 'schema_version' ORDER BY table_name, ordinal_position"):
        columns.setdefault(table, []).append((column, kind, nullable == "NO"))
    indexes = set()
    for name, table, unique, names in conn.execute(
            "SELECT i.relname, t.relname, x.indisunique, array_agg(a.attname ORDER BY k.n) "
            "FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "JOIN pg_class t ON t.oid = x.indrelid "
            "JOIN unnest(x.indkey) WITH ORDINALITY AS k(attnum, n) ON true "
            "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum "
            "WHERE t.relnamespace = current_schema()::regnamespace AND NOT x.indisprimary "
            "AND t.relname <> 'schema_version' GROUP BY i.relname, t.relname, x.indisunique"):
        indexes.add(("unique" if unique else name, table, tuple(names)))
    return columns, indexes
