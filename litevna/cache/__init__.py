"""Caches of finished response bodies: in-process (memory.py), and with ``--redis`` a shared
tier behind it (redis.py)."""


def shared(cache, key):
    """A Deferred of the value a shared tier holds for key (None: absent), or None if the
    cache has no shared tier (or it is away): then build the value."""
    fetch = getattr(cache, "fetch", None)
    return fetch(key) if fetch is not None else None


def or_build(d, build):
    """d's value, or when it is None the (Deferred) value of build()."""
    return d.addCallback(lambda value: value if value is not None else build())
