"""Contract tests every backend (and its in-memory fake) must pass.

A concrete test case mixes one of these into SynchronousTestCase and
provides ``make()``.
"""

import os
import threading

from zope.interface.verify import verifyObject

from litevna.index import Conflict
from litevna.interfaces import IBlobStore, IIndex


class BlobStoreContract:
    def make(self):
        raise NotImplementedError

    def staged(self, data):
        folder = self.mktemp()
        os.makedirs(folder)
        path = os.path.join(folder, "staged")
        with open(path, "wb") as fp:
            fp.write(data)
        return path

    def test_interface(self):
        verifyObject(IBlobStore, self.make())

    def test_put_open_size_delete(self):
        store = self.make()
        store.put_file(self.staged(b"hello"), "1/a/b.dcm")
        store.sync()
        self.assertTrue(store.exists("1/a/b.dcm"))
        with store.open("1/a/b.dcm") as fp:
            self.assertEqual(fp.read(), b"hello")
        self.assertEqual(store.size("1/a/b.dcm"), 5)
        store.delete("1/a/b.dcm")
        store.delete("1/a/b.dcm")
        self.assertFalse(store.exists("1/a/b.dcm"))
        self.assertRaises(KeyError, store.open, "1/a/b.dcm")
        self.assertRaises(KeyError, store.size, "1/a/b.dcm")

    def test_put_consumes_and_replaces(self):
        store = self.make()
        first = self.staged(b"one")
        store.put_file(first, "k")
        self.assertFalse(os.path.exists(first))
        store.put_file(self.staged(b"two"), "k")
        with store.open("k") as fp:
            self.assertEqual(fp.read(), b"two")


class IndexContract:
    def make(self):
        raise NotImplementedError

    def test_interface(self):
        verifyObject(IIndex, self.make())

    def test_accounts_and_stores(self):
        index = self.make()
        owner = index.create_account("a@example.org", "hash")
        self.assertRaises(Conflict, index.create_account, "a@example.org", "other")
        self.assertEqual(index.account_by_email("a@example.org")["id"], owner)
        self.assertIsNone(index.account_by_email("nobody@example.org"))
        store = index.create_store("demo", owner)
        self.assertRaises(Conflict, index.create_store, "demo", owner)
        self.assertEqual(index.store_by_label("demo")["id"], store)
        self.assertEqual([s["label"] for s in index.list_stores()], ["demo"])
        # A deleted store's id is never given out again (caches are keyed by it).
        index.delete_store(store)
        again = index.create_store("demo", owner)
        self.assertNotEqual(again, store)
        self.assertGreater(index.create_store("later", owner), again)

    def test_api_keys(self):
        index = self.make()
        store = index.create_store("demo", index.create_account("a@example.org", "h"))
        index.create_api_key("k1", store, "ci", ("read", "write"), None)
        row = index.api_key("k1")
        self.assertEqual((row["permissions"], row["revoked_at"]), ("read,write", None))
        self.assertFalse(index.revoke_api_key(store + 1, "k1", 5.0))
        self.assertTrue(index.revoke_api_key(store, "k1", 5.0))
        self.assertTrue(index.revoke_api_key(store, "k1", 9.0))
        self.assertEqual(index.api_key("k1")["revoked_at"], 5.0)
        self.assertIsNone(index.api_key("nope"))

    def test_instances(self):
        from test_ingest import TEST_FILES
        from litevna.dicom.ingest import parse_part10

        index = self.make()
        store = index.create_store("demo", index.create_account("a@example.org", "h"))
        parsed = parse_part10(os.path.join(TEST_FILES, "CT_small.dcm"))
        with index.write() as writer:
            self.assertIsNone(writer.existing(store, parsed.sop_instance_uid))
            writer.add_instance(store, parsed, "key1", b"{}", replace=False)
            self.assertEqual(writer.existing(store, parsed.sop_instance_uid),
                             (parsed.sha256, "key1", parsed.study_uid))
        with index.write() as writer:
            writer.add_instance(store, parsed, "key2", b"{}", replace=True)
        row = index.instance(store, parsed.sop_instance_uid)
        self.assertEqual((row["blob_key"], row["frames"]), ("key2", parsed.frames))
        self.assertEqual(index.count_instances(store), 1)

    def test_failed_write_rolls_back(self):
        index = self.make()
        store = index.create_store("demo", index.create_account("a@example.org", "h"))
        with self.assertRaises(RuntimeError):
            with index.write():
                index_key = "k"
                raise RuntimeError(index_key)
        self.assertEqual(index.count_instances(store), 0)

    def test_concurrent_readers(self):
        index = self.make()
        index.create_account("a@example.org", "h")
        errors = []

        def read():
            try:
                for _ in range(50):
                    index.account_by_email("a@example.org")
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=read) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
