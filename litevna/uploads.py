"""Presigned uploads (SPEC §4 "Large uploads"; the client's document's three steps).

1. ``issue``: an upload id (UUID) and a URL on this server signed with HMAC-SHA256 over
   (id, store label, expiry); valid for an hour, no other authentication.
2. The PUT of the gzip-compressed body: ``GzipUpload`` decompresses it while it arrives
   (bounded in size and ratio, so a gzip bomb is refused after a few MiB) into
   ``<data-dir>/uploads/<id>/body``. The URL works once.
3. ``claim``: ``POST …/studies?uploadId=`` takes the body (an atomic rename, so one
   claimer wins across workers and nodes sharing the data dir) and hands it to the same
   ingest as STOW.

Each upload is a folder; its state is which files exist in it, so every process sharing
the data dir agrees on it without a lock server. ``sweep`` removes what expired unclaimed.
"""

import base64
import hashlib
import hmac
import os
import shutil
import uuid

import orjson
from isal import isal_zlib

from litevna.http.errors import HTTPError

LIFETIME = 3600.0
#: A body that inflates more than this many times its compressed size is a gzip bomb…
MAX_RATIO = 200
#: …once it has inflated this much (small, very compressible files are fine).
RATIO_GRACE = 64 << 20
#: Most bytes one inflate call may produce: what a body costs in memory at a time.
INFLATE_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"


def _secret(folder):
    """The upload-signing secret (32 random bytes, mode 0600), created on first use."""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    path = os.path.join(folder, "upload-hmac.key")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as fp:
            fp.write(os.urandom(32))
    with open(path, "rb") as fp:
        secret = fp.read()
    if len(secret) != 32:  # another process is writing it this instant
        raise HTTPError(503, "the upload key is being created; try again")
    return secret


def _atomic_json(path, value):
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb") as fp:
        fp.write(orjson.dumps(value))
    os.replace(tmp, path)


def _read_json(path):
    with open(path, "rb") as fp:
        return orjson.loads(fp.read())


def valid_upload_id(text):
    """True if text is a UUID in canonical form (never a path)."""
    try:
        return str(uuid.UUID(text)) == text
    except (ValueError, TypeError, AttributeError):
        return False


class Uploads:
    """The pending uploads of a data dir."""

    def __init__(self, folder, key_folder, clock, max_upload):
        self.folder = folder
        self._key_folder = key_folder
        self._secret_value = None
        self._clock = clock
        self.max_upload = max_upload
        os.makedirs(folder, exist_ok=True)

    @property
    def _secret(self):
        if self._secret_value is None:
            self._secret_value = _secret(self._key_folder)
        return self._secret_value

    def _sign(self, upload_id, label, expires_ms):
        message = f"{upload_id}\n{label}\n{expires_ms}".encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def _dir(self, upload_id):
        return os.path.join(self.folder, upload_id)

    # Step 1.

    def issue(self, store_id, label, server_url):
        """{"uploadUrl", "uploadId", "expiresAt"} of a new upload into a store."""
        upload_id = str(uuid.uuid4())
        expires_ms = int((self._clock() + LIFETIME) * 1000)
        os.makedirs(self._dir(upload_id))
        _atomic_json(os.path.join(self._dir(upload_id), "meta.json"),
                     {"store_id": store_id, "label": label, "expires_ms": expires_ms})
        signature = self._sign(upload_id, label, expires_ms)
        return {"uploadUrl": f"{server_url}/uploads/{label}/{upload_id}?expires={expires_ms}"
                             f"&signature={signature}",
                "uploadId": upload_id, "expiresAt": expires_ms}

    # Step 2.

    def open_put(self, label, upload_id, expires, signature, content_type, content_encoding,
                 length, target):
        """Check a PUT's URL and headers; the GzipUpload sink for its body.

        ``target(folder, content_type)`` makes what the inflated bytes are written to
        (write, finish → the manifest of parts, abort)."""
        if not valid_upload_id(upload_id):
            raise HTTPError(404, "no such upload")
        try:
            expires_ms = int(expires)
        except (TypeError, ValueError):
            raise HTTPError(403, "the upload URL is not valid: its expires parameter is "
                                 "missing or not a number") from None
        expected = self._sign(upload_id, label, expires_ms)
        if not signature or not hmac.compare_digest(expected, signature):
            raise HTTPError(403, "the upload URL's signature is not valid")
        if self._clock() * 1000 >= expires_ms:
            raise HTTPError(410, "the upload URL has expired; ask for a new one with "
                                 "POST .../studies/upload-url")
        folder = self._dir(upload_id)
        if not os.path.isdir(folder):
            raise HTTPError(410, "the upload has expired and was removed")
        if (content_encoding or "").strip().lower() not in ("gzip", "x-gzip"):
            raise HTTPError(415, "the body must be gzip-compressed and sent with "
                                 "Content-Encoding: gzip")
        if length is not None and length > self.max_upload:
            raise HTTPError(413, f"the upload exceeds {self.max_upload} bytes")
        try:
            fd = os.open(os.path.join(folder, "put.lock"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            raise HTTPError(409, "this upload URL has already been used; ask for a new one")
        os.close(fd)
        content_type = (content_type or "application/dicom").strip()
        return GzipUpload(folder, content_type, target(folder, content_type), self.max_upload)

    # Step 3.

    def claim(self, store_id, upload_id):
        """(the upload's manifest, its folder) for processing; one claimer wins."""
        if not valid_upload_id(upload_id):
            raise HTTPError(400, "uploadId is the UUID returned by .../studies/upload-url")
        folder = self._dir(upload_id)
        try:
            meta = _read_json(os.path.join(folder, "meta.json"))
        except FileNotFoundError:
            raise HTTPError(404, f"no upload {upload_id} (unknown, or expired and removed)") \
                from None
        if meta["store_id"] != store_id:
            raise HTTPError(404, f"no upload {upload_id} in this image store")
        if self._clock() * 1000 >= meta["expires_ms"]:
            raise HTTPError(410, f"upload {upload_id} expired before it was processed")
        body, claimed = os.path.join(folder, "body.json"), os.path.join(folder, "claimed.json")
        try:
            os.rename(body, claimed)
        except FileNotFoundError:
            if os.path.exists(claimed) or os.path.exists(os.path.join(folder, "done")):
                raise HTTPError(409, f"upload {upload_id} has already been processed") from None
            if os.path.exists(os.path.join(folder, "put.lock")):
                raise HTTPError(409, f"upload {upload_id} is still being uploaded, or its "
                                     "upload failed") from None
            raise HTTPError(409, f"nothing has been uploaded for {upload_id} yet: PUT the "
                                 "gzip-compressed file to its uploadUrl first") from None
        return _read_json(claimed), folder

    def finished(self, folder):
        """Processing is over: leave a tombstone (a second claim says "already processed")."""
        for name in os.listdir(folder):
            if name not in ("meta.json", "put.lock"):
                os.unlink(os.path.join(folder, name))
        open(os.path.join(folder, "done"), "wb").close()

    # Expiry.

    def sweep(self):
        """Remove uploads whose URL has expired and that are not being processed; a count."""
        now_ms = self._clock() * 1000
        removed = 0
        for name in os.listdir(self.folder):
            folder = self._dir(name)
            try:
                meta = _read_json(os.path.join(folder, "meta.json"))
            except (FileNotFoundError, NotADirectoryError, orjson.JSONDecodeError):
                continue
            if now_ms < meta["expires_ms"]:
                continue
            claimed = os.path.join(folder, "claimed.json")
            # A claim being processed may run past the expiry; one that old is a leftover.
            if os.path.exists(claimed) and now_ms < meta["expires_ms"] + LIFETIME * 1000:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
        return removed


class GzipUpload:
    """The sink of one PUT: inflate while the bytes arrive, into the upload's target."""

    def __init__(self, folder, content_type, target, max_size):
        self._folder = folder
        self._content_type = content_type
        self._target = target
        self._max_size = max_size
        self._inflate = isal_zlib.decompressobj(31)
        self._pending = b""
        self.received = 0
        self.size = 0

    def write(self, data):
        if not self.received and data:
            if data[:len(_GZIP_MAGIC)] != _GZIP_MAGIC[:len(data)]:
                raise HTTPError(400, "the body is not gzip data: compress the file with "
                                     "gzip first (gzip -c file.dcm > file.dcm.gz)")
        self.received += len(data)
        if self.received > self._max_size:
            raise HTTPError(413, f"the upload exceeds {self._max_size} bytes")
        self._feed(data)

    def _feed(self, data):
        data = self._pending + data
        self._pending = b""
        while data:
            if self._inflate.eof:
                # Another gzip member may follow (concatenated .gz files); zeros are
                # tape-style padding some tools add.
                if len(data) < len(_GZIP_MAGIC) and not data.strip(b"\0"):
                    self._pending = data
                    return
                if data[:2] != _GZIP_MAGIC:
                    if not data.strip(b"\0"):
                        return
                    raise HTTPError(400, "corrupt gzip data: bytes after the end of the stream")
                self._inflate = isal_zlib.decompressobj(31)
            try:
                out = self._inflate.decompress(data, INFLATE_CHUNK)
            except isal_zlib.error as exc:
                raise HTTPError(400, f"corrupt gzip data: {exc}") from None
            self.size += len(out)
            if self.size > self._max_size:
                raise HTTPError(413, f"the upload inflates beyond {self._max_size} bytes")
            if self.size > RATIO_GRACE and self.size > MAX_RATIO * self.received:
                raise HTTPError(413, f"the upload inflates more than {MAX_RATIO} times its "
                                     "compressed size: refused as a gzip bomb")
            if out:
                self._target.write(out)
            data = self._inflate.unused_data if self._inflate.eof else \
                self._inflate.unconsumed_tail

    def finish(self):
        """The body is complete: {"uploadId", "received", "size", "instances"} once stored."""
        if self.received == 0:
            self.abort()
            raise HTTPError(400, "the request has no body: PUT the gzip-compressed file")
        if not self._inflate.eof:
            self.abort()
            raise HTTPError(400, "corrupt gzip data: the stream is truncated")
        if self.size == 0:
            self.abort()
            raise HTTPError(400, "the upload inflates to nothing")
        try:
            parts = self._target.finish()
        except HTTPError:
            self.abort()
            raise
        # Written last: a claim that finds body.json finds every part.
        _atomic_json(os.path.join(self._folder, "body.json"),
                     {"content_type": self._content_type, "received": self.received,
                      "size": self.size, "parts": parts})
        return {"uploadId": os.path.basename(self._folder), "received": self.received,
                "size": self.size, "instances": sum(1 for p in parts if "file" in p)}

    def abort(self):
        self._target.abort()
