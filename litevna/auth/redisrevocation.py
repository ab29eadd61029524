"""The revocation list shared through Redis (``--redis``): a set plus pub/sub (SPEC §3).

Every process keeps a local mirror of the revoked ids. A revocation is written to
the index (the durable truth), added to a Redis sorted set (score: when it would
expire anyway) and published; every subscribed process adds it to its mirror at
once, so a check is a set lookup with no round trip. While the subscription is
down the mirror cannot be trusted and checks fall back to the index (with its short
cache); on every (re)connect the mirror is rebuilt from the Redis set and the index,
so revocations made while Redis was away are not lost.
"""

import math

import txredisapi
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from litevna.config import parse_redis_url
from litevna.interfaces import IRevocationList

log = Logger()
SET_KEY = "litevna:revoked"
CHANNEL = "litevna:revocations"


class _Subscriber(txredisapi.SubscriberProtocol):
    """Tells its owner when the subscription is up or down and what arrives."""

    owner = None

    @defer.inlineCallbacks
    def connectionMade(self):
        yield txredisapi.SubscriberProtocol.connectionMade(self)
        yield self.subscribe(CHANNEL)
        self.owner.subscribed(self)

    def messageReceived(self, pattern, channel, message):
        self.owner.received(message)

    def connectionLost(self, why):
        self.owner.unsubscribed(self)
        return txredisapi.SubscriberProtocol.connectionLost(self, why)


@implementer(IRevocationList)
class RedisRevocations:
    """IRevocationList over Redis, falling back to ``fallback`` (an IndexRevocations)."""

    def __init__(self, reactor, url, fallback, index, clock, on_revoked=lambda identifier: None):
        self._reactor = reactor
        self._host, self._port, self._db, self._password = parse_redis_url(url)
        self._fallback = fallback
        self._index = index
        self._clock = clock
        self._on_revoked = on_revoked
        self._mirror = set()
        self._live = False
        self._commands = None
        self._subscriber_factory = None

    @property
    def live(self):
        """True while the mirror is complete and kept up to date by the subscription."""
        return self._live

    @property
    def staleness(self):
        return 0.0 if self._live else self._fallback.staleness

    def start(self):
        self._commands = txredisapi.lazyConnection(
            self._host, self._port, self._db, password=self._password, connectTimeout=1,
            replyTimeout=2)
        factory = txredisapi.SubscriberFactory(isLazy=True)
        factory.password, factory.initialDelay, factory.maxDelay = self._password, 0.1, 2
        factory.protocol = type("Subscriber", (_Subscriber,), {"owner": self})
        factory.startConnecting(HostnameEndpoint(self._reactor, self._host, self._port,
                                                 timeout=1))
        self._subscriber_factory = factory

    def stop(self):
        self._live = False
        stopping = []
        for handle in (self._subscriber_factory, self._commands):
            if handle is not None:
                stopping.append(handle.disconnect())
        return defer.DeferredList(stopping, consumeErrors=True)

    # IRevocationList

    def revoke(self, identifier, store_id, expires_at):
        self._fallback.revoke(identifier, store_id, expires_at)
        self._mirror.add(identifier)
        if not self._live:
            return None  # the index has it; every mirror is rebuilt from it on reconnect
        score = expires_at if expires_at is not None else math.inf
        d = defer.maybeDeferred(self._commands.zadd, SET_KEY, score, identifier)
        d.addCallback(lambda _: self._commands.publish(CHANNEL, identifier))
        d.addErrback(lambda f: log.warn("Redis did not take the revocation of {id}; the index "
                                        "has it ({e})", id=identifier, e=f.getErrorMessage()))
        return d

    def is_revoked(self, identifier):
        if self._live:
            return identifier in self._mirror
        return self._fallback.is_revoked(identifier)

    # The subscription.

    @defer.inlineCallbacks
    def subscribed(self, protocol):
        """Rebuild the mirror: the Redis set and the index, then messages as they come."""
        now = self._clock()
        try:
            yield self._commands.zremrangebyscore(SET_KEY, "-inf", now)
            members = yield self._commands.zrangebyscore(SET_KEY, now, "+inf")
        except Exception as exc:  # noqa: BLE001 - any Redis failure: stay on the index
            log.warn("Redis revocation set unreadable ({e}); using the index", e=exc)
            return
        if protocol.transport is None or not protocol.connected:
            return
        self._mirror.update(members)
        self._mirror.update(self._index.revocations_since(now))
        self._fallback.forget()
        self._live = True
        log.info("revocations shared through Redis at {host}:{port}", host=self._host,
                 port=self._port)

    def unsubscribed(self, protocol):
        if self._live:
            log.warn("lost the Redis subscription; revocations are checked in the index")
        self._live = False

    def received(self, identifier):
        self._mirror.add(identifier)
        self._fallback.forget(identifier)
        self._on_revoked(identifier)
