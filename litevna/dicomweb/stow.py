"""STOW-RS (PS3.18 §10.5): bodies parsed and stored while they arrive."""

import re

from twisted.internet.defer import gatherResults, succeed

from litevna.archive import Outcome
from litevna.dicom.ingest import CANNOT_UNDERSTAND, IngestFailure
from litevna.dicom.uids import is_valid_uid
from litevna.http.errors import HTTPError
from litevna.http.headers import MediaTypeError, parse_media_type
from litevna.multipart import PART_DATA, PART_END, PART_HEADERS, MultipartError, MultipartParser

DICOM = "application/dicom"
#: Parts staged but not yet committed before the connection is paused.
MAX_IN_FLIGHT = 16

STOW_PATH = re.compile(r"^/([^/]+)/dicomweb/studies(?:/([^/]+))?/?$")


def stow_target(path):
    """(label, study_uid or None) if path is a STOW URL, else None."""
    match = STOW_PATH.match(path)
    if not match:
        return None
    label, study_uid = match.groups()
    if study_uid in ("upload-url",):
        return None
    if study_uid is not None and not is_valid_uid(study_uid):
        raise HTTPError(400, f"{study_uid[:80]!r} is not a valid Study Instance UID")
    return label, study_uid


def body_kind(content_type):
    """(DICOM, None) or ("multipart/related", boundary) of a STOW body; HTTPError otherwise."""
    try:
        media_type, params = parse_media_type(content_type or "")
    except MediaTypeError as exc:
        raise HTTPError(415, f"unsupported Content-Type: {exc}") from None
    if media_type == DICOM:
        return DICOM, None
    if media_type == "multipart/related":
        part_type = params.get("type", DICOM).lower()
        if part_type != DICOM:
            raise HTTPError(415, f"multipart/related of {part_type!r} is not accepted; "
                                 f"send type=\"{DICOM}\"")
        if "boundary" not in params:
            raise HTTPError(400, "multipart/related without a boundary parameter")
        return media_type, params["boundary"]
    raise HTTPError(415, f"Content-Type must be {DICOM} or multipart/related; "
                         f"type=\"{DICOM}\", not {media_type!r}")


def new_parser(boundary):
    try:
        return MultipartParser(boundary)
    except MultipartError as exc:
        raise HTTPError(400, f"malformed multipart body: {exc}") from None


def part_refusal(headers):
    """Why a multipart part cannot be an instance (its Content-Type), or None."""
    part_type = headers.get("content-type")
    if part_type is None:
        return None
    try:
        media_type = parse_media_type(part_type)[0]
    except MediaTypeError:
        media_type = part_type
    if media_type != DICOM:
        return f"a part of type {part_type[:60]!r} is not {DICOM}"
    return None


class PartSplitter:
    """Splits a STOW body into its instances: the whole body for application/dicom (no
    parser), else each multipart part. Subclasses say where a part goes (``_current``, a
    writable, None to drop) and what its start and end do."""

    _parser = None
    _current = None

    def _start_part(self, headers):
        raise NotImplementedError

    def _end_part(self):
        raise NotImplementedError

    def split(self, data):
        if self._parser is None:
            self._current.write(data)
            return
        try:
            events = self._parser.feed(data)
        except MultipartError as exc:
            raise HTTPError(400, f"malformed multipart body: {exc}") from None
        for kind, value in events:
            if kind == PART_DATA:
                if self._current is not None:
                    self._current.write(value)
            elif kind == PART_HEADERS:
                self._start_part(value)
            elif kind == PART_END:
                self._end_part()


class StowBody(PartSplitter):
    """The sink of one STOW request: stages each part and hands it to the archive."""

    def __init__(self, archive, principal, content_type, study_uid, max_body, transport=None):
        self._archive = archive
        self._principal = principal
        self._study_uid = study_uid
        self._max_body = max_body
        self._transport = transport
        self._received = 0
        self._results = []
        self._in_flight = 0
        self._paused = False
        self._current = None
        self._parser = None
        self._skip_part = None
        kind, boundary = body_kind(content_type)
        if kind == DICOM:
            self._current = archive.new_staging()
        else:
            self._parser = new_parser(boundary)

    def write(self, data):
        self._received += len(data)
        if self._received > self._max_body:
            raise HTTPError(413, f"the request body exceeds {self._max_body} bytes; use "
                                 "POST .../studies/upload-url for large files")
        self.split(data)

    def _start_part(self, headers):
        self._skip_part = part_refusal(headers)
        if self._skip_part is None:
            self._current = self._archive.new_staging()

    def _end_part(self):
        if self._skip_part is not None:
            self._results.append(succeed(Outcome.failed(CANNOT_UNDERSTAND, self._skip_part)))
            self._skip_part = None
            return
        staging, self._current = self._current, None
        self._submit(staging)

    def _submit(self, staging):
        try:
            staging.close()
        except IngestFailure as failure:
            self._results.append(succeed(Outcome.failed(failure.reason, failure.message)))
            return
        d = self._archive.ingest(self._principal.store_id, staging, self._study_uid,
                                 self._principal.scope)
        self._in_flight += 1
        if self._in_flight >= MAX_IN_FLIGHT and self._transport is not None and not self._paused:
            self._paused = True
            self._transport.pauseProducing()
        d.addBoth(self._landed)
        self._results.append(d)

    def _landed(self, outcome):
        self._in_flight -= 1
        if self._paused and self._in_flight < MAX_IN_FLIGHT // 2:
            self._paused = False
            self._transport.resumeProducing()
        return outcome

    def finish(self):
        """The body is complete: a Deferred of every part's Outcome, in order."""
        if self._parser is not None:
            try:
                self._parser.close()
            except MultipartError as exc:
                self.abort()
                if not self._results:
                    raise HTTPError(400, f"malformed multipart body: {exc}") from None
                # Parts before the break are stored (or failed) on their own merits:
                # report them, and the break as one more failure.
                self._results.append(succeed(Outcome.failed(
                    CANNOT_UNDERSTAND, f"malformed multipart body: {exc}")))
        else:
            if self._received == 0:
                self.abort()
                raise HTTPError(400, "the request has no body: send a DICOM Part 10 file")
            self._submit(self._current)
            self._current = None
        if not self._results:
            raise HTTPError(400, "the request contains no instances")
        return gatherResults(self._results)

    def abort(self):
        """The request is abandoned: drop what is still being staged."""
        if self._current is not None:
            self._current.discard()
            self._current = None


def stow_response(outcomes, base_url):
    """(status, DICOM JSON dict) of a STOW response (PS3.18 §10.5.3)."""
    stored = [o for o in outcomes if o.stored]
    failed = [o for o in outcomes if not o.stored]
    status = 200 if not failed else 202 if stored else 409
    body = {}
    studies = {o.study_uid for o in stored}
    if len(studies) == 1:
        body["00081190"] = _ur(f"{base_url}/studies/{studies.pop()}")
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [_failed_item(o) for o in failed]}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": [_referenced_item(o, base_url) for o in stored]}
    return status, body


def stow_warning(outcomes):
    """A Warning header value when some instances were already stored, identical (or None).

    PS3.18 §10.5.3 answers them as stored; the header lets a bulk uploader count them."""
    duplicates = sum(1 for o in outcomes if o.stored and o.duplicate)
    if not duplicates:
        return None
    return (f'299 litevna "{duplicates} instance{"s" if duplicates > 1 else ""} '
            f'{"were" if duplicates > 1 else "was"} already stored with identical content"')


def _referenced_item(outcome, base_url):
    return {
        "00081150": _ui(outcome.sop_class_uid),
        "00081155": _ui(outcome.sop_instance_uid),
        "00081190": _ur(f"{base_url}/studies/{outcome.study_uid}/series/{outcome.series_uid}"
                        f"/instances/{outcome.sop_instance_uid}"),
    }


def _failed_item(outcome):
    item = {
        "00081150": _ui(outcome.sop_class_uid),
        "00081155": _ui(outcome.sop_instance_uid),
        "00081197": {"vr": "US", "Value": [outcome.reason]},
    }
    if outcome.message:
        item["00000902"] = {"vr": "LO", "Value": [outcome.message[:64]]}
    return item


def _ui(value):
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def _ur(value):
    return {"vr": "UR", "Value": [value]}
