"""The revocation list: one contract for the index-backed list and the Redis one.

The Redis tests run against a real ``redis-server`` on a free port, with the real
reactor (trial's TestCase spins it), and include Redis going away and coming back.
"""

import os
import sys
import tempfile
import time

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from litevna.auth.revocation import IndexRevocations
from litevna.index.sqlite import SqliteIndex

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import FakeClock  # noqa: E402
from live import RedisServer  # noqa: E402


def _index(path=":memory:"):
    index = SqliteIndex(path)
    index.migrate()
    owner = index.create_account("a@example.org", "h")
    store = index.create_store("demo", owner) if index.store_by_label("demo") is None else 1
    return index, store


class RevocationContract:
    """What every IRevocationList does. ``make_pair`` gives two lists (two processes)
    over the same backing; ``settle`` waits as long as a revocation may take to show."""

    def make_pair(self):
        raise NotImplementedError

    def settle(self):
        raise NotImplementedError

    @defer.inlineCallbacks
    def test_revoked_and_not(self):
        first, _ = yield self.make_pair()
        self.assertFalse(first.is_revoked("tok:a"))
        yield first.revoke("tok:a", self.store, time.time() + 60)
        self.assertTrue(first.is_revoked("tok:a"))
        self.assertFalse(first.is_revoked("tok:b"))

    @defer.inlineCallbacks
    def test_seen_by_the_other_process(self):
        first, second = yield self.make_pair()
        self.assertFalse(second.is_revoked("key:k1"))  # an answer the second may cache
        yield first.revoke("key:k1", self.store, None)
        yield self.settle()
        self.assertTrue(second.is_revoked("key:k1"))
        self.assertLessEqual(second.staleness, 1.0)

    @defer.inlineCallbacks
    def test_revoking_twice(self):
        first, second = yield self.make_pair()
        yield first.revoke("tok:x", self.store, time.time() + 60)
        yield second.revoke("tok:x", self.store, time.time() + 60)
        yield self.settle()
        self.assertTrue(first.is_revoked("tok:x") and second.is_revoked("tok:x"))


class IndexRevocationTests(RevocationContract, TestCase):
    def make_pair(self):
        self.clock = FakeClock()
        path = os.path.join(tempfile.mkdtemp(), "index.sqlite3")
        index, self.store = _index(path)
        other = SqliteIndex(path)  # another process's connection to the same file
        self.addCleanup(index.close)
        self.addCleanup(other.close)
        return defer.succeed((IndexRevocations(index, self.clock),
                              IndexRevocations(other, self.clock)))

    def settle(self):
        self.clock.now += 0.6  # past the cached answer
        return defer.succeed(None)


def _until(condition, timeout=10.0):
    """A Deferred firing once condition() is true (polled on the reactor)."""
    deadline = time.monotonic() + timeout

    @defer.inlineCallbacks
    def poll():
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            yield task.deferLater(reactor, 0.02, lambda: None)

    return poll()


class RedisRevocationTests(RevocationContract, TestCase):
    timeout = 60

    @classmethod
    def setUpClass(cls):
        cls.redis = RedisServer(tempfile.mkdtemp()).start()

    @classmethod
    def tearDownClass(cls):
        cls.redis.stop()

    @defer.inlineCallbacks
    def make_pair(self):
        from litevna.auth.redisrevocation import RedisRevocations

        path = os.path.join(tempfile.mkdtemp(), "index.sqlite3")
        index, self.store = _index(path)
        self.addCleanup(index.close)
        self.pushed = []
        lists = []
        for _ in range(2):
            fallback = IndexRevocations(index, time.time)
            revocations = RedisRevocations(reactor, self.redis.url, fallback, index, time.time,
                                           on_revoked=self.pushed.append)
            revocations.start()
            self.addCleanup(revocations.stop)
            lists.append(revocations)
        yield _until(lambda: all(r.live for r in lists))
        self.lists = lists
        return tuple(lists)

    def settle(self):
        # Pushed, not polled: a few milliseconds on loopback; the bound is one second.
        return task.deferLater(reactor, 0.2, lambda: None)

    @defer.inlineCallbacks
    def test_push_is_immediate(self):
        first, second = yield self.make_pair()
        started = time.monotonic()
        yield first.revoke("tok:fast", self.store, time.time() + 60)
        yield _until(lambda: second.is_revoked("tok:fast"), timeout=1.0)
        self.assertLess(time.monotonic() - started, 1.0)  # SPEC §3's bound, not a speed test
        self.assertIn("tok:fast", self.pushed)

    @defer.inlineCallbacks
    def test_redis_away_and_back(self):
        first, second = yield self.make_pair()
        yield first.revoke("tok:before", self.store, time.time() + 600)
        self.redis.stop()
        yield _until(lambda: not first.live and not second.live)
        # Down: both answer from the index, so a revocation made now is still seen.
        self.assertTrue(second.is_revoked("tok:before"))
        yield first.revoke("tok:during", self.store, time.time() + 600)
        yield task.deferLater(reactor, 0.6, lambda: None)
        self.assertTrue(second.is_revoked("tok:during"))
        self.redis.start()  # the same port
        yield _until(lambda: first.live and second.live, timeout=20)
        for name in ("tok:before", "tok:during"):
            self.assertTrue(first.is_revoked(name) and second.is_revoked(name))
        self.assertFalse(second.is_revoked("tok:never"))
