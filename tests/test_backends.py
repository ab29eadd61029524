"""The blob stores and indexes against their contracts."""

import os

from twisted.trial.unittest import SynchronousTestCase

from litevna.index.sqlite import SqliteIndex, schema_files
from litevna.storage.fs import FileBlobStore
from litevna.storage.memory import MemoryBlobStore
from contracts import BlobStoreContract, IndexContract


class FileBlobStoreTests(BlobStoreContract, SynchronousTestCase):
    def make(self):
        return FileBlobStore(self.mktemp())

    def test_no_escape(self):
        store = self.make()
        self.assertRaises(KeyError, store.open, "../../etc/passwd")

    def test_fsync_fallback(self):
        store = FileBlobStore(self.mktemp(), use_syncfs=False)
        store.put_file(self.staged(b"x"), "1/2/3.dcm")
        store.sync()
        self.assertTrue(os.path.exists(store.local_path("1/2/3.dcm")))


class MemoryBlobStoreTests(BlobStoreContract, SynchronousTestCase):
    def make(self):
        return MemoryBlobStore()


class SqliteFileIndexTests(IndexContract, SynchronousTestCase):
    def make(self):
        index = SqliteIndex(os.path.join(self.mktemp(), "index.sqlite3"))
        index.migrate()
        self.addCleanup(index.close)
        return index

    def test_migrate_twice(self):
        index = self.make()
        index.migrate()
        self.assertEqual(index._query("PRAGMA user_version")[0]["user_version"],
                         schema_files("sqlite")[-1][0])


class SqliteMemoryIndexTests(IndexContract, SynchronousTestCase):
    def make(self):
        index = SqliteIndex(":memory:")
        index.migrate()
        return index
