"""``--workers N``: N server processes sharing one listening socket, supervised.

The supervisor binds the socket, runs the index migrations once, and starts N
``litevna serve --worker K --inherit-fd FD`` children that adopt the socket; the
kernel hands each new connection to one of them. A child that dies is started
again; SIGTERM to the supervisor is passed on to the children, which drain
their requests, and the supervisor waits for them.

Nothing here is shared between the workers but the socket: they read and
write the same index and blob store, and every cache keys on what the index
says (a store's generation, an instance's digest), so a write by one worker
is seen by the others.

And their metrics: the supervisor makes a folder on local disk (never the data
dir, which several hosts may share) and names it in PROMETHEUS_MULTIPROC_DIR,
where every worker's prometheus_client keeps its values, so that a scrape of
any worker reports the sum of all (``litevna.metrics``).
"""

import os
import shutil
import signal
import socket
import sys
import tempfile

from prometheus_client import multiprocess
from twisted.application import service
from twisted.internet import defer, protocol
from twisted.logger import Logger

from litevna.metrics import MULTIPROCESS_DIR

log = Logger()
RESTART_DELAY = 1.0
STOP_TIMEOUT = 20.0


def bind(listen):
    """A listening socket for a ``tcp:PORT[:interface=ADDR]`` endpoint string, inheritable."""
    kind, _, rest = listen.partition(":")
    if kind not in ("tcp", "tcp6"):
        raise ValueError("--workers needs a tcp: or tcp6: --listen endpoint")
    port, *options = rest.split(":")
    params = dict(o.split("=", 1) for o in options if "=" in o)
    family = socket.AF_INET6 if kind == "tcp6" else socket.AF_INET
    interface = params.get("interface", "::" if kind == "tcp6" else "0.0.0.0")
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((interface, int(port)))
    sock.listen(int(params.get("backlog", 511)))
    sock.setblocking(False)
    sock.set_inheritable(True)
    return sock


class _Child(protocol.ProcessProtocol):
    def __init__(self, supervisor, number):
        self.supervisor = supervisor
        self.number = number
        self.ended = defer.Deferred()

    def processEnded(self, reason):
        self.ended.callback(None)
        self.supervisor.child_ended(self, reason)


class WorkerSupervisor(service.Service):
    """Starts, restarts and stops the worker processes."""

    def __init__(self, reactor, sock, count, arguments, env=None):
        self._reactor = reactor
        self._sock = sock
        self._count = count
        self._arguments = arguments  # the serve options every child gets
        self._env = env if env is not None else dict(os.environ)
        self.children = {}  # number -> (_Child, transport)

    def startService(self):
        super().startService()
        self._metrics_dir = tempfile.mkdtemp(prefix="litevna-metrics-")
        self._env = dict(self._env, **{MULTIPROCESS_DIR: self._metrics_dir})
        for number in range(self._count):
            self._spawn(number)

    def _spawn(self, number):
        fd = self._sock.fileno()
        child = _Child(self, number)
        argv = [sys.executable, "-m", "litevna", "serve", "--worker", str(number),
                "--inherit-fd", str(fd), *self._arguments]
        transport = self._reactor.spawnProcess(
            child, sys.executable, argv, env=self._env, childFDs={0: 0, 1: 1, 2: 2, fd: fd})
        child.pid = transport.pid
        self.children[number] = (child, transport)
        log.info("worker {number} started (pid {pid})", number=number, pid=transport.pid)

    def child_ended(self, child, reason):
        self.children.pop(child.number, None)
        # Its counters still count; its gauges (requests in flight, cache sizes) no longer.
        multiprocess.mark_process_dead(child.pid, self._metrics_dir)
        if self.running:
            log.warn("worker {number} ended ({reason}); starting it again",
                     number=child.number, reason=reason.getErrorMessage())
            self._reactor.callLater(RESTART_DELAY, self._restart, child.number)

    def _restart(self, number):
        if self.running and number not in self.children:
            self._spawn(number)

    def stopService(self):
        super().stopService()
        children = list(self.children.values())
        for _, transport in children:
            _signal(transport, signal.SIGTERM)
        killer = self._reactor.callLater(
            STOP_TIMEOUT, lambda: [_signal(t, signal.SIGKILL) for _, t in children])
        done = defer.gatherResults([child.ended for child, _ in children])

        def stopped(_):
            if killer.active():
                killer.cancel()
            self._sock.close()
            shutil.rmtree(self._metrics_dir, ignore_errors=True)

        return done.addBoth(stopped)


def _signal(transport, number):
    try:
        transport.signalProcess(number)
    except Exception:  # noqa: BLE001 - already gone
        pass
