"""A Site whose requests hand their bodies to a sink while the bytes arrive.

Twisted's Request buffers the whole body before ``process()`` runs. A STOW of
a gigabyte must instead be parsed and stored as it streams in, so the request
asks a *body router* (given the method, path and headers, as soon as the
headers are complete) for a sink: an object with ``write(bytes)``,
``finish()`` and ``abort()``. Requests without a sink get a small in-memory
body with a hard limit.
"""

import re
import time
from urllib.parse import parse_qsl, urlencode

from twisted.web import server
from twisted.web.http import RESPONSES

from litevna.http.cors import Cors
from litevna.http.errors import HTTPError
from litevna.logs import access_log
from litevna.metrics import CLIENT_CLOSED, Metrics

#: Largest body buffered for routes without a streaming sink (JSON APIs).
SMALL_BODY_LIMIT = 1 << 20
#: Socket read size while a body streams into a sink.
STREAM_READ_SIZE = 1 << 20
#: Bytes handed to one send() of a response.
SEND_LIMIT = 1 << 20
#: Seconds to keep reading (and dropping) a refused body so the client sees the answer.
LINGER_SECONDS = 2.0

# SPEC §3, method 3: /{label}/key_{token}/dicomweb/... carries the token in the path. An
# empty key_ segment is taken too, so that it is judged (a 401), not routed (a 404).
_KEY_SEGMENT = re.compile(rb"^/([^/]+)/key_([^/]*)(/dicomweb(?:/.*)?)$")
_SECRET_QUERY = "_auth_token"


class StreamingRequest(server.Request):
    """A Request that streams its body into a sink chosen from its headers.

    After ``process()`` starts, ``self.path`` no longer contains a ``key_…``
    segment and ``self.uri`` no longer contains ``_auth_token``: the secrets
    are kept in ``self.path_token`` / ``self.query_token`` instead, so nothing
    downstream (routes, access log, cache keys) can see them.
    """

    body_sink = None
    path_token = None
    query_token = None
    _received = 0
    _refused = False
    _reported = False

    def gotLength(self, length):
        # The headers are in: the request is in flight until it ends (see drained()).
        self._site = site = self.channel.site
        self._started = site.timer()
        site.in_flight.add(self)
        site.metrics.in_flight(len(site.in_flight))
        self.notifyFinish().addBoth(self._ended)
        # Twisted sends at most SEND_LIMIT (128 KiB) per write readiness; whole frames and
        # files go out in fewer reactor turns with a larger one.
        self.channel.transport.SEND_LIMIT = SEND_LIMIT
        # The channel has parsed the request line but not told the request yet.
        method, uri = self.channel._command, self.channel._path
        path, self.path_token = _strip_key(uri.split(b"?", 1)[0])
        self.query_token = _query_secret(uri)
        # What metrics and the access log name, the secrets out.
        self._line = (method, path, _loggable_query(uri), self.channel._version)
        try:
            self.body_sink = site.body_router(self, method, path, length)
        except HTTPError as error:
            self._refuse(error)
            return
        if self.body_sink is not None:
            # Fewer, larger reads for bulk bodies: less per-chunk overhead on the reactor.
            self.channel.transport.bufferSize = STREAM_READ_SIZE
        elif length is not None and length > SMALL_BODY_LIMIT:
            self._refuse(HTTPError(413, "request body too large for this route"))
            return
        super().gotLength(length if self.body_sink is None else 0)

    def handleContentChunk(self, data):
        if self._refused:
            return
        self._received += len(data)
        if self.body_sink is not None:
            try:
                self.body_sink.write(data)
            except HTTPError as error:
                self.body_sink.abort()
                self._refuse(error)
        elif self._received > SMALL_BODY_LIMIT:
            self._refuse(HTTPError(413, "request body too large for this route"))
        else:
            self.content.write(data)

    def requestReceived(self, command, path, version):
        if self._refused:
            return
        super().requestReceived(command, path, version)

    def process(self):
        self.path, self.path_token = _strip_key(self.path)
        if _SECRET_QUERY.encode() in self.args:  # decoded names: %5Fauth_token too
            self.query_token = _query_secret(self.uri)
            self.args.pop(_SECRET_QUERY.encode(), None)
            self.uri = _strip_query_secret(self.uri)
        if self.path.startswith(b"/uploads/") and b"signature=" in self.uri:
            # A presigned URL's signature is a credential too (checked in gotLength).
            self.uri = _strip_query_secret(self.uri, "signature")
        if self.path_token is not None:
            self.uri = _strip_key(self.uri.split(b"?", 1)[0])[0] + (
                b"?" + self.uri.split(b"?", 1)[1] if b"?" in self.uri else b"")
        if self.channel.site.cors.apply(self):
            return  # a preflight, answered
        super().process()

    def connectionLost(self, reason):
        if self.body_sink is not None and not self.finished:
            self.body_sink.abort()
        super().connectionLost(reason)

    def _ended(self, _):
        site = self._site
        site.in_flight.discard(self)
        site.metrics.in_flight(len(site.in_flight))
        self._report()

    def _report(self):
        """Count the request and write its access log line, once: when its response has
        ended, when a refusal was written, or when the client left first (status 499)."""
        if self._reported:
            return
        self._reported = True
        site = self._site
        status = self.code if self.finished or self._refused else CLIENT_CLOSED
        seconds = max(0.0, site.timer() - self._started)
        method, path, query, version = self._line
        site.metrics.request_ended(method, path, status, seconds)
        agent = self.requestHeaders.getRawHeaders(b"user-agent", [b"-"])[0]
        access_log(method, path, query, version, status, self.sentLength, seconds, agent,
                   getattr(self.client, "host", "-"))

    def _refuse(self, error):
        """Answer now, before the body is read, then drop the connection."""
        self._refused = True
        self.requestHeaders.removeHeader(b"Expect")  # no "100 Continue" after the answer
        body = error.body()
        head = [f"HTTP/1.1 {error.status} {RESPONSES.get(error.status, b'').decode()}",
                "Content-Type: application/json", f"Content-Length: {len(body)}",
                "Connection: close"]
        head += [f"{k}: {v}" for k, v in error.headers.items()]
        origin = self.requestHeaders.getRawHeaders(b"origin", [None])[0]
        head += [f"{k.decode()}: {v.decode()}" for k, v in self.channel.site.cors.headers(origin)]
        transport = self.channel.transport
        transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        self.setResponseCode(error.status)
        self.sentLength = len(body)
        self._report()
        # Keep reading (and dropping) a little, so the client sees the answer, not a reset.
        self.channel.callLater(LINGER_SECONDS, transport.loseConnection)


def _strip_key(path):
    match = _KEY_SEGMENT.match(path)
    if not match:
        return path, None
    return b"/" + match.group(1) + match.group(3), match.group(2).decode("latin-1")


def _query_secret(uri):
    """The first ``_auth_token`` value of a URI's query (its bytes), or None."""
    _, _, query = uri.partition(b"?")
    for name, value in _query_pairs(query):
        if name == _SECRET_QUERY:
            return value.encode("latin-1")
    return None


def _loggable_query(uri):
    """The query of a URI (bytes, b"" if none) without ``_auth_token`` or ``signature``."""
    _, _, query = uri.partition(b"?")
    names = {name for name, _ in _query_pairs(query)}
    for name in (_SECRET_QUERY, "signature"):
        if name in names:
            query = _strip_query_secret(b"?" + query, name)[1:]
    return query


def _strip_query_secret(uri, name=_SECRET_QUERY):
    path, _, query = uri.partition(b"?")
    kept = [(k, v) for k, v in _query_pairs(query) if k != name]
    return path + (b"?" + urlencode(kept, encoding="latin-1").encode("ascii") if kept else b"")


def _query_pairs(query):
    # Latin-1 both ways maps each byte to one character: any %XX decodes (UTF-8 or not)
    # and encodes back unchanged, so a bad token is judged (401), never an exception.
    return parse_qsl(query.decode("latin-1"), keep_blank_values=True, encoding="latin-1")


class LiteSite(server.Site):
    """A Site of StreamingRequests with a body router.

    Each request is counted in ``metrics`` (a ``litevna.metrics.Metrics``) and logged by
    ``litevna.logs.access_log`` when it ends, timed by ``timer`` from its headers on."""

    requestFactory = StreamingRequest

    def __init__(self, resource, body_router=None, cors=None, metrics=None,
                 timer=time.monotonic, **kwargs):
        super().__init__(resource, **kwargs)
        self.in_flight = set()  # requests whose headers are in and that have not ended
        self.body_router = body_router or (lambda request, method, path, length: None)
        self.cors = cors or Cors(())
        self.metrics = metrics if metrics is not None else Metrics()
        self.timer = timer

    def log(self, request):
        """Nothing: StreamingRequest writes the access log line, refusals included."""


def drained(site, clock, timeout):
    """A Deferred that fires once site has no request in flight, or after timeout seconds."""
    from twisted.internet.defer import Deferred

    done = Deferred()
    deadline = clock.seconds() + timeout

    def check():
        if not site.in_flight or clock.seconds() >= deadline:
            done.callback(len(site.in_flight))
        else:
            clock.callLater(0.05, check)

    check()
    return done
