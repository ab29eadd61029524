"""A second cache tier in Redis (``--redis``): what one process built, every process and node
sharing the Redis can answer with.

Every key the services cache under already names the exact bytes it stands for (a store's
generation, the digests of the stored instances, an ETag), valid on every node sharing the
index, so a shared entry is never stale: entries only expire (an hour) to bound the space.
The local ``MemoryCache`` stays in front; a local miss asks Redis (a Deferred) before
building. While the Redis subscription is down (``link.live`` is False) Redis is not asked
at all: a miss costs nothing more than without Redis.
"""

import hashlib

import txredisapi
from twisted.logger import Logger
from zope.interface import implementer

from litevna.config import parse_redis_url
from litevna.interfaces import ICache

log = Logger()
TTL = 3600
#: Entries larger than this stay local: Redis is for many small shared answers.
MAX_SHARED = 8 << 20


def canonical(value):
    """A text form of a cache key that is the same in every process (sets sorted)."""
    if isinstance(value, (frozenset, set)):
        return "{" + ",".join(sorted(canonical(v) for v in value)) + "}"
    if isinstance(value, (tuple, list)):
        return "(" + ",".join(canonical(v) for v in value) + ")"
    if hasattr(value, "__dataclass_fields__"):
        return type(value).__name__ + canonical(tuple(
            (name, getattr(value, name)) for name in sorted(value.__dataclass_fields__)))
    return repr(value)


def _same(value):
    return value


@implementer(ICache)
class TieredCache:
    """``local`` (an ICache) in front of Redis, which is shared; ``fetch`` asks Redis."""

    def __init__(self, local, link, commands, name, encode=_same, decode=_same, size=None):
        self._local = local
        self._link = link          # has .live: the Redis subscription is up
        self._commands = commands  # a txredisapi connection answering bytes
        self._prefix = f"litevna:cache:{name}:"
        self._encode, self._decode = encode, decode
        self._size = size or (lambda value: len(value))
        self.shared_hits = self.shared_misses = 0

    def _key(self, key):
        return self._prefix + hashlib.sha256(canonical(key).encode()).hexdigest()

    def get(self, key):
        return self._local.get(key)

    def fetch(self, key):
        """A Deferred of the shared value (None if absent), or None when Redis is away."""
        if not self._link.live:
            return None
        d = self._commands.get(self._key(key))

        def got(raw):
            if raw is None:
                self.shared_misses += 1
                return None
            self.shared_hits += 1
            value = self._decode(raw)
            self._local.put(key, value, self._size(value))
            return value

        def failed(failure):
            log.warn("Redis cache read failed ({e}); building instead", e=failure.getErrorMessage())
            return None

        return d.addCallbacks(got, failed)

    def put(self, key, value, size=None):
        self._local.put(key, value, size)
        if not self._link.live:
            return
        raw = self._encode(value)
        if len(raw) > MAX_SHARED:
            return
        d = self._commands.set(self._key(key), raw, expire=TTL)
        d.addErrback(lambda f: log.warn("Redis cache write failed ({e})",
                                        e=f.getErrorMessage()))


def bytes_connection(url):
    """A txredisapi connection pool whose replies stay bytes (cached bodies are binary)."""
    host, port, db, password = parse_redis_url(url)
    return txredisapi.lazyConnectionPool(host, port, db, poolsize=4, charset=None,
                                         password=password, convertNumbers=False,
                                         connectTimeout=1, replyTimeout=2)


def encode_search(answer):
    """QIDO's cached (document, warning, gzipped) as bytes: flag, warning, newline, body."""
    document, warning, gzip = answer
    return (b"g" if gzip else b"p") + (warning or "").encode() + b"\n" + document


def decode_search(raw):
    head, _, document = raw.partition(b"\n")
    return document, head[1:].decode() or None, head[:1] == b"g"
