"""The presigned-upload service: step 3 runs the stored body through STOW's own ingest.

A single Part 10 body (the client's document) is handed to the archive as it lies, with no
copy; a multipart/related body is read back from disk into the same StowBody that parses a
direct STOW request, at the pace the archive takes it.
"""

import os
from urllib.parse import parse_qsl

from twisted.internet.defer import Deferred

from litevna.dicomweb.stow import StowBody
from litevna.http.errors import HTTPError
from litevna.http.headers import MediaTypeError, parse_media_type

READ_SIZE = 1 << 20


class _Uploaded:
    """A stored upload body, shaped like the archive's Staging (path, discard)."""

    def __init__(self, path):
        self.path = path

    def discard(self):
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class _FileFeeder:
    """Reads a file into a body sink, one chunk per reactor turn, pausable like a transport."""

    def __init__(self, reactor, path, sink_factory):
        self._reactor = reactor
        self._fp = open(path, "rb")
        self._sink = sink_factory(self)
        self._paused = False
        self._call = None
        self._done = Deferred()

    def start(self):
        self._schedule()
        return self._done

    def _schedule(self):
        self._call = self._reactor.callLater(0, self._step)

    def _step(self):
        self._call = None
        if self._paused:
            return
        chunk = self._fp.read(READ_SIZE)
        if not chunk:
            self._fp.close()
            self._done.callback(self._sink)
            return
        try:
            self._sink.write(chunk)
        except Exception:  # noqa: BLE001 - handed to the caller as the Deferred's failure
            self._fp.close()
            self._sink.abort()
            self._done.errback()
            return
        self._schedule()

    def pauseProducing(self):
        self._paused = True

    def resumeProducing(self):
        self._paused = False
        if self._call is None and not self._done.called:
            self._schedule()


class UploadService:
    """Issue, receive and process presigned uploads (litevna.uploads holds their state)."""

    def __init__(self, reactor, archive, uploads):
        self._reactor = reactor
        self._archive = archive
        self.uploads = uploads

    def issue(self, principal, server_url):
        return self.uploads.issue(principal.store_id, principal.label, server_url)

    def process(self, principal, upload_id, study_uid=None):
        """A Deferred of the Outcomes of every instance in the upload (STOW's response)."""
        path, content_type, folder = self.uploads.claim(principal.store_id, upload_id)
        try:
            media_type = parse_media_type(content_type)[0]
        except MediaTypeError:
            media_type = "application/dicom"
        if media_type == "multipart/related":
            feeder = _FileFeeder(self._reactor, path, lambda transport: StowBody(
                self._archive, principal, content_type, study_uid, self.uploads.max_upload,
                transport))
            d = feeder.start().addCallback(lambda sink: sink.finish())
        else:
            d = self._archive.ingest(principal.store_id, _Uploaded(path), study_uid,
                                     principal.scope).addCallback(lambda outcome: [outcome])

        def done(result):
            self.uploads.finished(folder)
            return result

        return d.addBoth(done)


def open_put(uploads, request, uri, label, upload_id):
    """The body sink of ``PUT /uploads/{label}/{id}?expires=…&signature=…``, chosen as soon
    as the request's headers are in (before Twisted has parsed its query: uri is raw)."""
    query = dict(parse_qsl(uri.partition(b"?")[2].decode("latin-1")))
    header = request.requestHeaders.getRawHeaders
    length = header(b"content-length")
    try:
        length = int(length[0]) if length else None
    except ValueError:
        raise HTTPError(400, "Content-Length is not a number") from None
    content_type = (header(b"content-type") or [b"application/dicom"])[0].decode("latin-1")
    encoding = (header(b"content-encoding") or [b""])[0].decode("latin-1")
    return uploads.open_put(label, upload_id, query.get("expires"), query.get("signature"),
                            content_type, encoding, length)
