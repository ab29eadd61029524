"""Assembly only: config → backends → services. No logic of its own."""

import gc
import os
import socket
import sys
import time

from twisted.application import service, strports
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from litevna.accounts import Accounts
from litevna.archive import Archive
from litevna.dicomweb.upload import UploadService
from litevna.uploads import Uploads
from litevna.auth.guard import Guard
from litevna.auth.keys import Keyring
from litevna.auth.revocation import IndexRevocations
from litevna.auth.tokens import Tokens
from litevna.config import is_postgres_url
from litevna.index.sqlite import SqliteIndex
from litevna.storage.fs import FileBlobStore
from litevna.cache.memory import MemoryCache
from litevna.dicomweb.qido import Qido
from litevna.dicomweb.rendered import Rendered
from litevna.dicomweb.wado import Wado
from litevna.http.site import drained
from litevna.metrics import Metrics
from litevna.web import Application

log = Logger()
CPU_THREADS = max(2, min(4, os.cpu_count() or 2))


class _ThreadPoolService(service.Service):
    def __init__(self, pool):
        self.pool = pool

    def startService(self):
        super().startService()
        self.pool.start()

    def stopService(self):
        super().stopService()
        self.pool.stop()


class _RedisService(service.Service):
    def __init__(self, redis):
        self.redis = redis

    def startService(self):
        super().startService()
        self.redis.start()

    def stopService(self):
        super().stopService()
        return self.redis.stop()


class _UploadSweeper(service.Service):
    """Every minute, remove presigned uploads that expired unclaimed."""

    INTERVAL = 60.0

    def __init__(self, clock, uploads):
        self._clock, self._uploads = clock, uploads
        self._loop = None

    def startService(self):
        super().startService()
        self._loop = LoopingCall(self.sweep)
        self._loop.clock = self._clock
        self._loop.start(self.INTERVAL, now=True).addErrback(
            lambda f: log.failure("upload sweeper stopped", f))

    def sweep(self):
        removed = self._uploads.sweep()
        if removed:
            log.info("removed {n} expired upload(s)", n=removed)

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()


class _ArchiveService(service.Service):
    def __init__(self, archive, index):
        self.archive = archive
        self.index = index

    def startService(self):
        super().startService()
        self.index.migrate()
        self.archive.start()

    def stopService(self):
        super().stopService()
        self.archive.stop()


def open_backends(config):
    """The index and keyring of a data dir (shared by the server and the admin CLI)."""
    os.makedirs(config.data_dir, exist_ok=True)
    if is_postgres_url(config.database):
        # Imported here: psycopg is needed only by nodes that share a PostgreSQL index.
        from litevna.index.postgres import PostgresIndex

        index = PostgresIndex(config.database)
    else:
        index = SqliteIndex(config.database)
    index.migrate()
    return index, Keyring(config.key_dir)


def _shared_tier(config, link, services):
    """With --redis, a function putting a Redis tier behind an in-process cache."""
    if not config.redis:
        return lambda name, local: local
    from litevna.cache import redis as shared

    commands = shared.bytes_connection(config.redis)
    services.append(_Closing(commands))
    codecs = {"search": dict(encode=shared.encode_search, decode=shared.decode_search,
                             size=lambda answer: len(answer[0]))}
    return lambda name, local: shared.TieredCache(local, link, commands, name,
                                                  **codecs.get(name, {}))


class _Closing(service.Service):
    """Closes a connection when the server stops."""

    def __init__(self, connection):
        self.connection = connection

    def stopService(self):
        super().stopService()
        return self.connection.disconnect()


def make_application(config, reactor, cpu_pool):
    """The Application and the services it needs started, for a config."""
    index, keyring = open_backends(config)
    blobs = FileBlobStore(config.blob_dir)
    metrics = Metrics()
    archive = Archive(reactor, index, blobs, config.staging_dir,
                      cpu_pool, replace_duplicates=config.on_duplicate == "replace",
                      metrics=metrics)

    def cpu(fn, *args):
        return deferToThreadPool(reactor, cpu_pool, fn, *args)

    revocations = IndexRevocations(index, time.time)
    services = [_ArchiveService(archive, index)]
    readiness = [("index", lambda: index.count_instances(0)),
                 ("storage", lambda: os.access(config.blob_dir, os.W_OK) or 1 / 0)]
    if config.redis:
        # Imported here: txredisapi installs the global reactor when imported.
        from litevna.auth.redisrevocation import RedisRevocations

        revocations = RedisRevocations(reactor, config.redis, revocations, index, time.time,
                                       on_revoked=lambda identifier: guard.forget())
        services.append(_RedisService(revocations))
        readiness.append(("redis", lambda: revocations.live or 1 / 0))
    guard = Guard(keyring, index.api_key, index.store_by_label, time.time, revocations)
    tokens = Tokens(keyring, guard, index, revocations, time.time)
    accounts = Accounts(index, keyring, time.time, revocations)
    # A quarter of the cache for metadata documents, a quarter for search answers,
    # half for rendered images.
    share = _shared_tier(config, revocations, services)

    def cache(name, max_bytes):
        return share(name, metrics.watch(MemoryCache(max_bytes, name=name)))

    wado = Wado(index, blobs, cpu, cache("metadata", config.cache_size // 4))
    qido = Qido(index, cpu, cache("search", config.cache_size // 4))
    rendered = Rendered(index, blobs, cpu, cache("rendered", config.cache_size // 2),
                        instance_row=wado.instance_row)
    uploads = UploadService(archive, Uploads(config.upload_dir, config.key_dir, time.time,
                                             config.max_upload))
    services.append(_UploadSweeper(reactor, uploads.uploads))
    application = Application(config, archive, guard, wado, qido, rendered, readiness, tokens,
                              accounts, uploads, metrics)
    return application, services


DRAIN_SECONDS = 15.0
#: How long a thread may hold the GIL while another waits for it (CPython: 5 ms). A
#: render in the CPU pool releases the GIL for its C parts (file read, kernel, encoder)
#: and must get it back from the reactor thread each time: two workers rendered 541
#: JPEG/s at 5 ms and 1114 at 0.5 ms, back to back.
SWITCH_INTERVAL = 0.0005


class _InOrder(service.MultiService):
    """Stops its services one after another, the last added first (a MultiService
    stops them all at once): listening ends, requests drain, then the archive stops."""

    def stopService(self):
        service.Service.stopService(self)
        d = defer.succeed(None)
        for child in reversed(list(self)):
            d.addCallback(lambda _, child=child: child.stopService())
        return d


class _Drain(service.Service):
    """On stop, wait (up to DRAIN_SECONDS) for the requests in flight to end."""

    def __init__(self, site, clock):
        self._site, self._clock = site, clock

    def stopService(self):
        super().stopService()
        if self._site.in_flight:
            log.info("draining {n} request(s)", n=len(self._site.in_flight))
        return drained(self._site, self._clock, DRAIN_SECONDS)


class _AdoptedPort(service.Service):
    """Serve a site on a listening socket inherited from the --workers supervisor."""

    def __init__(self, reactor, fd, site):
        self._reactor, self._fd, self._site = reactor, fd, site
        self.port = None

    def startService(self):
        super().startService()
        probe = socket.fromfd(self._fd, socket.AF_INET, socket.SOCK_STREAM)
        family = probe.family
        probe.close()
        self.port = self._reactor.adoptStreamPort(self._fd, family, self._site)

    def stopService(self):
        super().stopService()
        return self.port.stopListening() if self.port is not None else None


def ui_address(listen):
    """The browser address of a tcp:/ssl: endpoint string (``tcp:8080:interface=0.0.0.0``)."""
    kind, _, rest = listen.partition(":")
    # Endpoint strings escape a colon in a value as "\\:" (an IPv6 interface).
    parts = [p.replace("\0", ":") for p in rest.replace("\\:", "\0").split(":")]
    port = next((p for p in parts if p.isdigit()), parts[0] if parts else "")
    options = dict(p.split("=", 1) for p in parts if "=" in p)
    if port.startswith("port="):
        port = port[5:]
    port = options.get("port", port)
    host = options.get("interface", "127.0.0.1")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if kind == 'ssl' else 'http'}://{host}:{port}/"


def make_service(config, reactor, inherit_fd=None):
    """The whole server as one twistd service: with --workers N, their supervisor."""
    if config.workers > 1 and inherit_fd is None:
        from litevna.workers import WorkerSupervisor, bind

        open_backends(config)[0].close()  # migrate once, before any worker starts
        sock = bind(config.listen)
        log.info("LiteVNA: {n} workers on {listen}", n=config.workers, listen=config.listen)
        return WorkerSupervisor(reactor, sock, config.workers, config.worker_arguments())
    top = _InOrder()
    cpu_pool = ThreadPool(minthreads=1, maxthreads=CPU_THREADS, name="litevna-cpu")
    application, backend_services = make_application(config, reactor, cpu_pool)
    _ThreadPoolService(cpu_pool).setServiceParent(top)
    for backend in backend_services:
        backend.setServiceParent(top)
    site = application.site()
    _Drain(site, reactor).setServiceParent(top)
    if inherit_fd is None:
        web = strports.service(config.listen, site, reactor=reactor)
    else:
        web = _AdoptedPort(reactor, inherit_fd, site)
    web.setServiceParent(top)
    log.info("LiteVNA serving {data_dir} on {listen}; web UI at {ui}", data_dir=config.data_dir,
             listen=config.listen, ui=config.public_url or ui_address(config.listen))
    # What is loaded by now (pydicom's dictionaries, the modules) lives as long as the
    # process: keep it out of every full collection, which otherwise stalls requests.
    gc.collect()
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL)
    return top
