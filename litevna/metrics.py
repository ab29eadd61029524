"""Prometheus metrics for ``GET /metrics`` (SPEC §1): requests per route family, stored
and deleted instances, cache lookups.

Each Application owns a ``Metrics`` and its own ``CollectorRegistry`` (never the global
one), so several applications can live in one process. Label values come from small fixed
sets only: a route *family* (never a path: no UID, store label or token may become a label),
a normalised method, a status code, a cache name.

With ``--workers N`` the supervisor gives every worker the same ``PROMETHEUS_MULTIPROC_DIR``
(``litevna.workers``): prometheus_client then keeps each value in a per-process file, and a
scrape of any worker adds up the files of all of them, the ended ones included (their
counters still count; their gauges are dropped by ``mark_process_dead``).
"""

import os
import re

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest)
from prometheus_client.multiprocess import MultiProcessCollector

import litevna

#: The text exposition format that ``generate_latest`` writes.
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
#: Seconds: from a cached metadata document (well under 1 ms) to a large STOW (tens of s).
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                    1.0, 2.5, 5.0, 10.0, 30.0)
#: The status of a request whose client went away before its response ended (nginx's code).
CLIENT_CLOSED = 499

# A ``*_created`` series per counter and histogram child doubles what a scrape carries for
# nothing a dashboard uses (process-wide; multiprocess mode never writes them).
disable_created_metrics()

_STORE = r"/[^/]+/dicomweb"
_LEVEL = r"/studies/[^/]+(?:/series/[^/]+(?:/instances/[^/]+)?)?"
_INSTANCE = r"/studies/[^/]+/series/[^/]+/instances/[^/]+"
_FRAMES = r"/frames?/[^/]+"
_RENDERABLE = rf"(?:{_LEVEL}|{_INSTANCE}{_FRAMES})"

#: (methods, or None for any; path pattern; family): the first full match wins. Paths are
#: as the site leaves them, a ``key_…`` segment already taken out.
_ROUTE_TABLE = (
    (None, r"/(?:healthz|readyz)", "health"),
    (None, r"/metrics", "metrics"),
    (None, _STORE + r"/studies/upload-url", "upload_url"),
    ({b"POST"}, _STORE + r"/studies(?:/[^/]+)?", "stow"),
    (None, _STORE + r"/studies", "qido_studies"),
    (None, _STORE + r"(?:/studies/[^/]+)?/series", "qido_series"),
    (None, _STORE + r"(?:/studies/[^/]+(?:/series/[^/]+)?)?/instances", "qido_instances"),
    ({b"DELETE"}, _STORE + _LEVEL, "delete"),
    (None, _STORE + _LEVEL, "wado_retrieve"),
    (None, _STORE + _LEVEL + r"/metadata", "wado_metadata"),
    (None, _STORE + _INSTANCE + _FRAMES, "wado_frames"),
    (None, _STORE + _INSTANCE + r"/bulkdata/.+", "wado_bulkdata"),
    (None, _STORE + _RENDERABLE + r"/rendered", "rendered"),
    (None, _STORE + _RENDERABLE + r"/thumbnail", "thumbnail"),
    (None, r"/uploads/[^/]+/[^/]+", "upload_put"),
    (None, r"/image-stores/[^/]+/tokens/(?:create|revoke)", "tokens"),
    ({b"POST"}, r"/login", "accounts_api"),
    (None, r"/(?:accounts|logout|image-stores(?:/[^/]+(?:/api-keys(?:/[^/]+)?)?)?)",
     "accounts_api"),
    (None, r"/(?:login|signup|ui/.*)?", "ui_pages"),
    (None, r"/static/[^/]+", "static"),
)
_ROUTES = tuple((methods, re.compile(pattern.encode("ascii"), re.DOTALL).fullmatch, family)
                for methods, pattern, family in _ROUTE_TABLE)
#: Every value the ``route`` label can take.
FAMILIES = tuple(dict.fromkeys(family for _, _, family in _ROUTE_TABLE)) + ("other",)
_METHODS = {m: m.decode() for m in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS")}


def route_family(method, path):
    """The route family (one of FAMILIES) of a request's method and path (bytes)."""
    for methods, matches, family in _ROUTES:
        if (methods is None or method in methods) and matches(path):
            return family
    return "other"


def method_label(method):
    """The method as a label: a standard one, else ``other`` (clients choose methods)."""
    return _METHODS.get(method, "other")


def kernel_name():
    from litevna.render import kernel

    return "compiled" if kernel.compiled_active() else "numpy"


class Metrics:
    """The metrics of one application, and their exposition."""

    def __init__(self, version=litevna.__version__, kernel=None):
        self.registry = CollectorRegistry(auto_describe=True)
        self._multiprocess_dir = os.environ.get(MULTIPROCESS_DIR)
        if self._multiprocess_dir is not None:
            # Gone if a temp cleaner took it: a restarted worker must not fail to start.
            os.makedirs(self._multiprocess_dir, exist_ok=True)
        registry = self.registry
        self._requests = Counter(
            "litevna_http_requests", "HTTP requests by route family, method and status "
            "(refused and abandoned ones too)", ("route", "method", "status"), registry=registry)
        self._durations = Histogram(
            "litevna_http_request_duration_seconds", "From the request's headers to the end "
            "of its response", ("route", "method"), buckets=DURATION_BUCKETS, registry=registry)
        self._in_flight = Gauge(
            "litevna_requests_in_flight", "Requests whose headers are in and whose response "
            "has not ended", registry=registry, multiprocess_mode="livesum")
        self._stored = Counter(
            "litevna_instances_stored", "Instances committed to the index (identical "
            "duplicates excluded, replacements included)", registry=registry)
        self._stored_bytes = Counter(
            "litevna_bytes_stored", "Part 10 bytes of the instances stored", registry=registry)
        self._deleted = Counter(
            "litevna_instances_deleted", "Instances removed by DICOMweb DELETE",
            registry=registry)
        self._cache_requests = Counter(
            "litevna_cache_requests", "In-process cache lookups by cache and result",
            ("cache", "result"), registry=registry)
        self._cache_bytes = Gauge(
            "litevna_cache_bytes", "Bytes held by an in-process cache", ("cache",),
            registry=registry, multiprocess_mode="livesum")
        info = Gauge("litevna_info", "The server's version and its active pixel kernel "
                     "(compiled or numpy); always 1", ("version", "kernel"), registry=registry,
                     multiprocess_mode="max")
        info.labels(version, kernel or kernel_name()).set(1)

    def request_ended(self, method, path, status, seconds):
        """Count a request (method and path as bytes) that took seconds."""
        route, method = route_family(method, path), method_label(method)
        self._requests.labels(route, method, str(status)).inc()
        self._durations.labels(route, method).observe(seconds)

    def in_flight(self, count):
        self._in_flight.set(count)

    def instances_stored(self, count, size):
        """count instances of size bytes in all were committed (any thread)."""
        self._stored.inc(count)
        self._stored_bytes.inc(size)

    def instances_deleted(self, count):
        self._deleted.inc(count)

    def watch(self, cache):
        """Count the lookups of a named MemoryCache and follow its size; returns it."""
        hits = self._cache_requests.labels(cache.name, "hit")
        misses = self._cache_requests.labels(cache.name, "miss")
        size = self._cache_bytes.labels(cache.name)
        size.set(cache.stored_bytes)

        def on_event(cache, event):
            if event == "hit":
                hits.inc()
            elif event == "miss":
                misses.inc()
            else:
                size.set(cache.stored_bytes)

        cache.on_event = on_event
        return cache

    def exposition(self):
        """The Prometheus text of this process's metrics, or of every worker's."""
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, self._multiprocess_dir)
        return generate_latest(registry)
