"""An in-process LRU of response bodies, bounded by their total size."""

import threading
from collections import OrderedDict

from zope.interface import implementer

from litevna.interfaces import ICache


@implementer(ICache)
class MemoryCache:
    """Least recently used entries go first once the bodies exceed max_bytes.

    Values are bytes, or any object with its size given to ``put``. Safe to use
    from the reactor thread and the CPU pool at once. ``name`` says which cache it is
    (``litevna.metrics`` labels its counts with it)."""

    #: Called as ``on_event(cache, event)`` after each lookup ("hit" or "miss") and each
    #: "put" that kept a value (``litevna.metrics.Metrics.watch`` sets it); None: no one.
    on_event = None

    def __init__(self, max_bytes=64 << 20, name=None):
        self.name = name
        self._entries = OrderedDict()
        self._bytes = 0
        self._max = max_bytes
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @property
    def stored_bytes(self):
        """The total size of the values kept."""
        return self._bytes

    def get(self, key):
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
            else:
                self.hits += 1
                self._entries.move_to_end(key)
        if self.on_event is not None:
            self.on_event(self, "miss" if entry is None else "hit")
        return None if entry is None else entry[0]

    def put(self, key, value, size=None):
        size = len(value) if size is None else size
        if size > self._max // 4:
            return  # also: max_bytes 0 keeps nothing
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (value, size)
            self._bytes += size
            while self._bytes > self._max:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._bytes -= evicted
        if self.on_event is not None:
            self.on_event(self, "put")
