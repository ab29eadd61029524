"""The presigned-upload service (SPEC §4): STOW's own parser and ingest, split in time.

While the body is PUT it is inflated (litevna.uploads) and split here into one file per
instance, exactly as a STOW body is split (the same multipart parser and part rules), and
each file is parsed in the CPU pool as soon as it is complete, the result kept on disk
beside it. ``POST …?uploadId=`` then only has to check each parsed instance against the
URL's study and the token's scope and commit it, through the archive's one ingest path,
in whichever process (worker or node) it reaches. A missing or unreadable kept parse is
parsed again: it is a cache, never the truth.
"""

import os
import pickle
from urllib.parse import parse_qsl

from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from litevna.archive import Outcome
from litevna.dicom.ingest import CANNOT_UNDERSTAND, IngestFailure, parse_part10
from litevna.dicomweb.stow import (MAX_IN_FLIGHT, DICOM, PartSplitter, body_kind, new_parser,
                                   part_refusal)
from litevna.http.errors import HTTPError
from litevna.multipart import MultipartError

log = Logger()


class _Uploaded:
    """An instance file of an upload, shaped like the archive's Staging (path, discard)."""

    def __init__(self, path):
        self.path = path

    def discard(self):
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class PartWriter(PartSplitter):
    """Writes an inflated upload body as instance files ``part-NNNNNN.dcm``."""

    def __init__(self, folder, content_type, on_part):
        kind, boundary = body_kind(content_type)
        self._folder = folder
        self._on_part = on_part
        self._parser = None if kind == DICOM else new_parser(boundary)
        self._parts = []  # the manifest: {"file": name} or {"failed": reason, "message": m}
        if self._parser is None:
            self._open()

    def _open(self):
        name = f"part-{len(self._parts):06d}.dcm"
        self._parts.append({"file": name})
        self._current = open(os.path.join(self._folder, name), "wb", buffering=1 << 20)

    def _start_part(self, headers):
        refusal = part_refusal(headers)
        if refusal is None:
            self._open()
        else:
            self._parts.append({"failed": CANNOT_UNDERSTAND, "message": refusal})

    def _end_part(self):
        if self._current is not None:
            self._current.close()
            self._current = None
            self._on_part(os.path.join(self._folder, self._parts[-1]["file"]))

    write = PartSplitter.split

    def finish(self):
        if self._parser is None:
            self._end_part()
        else:
            try:
                self._parser.close()
            except MultipartError as exc:
                raise HTTPError(400, f"malformed multipart body: {exc}") from None
            if not self._parts:
                raise HTTPError(400, "the multipart body contains no instances")
        return self._parts

    def abort(self):
        if self._current is not None:
            self._current.close()
            self._current = None
        for part in self._parts:
            if "file" in part:
                try:
                    os.unlink(os.path.join(self._folder, part["file"]))
                except FileNotFoundError:
                    pass


def _parse_and_keep(path):
    """Parse an instance file and keep the result beside it (``<file>.parsed``, a pickle in
    the server's own data dir) for whichever process claims the upload."""
    try:
        result = (True, parse_part10(path))
    except IngestFailure as failure:
        result = (False, (failure.reason, failure.message))
    tmp = f"{path}.parsed.tmp"
    with open(tmp, "wb") as fp:
        pickle.dump(result, fp, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, f"{path}.parsed")


def _kept_or_parsed(path):
    """The ParsedInstance of an instance file: kept by the PUT's parse, else parsed now."""
    try:
        with open(f"{path}.parsed", "rb") as fp:
            ok, value = pickle.load(fp)
    except (FileNotFoundError, EOFError, pickle.UnpicklingError):
        return parse_part10(path)
    if not ok:
        raise IngestFailure(*value)
    return value


class UploadService:
    """Issue, receive and process presigned uploads (litevna.uploads holds their state)."""

    def __init__(self, archive, uploads):
        self._archive = archive
        self.uploads = uploads
        self._parsing = {}  # instance file -> Deferred of its parse, while it runs

    def issue(self, principal, server_url):
        return self.uploads.issue(principal.store_id, principal.label, server_url)

    def open_put(self, request, uri, label, upload_id):
        """The body sink of ``PUT /uploads/{label}/{id}?expires=…&signature=…``, chosen as
        soon as the headers are in (before Twisted has parsed the query: uri is raw)."""
        query = dict(parse_qsl(uri.partition(b"?")[2].decode("latin-1")))
        header = request.requestHeaders.getRawHeaders
        length = header(b"content-length")
        try:
            length = int(length[0]) if length else None
        except ValueError:
            raise HTTPError(400, "Content-Length is not a number") from None
        content_type = (header(b"content-type") or [DICOM.encode()])[0].decode("latin-1")
        encoding = (header(b"content-encoding") or [b""])[0].decode("latin-1")
        return self.uploads.open_put(
            label, upload_id, query.get("expires"), query.get("signature"), content_type,
            encoding, length, lambda folder, kind: PartWriter(folder, kind, self._pre_parse))

    def _pre_parse(self, path):
        d = self._parsing[path] = self._archive.cpu(_parse_and_keep, path)

        def done(result):
            self._parsing.pop(path, None)
            if isinstance(result, Failure):
                log.failure("could not parse {path} ahead of its claim", result, path=path)

        d.addBoth(done)

    def _parse_of(self, path):
        """A Deferred of an instance file's ParsedInstance (after its pre-parse, if running)."""
        running = self._parsing.get(path)
        if running is None:
            return self._archive.cpu(_kept_or_parsed, path)
        waiter = Deferred()
        running.addBoth(lambda _: waiter.callback(None))
        return waiter.addCallback(lambda _: self._archive.cpu(_kept_or_parsed, path))

    def process(self, principal, upload_id, study_uid=None):
        """A Deferred of the Outcomes of every instance in the upload (STOW's response)."""
        manifest, folder = self.uploads.claim(principal.store_id, upload_id)
        # As a STOW body is paced by MAX_IN_FLIGHT: a 20 GiB upload holds no more parsed
        # instances in memory than a small one.
        pace = DeferredSemaphore(MAX_IN_FLIGHT)
        results = []
        for part in manifest["parts"]:
            if "file" not in part:
                results.append(succeed(Outcome.failed(part["failed"], part["message"])))
                continue
            path = os.path.join(folder, part["file"])
            results.append(pace.run(lambda path=path: self._archive.ingest(
                principal.store_id, _Uploaded(path), study_uid, principal.scope,
                self._parse_of(path))))

        def done(result):
            self.uploads.finished(folder)
            return result

        return gatherResults(results).addBoth(done)
