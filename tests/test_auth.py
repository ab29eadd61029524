"""Signed keys, the guard and the account rules, with fakes for time and lookups."""

import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from litevna.accounts import AccountError, Accounts, check_label, parse_permissions
from litevna.auth.guard import Forbidden, Guard, Unauthorized
from litevna.auth.revocation import IndexRevocations
from litevna.auth.keys import InvalidToken, Keyring
from litevna.auth.passwords import check_password, hash_password
from litevna.index import Conflict
from litevna.index.sqlite import SqliteIndex
from helpers import FakeClock


class KeyringTests(SynchronousTestCase):
    def test_key_file_private(self):
        folder = self.mktemp()
        Keyring(folder)
        (name,) = os.listdir(folder)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode), 0o600)

    def test_sign_verify_and_rotation(self):
        folder = self.mktemp()
        ring = Keyring(folder)
        old = ring.sign({"typ": "api-key", "store": "demo"})
        ring._create()
        ring.load()
        new = ring.sign({"typ": "api-key", "store": "demo"})
        self.assertNotEqual(old.split(".")[0], new.split(".")[0])  # another kid
        self.assertEqual(ring.verify(old, 0)["store"], "demo")
        self.assertEqual(ring.verify(new, 0)["store"], "demo")

    def test_forged_and_foreign(self):
        ring = Keyring(self.mktemp())
        value = ring.sign({"typ": "api-key", "store": "demo"})
        head, body, sig = value.split(".")
        forged = f"{head}.{body}.{'A' if sig[0] != 'A' else 'B'}{sig[1:]}"
        self.assertRaises(InvalidToken, ring.verify, forged, 0)
        self.assertRaises(InvalidToken, ring.verify, Keyring(self.mktemp()).sign(
            {"typ": "api-key", "store": "demo"}), 0)
        self.assertRaises(InvalidToken, ring.verify, "not.a.token", 0)
        self.assertRaises(InvalidToken, ring.verify, "", 0)

    def test_expiry(self):
        ring = Keyring(self.mktemp())
        value = ring.sign({"typ": "api-key", "store": "demo", "exp": 100})
        self.assertEqual(ring.verify(value, 99)["exp"], 100)
        self.assertRaises(InvalidToken, ring.verify, value, 100)


class GuardTests(SynchronousTestCase):
    def setUp(self):
        self.clock = FakeClock()
        self.index = SqliteIndex(":memory:")
        self.index.migrate()
        self.ring = Keyring(self.mktemp())
        self.accounts = Accounts(self.index, self.ring, self.clock)
        self.accounts.create_account("a@example.org", "long enough")
        self.accounts.create_store("demo", "a@example.org")
        self.accounts.create_store("other", "a@example.org")
        self.revocations = IndexRevocations(self.index, self.clock)
        self.accounts = Accounts(self.index, self.ring, self.clock, self.revocations)
        self.guard = Guard(self.ring, self.index.api_key, self.index.store_by_label, self.clock,
                           self.revocations)

    def test_valid(self):
        key = self.accounts.create_api_key("demo", permissions=("read", "write"))
        principal = self.guard.authenticate(key["value"], "demo", "write")
        self.assertEqual((principal.label, principal.key_id), ("demo", key["id"]))

    def test_missing_and_garbage(self):
        self.assertRaises(Unauthorized, self.guard.authenticate, None, "demo", "read")
        self.assertRaises(Unauthorized, self.guard.authenticate, "garbage", "demo", "read")

    def test_other_store_and_permission(self):
        key = self.accounts.create_api_key("other")
        self.assertRaises(Forbidden, self.guard.authenticate, key["value"], "demo", "read")
        self.assertRaises(Forbidden, self.guard.authenticate, key["value"], "nosuch", "read")
        read_only = self.accounts.create_api_key("demo", permissions=("read",))
        self.assertRaises(Forbidden, self.guard.authenticate, read_only["value"], "demo", "write")

    def test_revocation_seen_after_cache_window(self):
        key = self.accounts.create_api_key("demo")
        self.guard.authenticate(key["value"], "demo", "read")
        self.accounts.revoke_api_key("demo", key["id"])
        self.clock.now += 1.0  # past the key-row cache (0.5 s)
        self.assertRaises(Unauthorized, self.guard.authenticate, key["value"], "demo", "read")

    def test_expired_key(self):
        key = self.accounts.create_api_key("demo", expires_in=60)
        self.guard.authenticate(key["value"], "demo", "read")
        self.clock.now += 61
        self.assertRaises(Unauthorized, self.guard.authenticate, key["value"], "demo", "read")



class AccountRuleTests(SynchronousTestCase):
    def test_labels(self):
        for good in ("abc", "a-1", "x" * 63):
            check_label(good)
        for bad in ("ab", "1abc", "Abc", "a_b", "x" * 64, "image-stores", "healthz", ""):
            self.assertRaises(AccountError, check_label, bad)

    def test_permissions(self):
        self.assertEqual(parse_permissions("delete, read"), ("read", "delete"))
        self.assertRaises(AccountError, parse_permissions, "read,admin")
        self.assertRaises(AccountError, parse_permissions, "")

    def test_passwords(self):
        encoded = hash_password("s3cret pass")
        self.assertTrue(check_password("s3cret pass", encoded))
        self.assertFalse(check_password("wrong", encoded))
        self.assertFalse(check_password("x", "garbage"))

    def test_taken(self):
        index = SqliteIndex(":memory:")
        index.migrate()
        accounts = Accounts(index, Keyring(self.mktemp()), FakeClock())
        accounts.create_account("A@Example.org", "long enough")
        self.assertRaises(Conflict, accounts.create_account, "a@example.org", "long enough")
        self.assertRaises(AccountError, accounts.create_account, "not-an-email", "long enough")
        self.assertRaises(AccountError, accounts.create_account, "b@example.org", "short")
        accounts.create_store("demo", "a@example.org")
        self.assertRaises(Conflict, accounts.create_store, "demo", "a@example.org")
        self.assertRaises(AccountError, accounts.create_store, "demo2", "nobody@example.org")
