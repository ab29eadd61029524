"""Streaming response bodies: a push producer over a sequence of pieces.

A piece is ``bytes``, a :class:`FileRange` (read in chunks, never whole), or a
Deferred firing with bytes (work done in a thread pool, such as transcoding).
The producer honours pause/resume from the transport, closes its file on
``stopProducing`` and finishes the request after the last piece.
"""

import os

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

CHUNK = 256 * 1024


class FileRange:
    """``length`` bytes of the file at ``path`` from ``offset``; ``observe`` sees each chunk."""

    __slots__ = ("path", "offset", "length", "observe")

    def __init__(self, path, offset=0, length=None, observe=None):
        self.path, self.offset, self.length, self.observe = path, offset, length, observe


def read_range(path, offset, length):
    """The bytes of one small range (frames): one open, one pread."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.pread(fd, length, offset)
    finally:
        os.close(fd)
    if len(data) != length:
        raise OSError(f"{path} is shorter than its index says")
    return data


@implementer(IPushProducer)
class PiecesProducer:
    """Writes pieces to a request as fast as the client reads them."""

    def __init__(self, request, pieces, zero_copy=False):
        self._request = request
        self._transport = _sendfile_transport(request) if zero_copy else None
        self._pieces = iter(pieces)
        self._fd = None
        self._remaining = 0
        self._position = 0
        self._observe = None
        self._paused = False
        self._stopped = False
        self._waiting = False
        self.done = Deferred()

    def start(self):
        """Begin streaming; ``done`` fires when the body is complete (or failed)."""
        self._request.registerProducer(self, True)
        if self._transport is not None:
            self._request.write(b"")  # the status line and headers go before any sendfile
        self._pump()
        return self.done

    def pauseProducing(self):
        self._paused = True

    def resumeProducing(self):
        self._paused = False
        if not self._waiting:
            self._pump()

    def stopProducing(self):
        self._stopped = True
        self._close()
        if not self.done.called:
            self.done.callback(None)

    def _pump(self):
        try:
            while not self._paused and not self._stopped and not self._waiting:
                if self._fd is not None:
                    self._write_chunk()
                    continue
                piece = next(self._pieces, None)
                if piece is None:
                    self._finish()
                    return
                if isinstance(piece, Deferred):
                    self._waiting = True
                    piece.addCallbacks(self._arrived, self._failed)
                elif isinstance(piece, FileRange):
                    self._open(piece)
                else:
                    self._request.write(piece)
        except Exception as exc:  # noqa: BLE001 - a body cannot change its status mid-stream
            self._failed(exc)

    def _arrived(self, data):
        self._waiting = False
        if not self._stopped:
            self._request.write(data)
            self._pump()

    def _open(self, piece):
        self._fd = os.open(piece.path, os.O_RDONLY)
        self._position = piece.offset
        self._remaining = piece.length if piece.length is not None else \
            os.fstat(self._fd).st_size - piece.offset
        self._observe = piece.observe
        if self._remaining <= 0:
            self._close()

    def _write_chunk(self):
        if self._transport is not None:
            self._sendfile()
            return
        data = os.pread(self._fd, min(CHUNK, self._remaining), self._position)
        if not data:
            raise OSError("a stored file is shorter than its index says")
        self._position += len(data)
        self._remaining -= len(data)
        if self._observe is not None:
            self._observe(data)
        if self._remaining <= 0:
            self._close()
        self._request.write(data)

    def _sendfile(self):
        """Hand file bytes to the socket without copying them through Python.

        Only once Twisted's own buffer (headers, earlier pieces) is empty; when the
        socket is full, let the transport wake us as it does for its own buffer."""
        transport = self._transport
        if transport.dataBuffer[transport.offset:] or transport._tempDataBuffer:
            self._wait_for_socket()
            return
        try:
            sent = os.sendfile(transport.fileno(), self._fd, self._position, self._remaining)
        except BlockingIOError:
            sent = 0
        if sent == 0:
            self._wait_for_socket()
            return
        self._position += sent
        self._remaining -= sent
        if self._remaining <= 0:
            self._close()

    def _wait_for_socket(self):
        self._paused = True
        self._transport.producerPaused = True  # doWrite resumes the producer once writable
        self._transport.startWriting()

    def _close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _finish(self):
        self._request.unregisterProducer()
        self._request.finish()
        if not self.done.called:
            self.done.callback(None)

    def _failed(self, failure):
        # Headers are gone: the only honest signal left is to cut the connection.
        self._stopped = True
        self._close()
        self._request.unregisterProducer()
        transport = getattr(self._request.channel, "transport", None)
        if transport is not None:
            transport.abortConnection()
        if not self.done.called:
            self.done.errback(failure)


def _sendfile_transport(request):
    """The TCP transport under request if os.sendfile can write to it directly, else None."""
    transport = getattr(request.channel, "transport", None)
    if transport is None or request.method == b"HEAD" or not hasattr(os, "sendfile") or \
            type(transport).__name__ != "Server" or \
            not all(hasattr(transport, a) for a in ("dataBuffer", "offset", "_tempDataBuffer",
                                                    "producerPaused", "startWriting")):
        return None  # TLS, a test transport or another reactor: the copying path
    return transport
