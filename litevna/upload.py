"""``litevna upload``: send DICOM Part 10 files to a LiteVNA store (issue #7, the client side).

The files and folders given are walked in sorted order and sent as multipart/related STOW-RS
batches (PS3.18 §10.5) over a few parallel keep-alive connections. A file too large for one
request goes through the presigned flow of the client's document ("Large File Uploads"):
upload-url, a gzip-compressed PUT, then ``POST /studies?uploadId=``. Transient failures are
retried (re-sending an identical instance is a success on the server, so that is safe).

A client, not a server: threads and ``http.client``, no Twisted. File bodies stream from disk;
memory does not grow with the batch or the file size.
"""

import dataclasses
import http.client
import json
import math
import os
import re
import select
import ssl
import stat
import sys
import threading
import time
import uuid
import queue
from urllib.parse import quote, urlsplit, urlunsplit

from litevna import __version__

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
NOT_PART10 = "not a DICOM Part 10 file"
#: Bytes read from a file (and sent) at a time.
CHUNK = 1 << 20
#: isal level for the presigned PUT: 1 compresses better than 0 and is as fast or faster
#: (0 even grows noisy pixel data by 15 %); 2 and 3 gain < 1 % for up to half the speed.
GZIP_LEVEL = 1
#: Answers worth trying again (PS3.18 does not say; these are HTTP's transient ones).
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
AUTH_STATUSES = frozenset({401, 403})
STOW_STATUSES = frozenset({200, 202, 409})
#: Seconds before the first retry; doubled for each one after.
BACKOFF = 0.5

# PS3.18 Table 10.5.3-1 (STOW-RS response) and PS3.7 (ErrorComment).
REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
ERROR_COMMENT = "00000902"

_ALREADY_STORED = re.compile(r"(\d+) instances? (?:was|were) already stored")


class UsageError(Exception):
    """The command line asks for something impossible (exit code 2)."""


class AuthError(Exception):
    """The server refused the credentials (exit code 3): no point going on."""


class Transient(Exception):
    """A failure worth another attempt; ``reached``: the request may have reached the server."""

    def __init__(self, message, reached):
        super().__init__(message)
        self.reached = reached


class RequestFailed(Exception):
    """A request that failed for good: every file it carried failed with this message."""


class TooLarge(Exception):
    """The server refused a direct STOW body as too large (413)."""


class FileProblem(Exception):
    """A file could not be read as planned (it changed, or an I/O error)."""

    def __init__(self, candidate, reason):
        super().__init__(reason)
        self.candidate = candidate
        self.reason = reason


# --- Walking and batching ----------------------------------------------------------------------

@dataclasses.dataclass
class Candidate:
    """A file to send; size and SOP Instance UID are refreshed just before it is sent."""

    path: str
    size: int
    sop_instance_uid: str | None = None


@dataclasses.dataclass
class Batch:
    """Files sent in one STOW request, or one file sent through the presigned flow."""

    files: list
    presigned: bool = False


def walk(paths):
    """(candidates, problems) below paths: every regular file, as [Candidate], and every entry
    that could not be looked at, as [(path, reason)].

    Directories are read in sorted order; hidden entries (a name starting with ".") are
    skipped (a path given is taken as it is), symbolic links are followed but no directory is
    entered twice (no loops). A path given that does not exist is a UsageError.
    """
    candidates, problems, entered = [], [], set()
    for path in paths:
        try:
            info = os.stat(path)
        except OSError as exc:
            raise UsageError(f"{path}: {exc.strerror or exc}") from None
        _visit(path, info, candidates, problems, entered)
    return candidates, problems


def _visit(path, info, candidates, problems, entered):
    if stat.S_ISREG(info.st_mode):
        candidates.append(Candidate(path, info.st_size))
    elif stat.S_ISDIR(info.st_mode) and (info.st_dev, info.st_ino) not in entered:
        entered.add((info.st_dev, info.st_ino))
        try:
            names = sorted(os.listdir(path))
        except OSError as exc:
            problems.append((path, f"cannot list the folder: {exc.strerror or exc}"))
            return
        for name in names:
            if name.startswith("."):
                continue
            child = os.path.join(path, name)
            try:
                child_info = os.stat(child)
            except OSError as exc:
                problems.append((child, f"cannot read the file: {exc.strerror or exc}"))
                continue
            _visit(child, child_info, candidates, problems, entered)


def plan_batches(candidates, batch_files, batch_bytes, presigned_over):
    """Batches in walk order: up to batch_files files and batch_bytes bytes each, whichever
    comes first (a file larger than batch_bytes goes alone); a file over presigned_over
    bytes gets a presigned batch of its own."""
    batch, size = [], 0
    for candidate in candidates:
        if candidate.size > presigned_over:
            yield Batch([candidate], presigned=True)
            continue
        if batch and (len(batch) >= batch_files or size + candidate.size > batch_bytes):
            yield Batch(batch)
            batch, size = [], 0
        batch.append(candidate)
        size += candidate.size
    if batch:
        yield Batch(batch)


def inspect(candidate):
    """None if candidate is a Part 10 file (its size and SOP Instance UID refreshed), else why
    it is not sent. PS3.10 §7.1: "DICM" follows the 128-byte preamble."""
    try:
        with open(candidate.path, "rb") as fp:
            candidate.size = os.fstat(fp.fileno()).st_size
            if fp.read(132)[128:] != b"DICM":
                return NOT_PART10
            fp.seek(0)
            candidate.sop_instance_uid = read_sop_instance_uid(fp)
    except OSError as exc:
        return f"cannot read the file: {exc.strerror or exc}"
    return None


def read_sop_instance_uid(fp):
    """The SOP Instance UID of the Part 10 file open in fp, or None if pydicom cannot tell."""
    from pydicom import dcmread

    try:
        ds = dcmread(fp, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        return str(ds.SOPInstanceUID) if "SOPInstanceUID" in ds else None
    except Exception:  # noqa: BLE001 - pydicom raises many kinds; the server will say why
        return None


# --- Request bodies ----------------------------------------------------------------------------

class Meter:
    """The file bytes one attempt has sent: shown as progress, taken back if it fails."""

    def __init__(self, progress):
        self.progress = progress
        self.sent = 0

    def add(self, count):
        self.sent += count
        self.progress.advance(nbytes=count)

    def rollback(self):
        self.progress.advance(nbytes=-self.sent)
        self.sent = 0


def file_chunks(candidate, meter, size=CHUNK):
    """The bytes of candidate's file in pieces of at most size, exactly candidate.size of
    them; a FileProblem if the file changed or cannot be read."""
    left = candidate.size
    try:
        with open(candidate.path, "rb") as fp:
            while left:
                chunk = fp.read(min(size, left))
                if not chunk:
                    raise FileProblem(candidate, "the file shrank while it was being sent")
                left -= len(chunk)
                meter.add(len(chunk))
                yield chunk
            if fp.read(1):
                raise FileProblem(candidate, "the file grew while it was being sent")
    except OSError as exc:
        raise FileProblem(candidate, f"cannot read the file: {exc.strerror or exc}") from None


def _part_head(boundary):
    return f"--{boundary}\r\nContent-Type: {DICOM}\r\n\r\n".encode("ascii")


def _closing(boundary):
    return f"--{boundary}--\r\n".encode("ascii")


def multipart_length(files, boundary):
    """The Content-Length of multipart_body(files, boundary)."""
    head = len(_part_head(boundary))
    return sum(head + candidate.size + 2 for candidate in files) + len(_closing(boundary))


def multipart_body(files, boundary, meter):
    """A multipart/related body of files (PS3.18 §10.5.1.2), streamed from disk."""
    for candidate in files:
        yield _part_head(boundary)
        yield from file_chunks(candidate, meter)
        yield b"\r\n"
    yield _closing(boundary)


def gzip_chunks(candidate, meter, level=GZIP_LEVEL):
    """candidate's file gzip-compressed (RFC 1952) while it is read, in bounded pieces."""
    from isal import isal_zlib

    compressor = isal_zlib.compressobj(level, isal_zlib.DEFLATED, 16 + isal_zlib.MAX_WBITS)
    for chunk in file_chunks(candidate, meter):
        compressed = compressor.compress(chunk)
        if compressed:
            yield compressed
    yield compressor.flush()


# --- HTTP --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Response:
    """A complete HTTP answer."""

    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        """The body as JSON; RequestFailed if it is not."""
        try:
            return json.loads(self.body)
        except ValueError:
            raise RequestFailed(f"HTTP {self.status}: the answer is not JSON") from None

    def error_text(self):
        """"HTTP 503: message", the message from a JSON ``{"error": …}`` body if there is one."""
        try:
            message = json.loads(self.body)["error"]
        except (ValueError, TypeError, KeyError):
            message = self.body[:200].decode("utf-8", "replace").strip() or self.reason
        return f"HTTP {self.status}: {message}"


def exchange(connection, method, target, headers, chunks=(), length=0):
    """Send one request, streaming chunks (chunked transfer coding when length is None); its
    (Response, whether the whole body was sent).

    Between chunks the socket is looked at: a server that answers before the body is
    complete (401 or 413 on the headers alone) is heard then, and the rest is not sent.
    """
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        if length is None:
            connection.putheader("Transfer-Encoding", "chunked")
        else:
            connection.putheader("Content-Length", str(length))
        connection.endheaders()
        reader = connection.sock.makefile("rb")
        complete = _send_body(connection, reader, chunks, chunked=length is None)
    finally:
        getattr(chunks, "close", lambda: None)()
    if complete:
        reader.close()
        answer = connection.getresponse()
    else:
        answer = http.client.HTTPResponse(_Buffered(reader), method=method)
        answer.begin()
    return Response(answer.status, answer.reason, answer.headers, answer.read()), complete


def _send_body(connection, reader, chunks, chunked):
    for chunk in chunks:
        if _server_spoke(connection.sock, reader):
            return False
        if chunk:
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
    if chunked:
        connection.send(b"0\r\n\r\n")
    return True


def _server_spoke(sock, reader):
    """Whether the server has answered (or hung up) already; what it sent stays in reader."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    timeout = sock.gettimeout()
    sock.settimeout(0)
    try:
        reader.peek(1)
        return True
    except (ssl.SSLWantReadError, BlockingIOError):
        return False  # TLS records of its own (a TLS 1.3 session ticket), no answer
    finally:
        sock.settimeout(timeout)


class _Buffered:
    """The socket as HTTPResponse sees it, when the answer's first bytes are in a reader."""

    def __init__(self, reader):
        self._reader = reader

    def makefile(self, mode):
        return self._reader


def parse_base_url(text):
    """The store's DICOMweb root without a trailing slash; a UsageError if it is not one."""
    parts = urlsplit((text or "").strip())
    try:
        parts.port
    except ValueError:
        raise UsageError(f"bad port in the URL {text!r}") from None
    path = parts.path.rstrip("/")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
            or parts.fragment or not path.endswith("/dicomweb"):
        raise UsageError(f"--url must be a store's DICOMweb root such as "
                         f"http://127.0.0.1:8080/LABEL/dicomweb, not {text!r}")
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


# --- Reading a STOW response -------------------------------------------------------------------

def _items(document, tag):
    return (document.get(tag) or {}).get("Value") or []


def _value(item, tag):
    return ((item.get(tag) or {}).get("Value") or [None])[0]


def failure_reason(item):
    """"0xC000 comment" of a FailedSOPSequence item (PS3.18 Table 10.5.3-2)."""
    code = _value(item, FAILURE_REASON)
    comment = _value(item, ERROR_COMMENT)
    text = f"0x{code:04X}" if isinstance(code, int) else "failed"
    return f"{text} {comment}" if comment else text


_UNMATCHED = object()
MISSING = "the server's answer does not mention this instance"


def match_outcomes(files, document):
    """[(candidate, None if stored else the failure reason)] of a batch's STOW response.

    Items are matched to files by SOP Instance UID; when several files carry one UID the
    first ones are the stored ones. Failures the UIDs do not place (an unparseable file has
    none) go, in order, to the files still unplaced, in order.
    """
    pending = {}
    for index, candidate in enumerate(files):
        if candidate.sop_instance_uid:
            pending.setdefault(candidate.sop_instance_uid, []).append(index)
    results = [_UNMATCHED] * len(files)
    for item in _items(document, REFERENCED_SOP_SEQUENCE):
        mine = pending.get(_value(item, REFERENCED_SOP_INSTANCE_UID))
        if mine:
            results[mine.pop(0)] = None
    unplaced = []
    for item in _items(document, FAILED_SOP_SEQUENCE):
        mine = pending.get(_value(item, REFERENCED_SOP_INSTANCE_UID))
        if mine:
            results[mine.pop(0)] = failure_reason(item)
        else:
            unplaced.append(failure_reason(item))
    unplaced.reverse()
    for index, result in enumerate(results):
        if result is _UNMATCHED:
            results[index] = unplaced.pop() if unplaced else MISSING
    return list(zip(files, results))


def duplicate_count(warnings):
    """How many instances the server's ``Warning`` headers say were already stored."""
    return sum(int(match.group(1)) for text in warnings for match in
               _ALREADY_STORED.finditer(text))


# --- Outcome and progress ----------------------------------------------------------------------

OUTCOMES = ("stored", "duplicate", "skipped", "failed")


class Summary:
    """What happened to the files: counts per outcome and each failure's reason (thread-safe)."""

    def __init__(self):
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.failures = []
        self.aborted = None
        self._lock = threading.Lock()

    def add(self, outcome, count=1):
        with self._lock:
            self.counts[outcome] += count

    def fail(self, path, reason):
        with self._lock:
            self.counts["failed"] += 1
            self.failures.append((path, reason))

    def abort(self, message):
        """Stop the run: the first message is kept."""
        with self._lock:
            self.aborted = self.aborted or message

    def exit_code(self):
        """3 after an authentication failure, 1 if any file failed, else 0."""
        if self.aborted:
            return 3
        return 1 if self.counts["failed"] else 0

    def as_dict(self):
        return {**self.counts,
                "failures": [{"path": path, "reason": reason}
                             for path, reason in sorted(self.failures)],
                "aborted": self.aborted}

    def as_text(self):
        lines = [", ".join(f"{outcome} {self.counts[outcome]}" for outcome in OUTCOMES)]
        lines += [f"failed {path}: {reason}" for path, reason in sorted(self.failures)]
        if self.aborted:
            lines.append(f"aborted: {self.aborted}")
        return "\n".join(lines)


def format_duration(seconds):
    """"m:ss" or "h:mm:ss"; "--:--" when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "--:--"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_progress(files_done, files_total, bytes_done, bytes_total, elapsed):
    """"12/120 files, 3.4/40.0 MB, 2.1 MB/s, ETA 0:17" (MB = 10^6 bytes)."""
    rate = bytes_done / elapsed if elapsed > 0 else 0.0
    eta = (bytes_total - bytes_done) / rate if rate > 0 else None
    return (f"{files_done}/{files_total} files, {bytes_done / 1e6:.1f}/{bytes_total / 1e6:.1f} MB, "
            f"{rate / 1e6:.1f} MB/s, ETA {format_duration(eta)}")


def format_bar(fraction, width=20):
    """"[#######-------------]" for a fraction in [0, 1]."""
    filled = int(round(max(0.0, min(fraction, 1.0)) * width))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


class Progress:
    """Files and bytes done, shown on stream: ``bar`` (a TTY: one line redrawn at most 10
    times a second), ``lines`` (a line every 5 s or 10 %) or ``quiet``. Thread-safe."""

    BAR_INTERVAL = 0.1
    LINE_INTERVAL = 5.0

    def __init__(self, stream, files_total, bytes_total, mode, clock=time.monotonic):
        self.stream = stream
        self.files_total, self.bytes_total = files_total, bytes_total
        self.files_done = self.bytes_done = 0
        self.mode = mode
        self.clock = clock
        self.started = self._shown = clock()
        self._next_mark = 0.1
        self._width = 0
        self._last = None
        self._lock = threading.Lock()

    def fraction(self):
        if self.bytes_total:
            return self.bytes_done / self.bytes_total
        return self.files_done / self.files_total if self.files_total else 1.0

    def advance(self, files=0, nbytes=0):
        with self._lock:
            self.files_done += files
            self.bytes_done += nbytes
            self._show_if_due()

    def tick(self):
        """Redraw if it is time (the rate and ETA move while nothing finishes)."""
        with self._lock:
            self._show_if_due()

    def finish(self):
        """The last state, and the end of the bar's line."""
        with self._lock:
            if self.mode == "quiet":
                return
            if (self.files_done, self.bytes_done) != self._last:
                self._show()
            if self.mode == "bar":
                self.stream.write("\n")
                self.stream.flush()

    def text(self):
        return format_progress(self.files_done, self.files_total, self.bytes_done,
                               self.bytes_total, self.clock() - self.started)

    def _show_if_due(self):
        if self.mode == "quiet":
            return
        waited = self.clock() - self._shown
        if self.mode == "bar":
            due = waited >= self.BAR_INTERVAL
        else:
            due = waited >= self.LINE_INTERVAL or self.fraction() >= self._next_mark
        if due:
            self._show()

    def _show(self):
        self._shown = self.clock()
        self._last = (self.files_done, self.bytes_done)
        if self.mode == "bar":
            line = f"{format_bar(self.fraction())} {self.text()}"
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self.stream.write(f"upload: {self.text()}\n")
            self._next_mark = math.floor(self.fraction() * 10 + 1e-9) / 10 + 0.1
        self.stream.flush()


# --- The uploader ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Settings:
    """How to upload: the options of ``litevna upload`` (defaults are the command's)."""

    base_url: str
    token: str | None
    batch_files: int
    batch_bytes: int
    concurrency: int
    presigned_over: int
    retries: int
    timeout: float
    skip_non_dicom: bool


class Uploader:
    """Sends candidates as planned batches from ``concurrency`` threads, each with its own
    keep-alive connections; outcomes go to summary, bytes and files to progress."""

    def __init__(self, settings, summary, progress, sleep=time.sleep):
        self.settings = settings
        self.summary = summary
        self.progress = progress
        self.sleep = sleep
        self._stow_url = settings.base_url + "/studies"
        self._auth = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
        self._local = threading.local()

    def run(self, candidates):
        """Send every candidate; returns when all are done or the run was aborted."""
        batches = queue.Queue(maxsize=2 * self.settings.concurrency)
        workers = [threading.Thread(target=self._work, args=(batches,), daemon=True,
                                    name=f"litevna-upload-{number}")
                   for number in range(self.settings.concurrency)]
        for worker in workers:
            worker.start()
        s = self.settings
        for batch in plan_batches(candidates, s.batch_files, s.batch_bytes, s.presigned_over):
            if self.summary.aborted:
                break
            self._put(batches, batch)
        for _ in workers:
            self._put(batches, None)
        for worker in workers:
            while worker.is_alive():
                worker.join(Progress.BAR_INTERVAL)
                self.progress.tick()
        self.progress.finish()

    def _put(self, batches, item):
        while True:
            try:
                return batches.put(item, timeout=Progress.BAR_INTERVAL)
            except queue.Full:
                self.progress.tick()

    def _work(self, batches):
        self._local.connections = {}
        while (batch := batches.get()) is not None:
            if self.summary.aborted:
                continue
            try:
                self.send(batch)
            except AuthError as exc:
                self.summary.abort(str(exc))
            except Exception as exc:  # noqa: BLE001 - a bug must cost its batch, not hang the run
                self._fail(batch.files, f"internal error: {exc!r}")
        for connection in self._local.connections.values():
            connection.close()

    def send(self, batch):
        """Send one batch (in this thread) and record what happened to its files."""
        files = [candidate for candidate in batch.files if self._admit(candidate)]
        if not files:
            return
        if batch.presigned:
            self._send_presigned(files[0])
        else:
            self._send_direct(files)

    def _admit(self, candidate):
        reason = inspect(candidate)
        if reason is None:
            return True
        if reason == NOT_PART10 and self.settings.skip_non_dicom:
            self.summary.add("skipped")
        else:
            self.summary.fail(candidate.path, reason)
        self.progress.advance(files=1, nbytes=candidate.size)
        return False

    def _send_direct(self, files):
        boundary = f"litevna-{uuid.uuid4().hex}"
        headers = {"Content-Type": f'multipart/related; type="{DICOM}"; boundary="{boundary}"',
                   "Accept": DICOM_JSON, **self._auth}

        def attempt(meter):
            return self._stow_answer(self._request(
                "POST", self._stow_url, headers, multipart_body(files, boundary, meter),
                multipart_length(files, boundary), stows=True))

        try:
            answer, reached = self._retrying(attempt)
        except TooLarge:
            # SPEC §4: 413 beyond --max-body. Alone, each file fits, or goes presigned.
            if len(files) == 1:
                self._send_presigned(files[0])
            else:
                for candidate in files:
                    self._send_direct([candidate])
            return
        except FileProblem as exc:
            self._fail([exc.candidate], exc.reason)
            rest = [candidate for candidate in files if candidate is not exc.candidate]
            if rest:
                self._send_direct(rest)
            return
        except RequestFailed as exc:
            self._fail(files, str(exc))
            return
        self._record(files, answer, reached)

    def _send_presigned(self, candidate):
        def attempt(meter):
            grant = self._upload_grant()
            put = self._request("PUT", grant["uploadUrl"],
                                {"Content-Type": DICOM, "Content-Encoding": "gzip"},
                                gzip_chunks(candidate, meter), length=None)
            if put.status not in (200, 201, 204):
                raise RequestFailed(f"the presigned upload was refused: {put.error_text()}")
            url = f"{self._stow_url}?uploadId={quote(str(grant['uploadId']), safe='')}"
            return self._stow_answer(self._request(
                "POST", url, {"Accept": DICOM_JSON, **self._auth}, stows=True))

        try:
            answer, reached = self._retrying(attempt)
        except (RequestFailed, TooLarge) as exc:
            self._fail([candidate], str(exc))
            return
        except FileProblem as exc:
            self._fail([candidate], exc.reason)
            return
        self._record([candidate], answer, reached)

    def _upload_grant(self):
        response = self._request("POST", self._stow_url + "/upload-url", dict(self._auth))
        if response.status != 200:
            raise RequestFailed(f"no upload URL: {response.error_text()}")
        grant = response.json()
        if not isinstance(grant, dict) or not grant.get("uploadUrl") or not grant.get("uploadId"):
            raise RequestFailed("no upload URL: the answer lacks uploadUrl or uploadId")
        return grant

    def _stow_answer(self, response):
        """(STOW response document, instances the server says were already stored)."""
        if response.status == 413:
            raise TooLarge(response.error_text())
        if response.status not in STOW_STATUSES:
            raise RequestFailed(response.error_text())
        document = response.json()
        if not isinstance(document, dict):
            raise RequestFailed(f"HTTP {response.status}: the answer is not a STOW response")
        return document, duplicate_count(response.headers.get_all("Warning") or [])

    def _retrying(self, attempt):
        """(attempt(meter)'s result, whether a failed earlier attempt may have stored some
        of it), trying again after transient failures with exponential backoff."""
        reached = False
        for number in range(self.settings.retries + 1):
            meter = Meter(self.progress)
            try:
                return attempt(meter), reached
            except Transient as exc:
                meter.rollback()
                reached = reached or exc.reached
                if number == self.settings.retries:
                    raise RequestFailed(f"{exc} (after {number + 1} attempts)") from None
                self.sleep(BACKOFF * 2 ** number)
            except Exception:
                meter.rollback()
                raise

    def _request(self, method, url, headers, chunks=(), length=0, stows=False):
        """One request on this thread's connection to url's host; the Response, or Transient
        / AuthError. ``stows``: the request stores instances (for Transient.reached)."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        connection = self._connection(key)
        try:
            if connection.sock is None:
                connection.connect()
        except OSError as exc:
            self._drop(key)
            raise Transient(f"cannot connect to {parts.netloc}: {_describe(exc)}", False) from None
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {"User-Agent": f"litevna-upload/{__version__}", **headers}
        try:
            response, complete = exchange(connection, method, target, headers, chunks, length)
        except (OSError, http.client.HTTPException) as exc:
            self._drop(key)
            raise Transient(f"connection to {parts.netloc} failed: {_describe(exc)}",
                            stows) from None
        except Exception:
            self._drop(key)
            raise
        if not complete:
            self._drop(key)
        if response.status in AUTH_STATUSES and method != "PUT":
            raise AuthError(f"the server refused the credentials ({response.error_text()}); "
                            "check --token and that the key may write to this store")
        if response.status in RETRY_STATUSES:
            raise Transient(response.error_text(), stows)
        return response

    def _connection(self, key):
        connections = self._local.connections
        if key not in connections:
            scheme, netloc = key
            kind = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            connections[key] = kind(netloc, timeout=self.settings.timeout)
        return connections[key]

    def _drop(self, key):
        connection = self._local.connections.pop(key, None)
        if connection is not None:
            connection.close()

    def _record(self, files, answer, reached):
        document, already_stored = answer
        results = match_outcomes(files, document)
        stored = sum(1 for _, reason in results if reason is None)
        # An earlier attempt of this run that may have got through stored what the server
        # now calls "already stored": that is this run's doing, not a duplicate.
        duplicates = 0 if reached else min(stored, already_stored)
        self.summary.add("stored", stored - duplicates)
        self.summary.add("duplicate", duplicates)
        for candidate, reason in results:
            if reason is not None:
                self.summary.fail(candidate.path, reason)
        self.progress.advance(files=len(files))

    def _fail(self, files, reason):
        for candidate in files:
            self.summary.fail(candidate.path, reason)
        self.progress.advance(files=len(files), nbytes=sum(c.size for c in files))


def _describe(exc):
    return str(exc) or type(exc).__name__


# --- The command -------------------------------------------------------------------------------

def settings_from(args, environ):
    """Settings from the parsed ``litevna upload`` arguments; a UsageError if they are bad."""
    from litevna.config import ConfigError, parse_size

    base_url = parse_base_url(args.url or environ.get("LITEVNA_URL", ""))
    if args.token and args.token_file:
        raise UsageError("give --token or --token-file, not both")
    token = args.token
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as fp:
                token = fp.read().strip()
        except OSError as exc:
            raise UsageError(f"--token-file {args.token_file}: {exc.strerror or exc}") from None
    token = (token or environ.get("LITEVNA_TOKEN", "")).strip() or None
    try:
        presigned_over = parse_size(args.presigned_over)
    except ConfigError as exc:
        raise UsageError(f"--presigned-over: {exc}") from None
    for name, value, low in (("--batch-files", args.batch_files, 1),
                             ("--concurrency", args.concurrency, 1),
                             ("--retries", args.retries, 0)):
        if value < low:
            raise UsageError(f"{name} must be at least {low}")
    if args.batch_mb <= 0 or args.timeout <= 0:
        raise UsageError("--batch-mb and --timeout must be positive")
    return Settings(base_url, token, args.batch_files, int(args.batch_mb * 1000 ** 2),
                    args.concurrency, presigned_over, args.retries, args.timeout,
                    args.skip_non_dicom)


def command(args, environ=None, stdout=None, stderr=None):
    """Run ``litevna upload`` for parsed args; the exit code (0 all sent, 1 some failed,
    2 usage, 3 credentials refused)."""
    import warnings

    environ = os.environ if environ is None else environ
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr

    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    try:
        settings = settings_from(args, environ)
        candidates, problems = walk(args.paths)
        if not candidates and not problems:
            raise UsageError("no files found in " + " ".join(args.paths))
    except UsageError as exc:
        print(f"litevna upload: {exc}", file=stderr)
        return 2
    summary = Summary()
    for path, reason in problems:
        summary.fail(path, reason)
    mode = "quiet" if args.quiet else "bar" if stderr.isatty() else "lines"
    progress = Progress(stderr, len(candidates), sum(c.size for c in candidates), mode)
    try:
        Uploader(settings, summary, progress).run(candidates)
    except KeyboardInterrupt:
        summary.abort("interrupted")
        print("", file=stderr)
    if summary.aborted:
        print(f"litevna upload: {summary.aborted}", file=stderr)
    print(json.dumps(summary.as_dict()) if args.json else summary.as_text(), file=stdout)
    return 130 if summary.aborted == "interrupted" else summary.exit_code()
