"""WADO-RS (PS3.18 §10.4): retrieve, metadata, frames and bulk data; and DELETE.

Everything is served from what ingest recorded: metadata from the stored
DICOM JSON, frames by range reads at the stored offsets. Files are parsed at
request time only when a client asks for another transfer syntax.
"""

import hashlib
import itertools
import os
import re
import struct
from collections import OrderedDict

from twisted.internet.defer import Deferred, succeed

from litevna.cache import or_build, shared
from litevna.cache.memory import MemoryCache
from litevna.dicom import jsonmodel
from litevna.dicom.transcode import (CannotTranscode, can_convert, decoded_frame,
                                     to_explicit_little_endian)
from litevna.dicom.uids import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, ENCAPSULATED, EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, RLE_LOSSLESS, is_valid_uid,
)
from litevna.http.compression import gzip_bytes
from litevna.http.errors import HTTPError
from litevna.http.headers import MediaTypeError, parse_accept
from litevna.http.producers import FileRange, read_range
from litevna.multipart.writer import closing, new_boundary, part_head

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
OCTET = "application/octet-stream"
MAX_FRAMES_PER_REQUEST = 10000
ROW_CACHE_SIZE = 20000

#: PS3.18 Table 8.7.3-5: the media type of each compressed pixel data transfer syntax.
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg", "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx", "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc", "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc", RLE_LOSSLESS: "image/dicom-rle",
}
_NATIVE_LE = frozenset({IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN})
_FRAME_LIST = re.compile(r"^[0-9]+(,[0-9]+)*$")


class Body:
    """A response: status, headers, pieces for PiecesProducer (or bytes), and its
    length when known up front (then sent as Content-Length, not chunked)."""

    def __init__(self, status=200, headers=None, pieces=(), length=None):
        self.status, self.headers, self.pieces = status, headers or {}, pieces
        self.length = length


def check_uids(*uids):
    for uid in uids:
        if uid is not None and not is_valid_uid(uid):
            raise HTTPError(400, f"{uid[:80]!r} is not a valid UID")


def accept_ranges(request):
    header = request.getHeader(b"accept")
    override = request.args.get(b"accept")
    if override:
        header = override[0]
    try:
        return parse_accept(header)
    except MediaTypeError as exc:
        raise HTTPError(400, f"malformed Accept header: {exc}") from None


def not_acceptable(what):
    return HTTPError(406, f"cannot answer with {what}")


def retrieve_choice(ranges, level):
    """(kind, transfer syntax) for a retrieve: kind is multipart, part10 or zip;
    the syntax ``*`` means as stored (PS3.18 §8.7.3)."""
    for r in ranges:
        if r.type == "multipart/related":
            if r.params.get("type", DICOM).lower() != DICOM:
                continue
            return "multipart", r.params.get("transfer-syntax", EXPLICIT_VR_LITTLE_ENDIAN)
        if r.type == DICOM and level == "instance":
            return "part10", r.params.get("transfer-syntax", "*")
        if r.type == "application/zip":
            return "zip", r.params.get("transfer-syntax", "*")
        if r.type in ("*/*", "multipart/*"):
            return "multipart", "*"
    raise not_acceptable("any of the accepted media types: this resource is "
                         'multipart/related; type="application/dicom", application/zip'
                         + (" or application/dicom" if level == "instance" else ""))


def frames_choice(ranges, stored):
    """(part media type, transfer syntax of the parts, conversion) for frames.

    conversion is None (bytes as stored), "swap" (big-endian to little) or
    "decode" (decompress with pydicom's plug-ins)."""
    for r in ranges:
        if r.type == "multipart/related":
            part_type = r.params.get("type", OCTET).lower()
            asked = r.params.get("transfer-syntax")
        elif r.type in ("*/*", "multipart/*"):
            part_type, asked = OCTET, "*"
        else:
            continue
        if part_type == "*/*":  # any part type (dicomweb-client's default): as stored
            part_type, asked = OCTET, asked or "*"
        elif part_type.endswith("/*") and \
                FRAME_MEDIA_TYPES.get(stored, OCTET).startswith(part_type[:-1]):
            part_type = FRAME_MEDIA_TYPES.get(stored, OCTET)
        if part_type == OCTET:
            if asked == "*" or asked == stored:
                if stored in ENCAPSULATED:
                    return FRAME_MEDIA_TYPES.get(stored, OCTET), stored, None
                if stored == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
                    return OCTET, EXPLICIT_VR_LITTLE_ENDIAN, "decode"
                return OCTET, stored, None
            if asked in (None, EXPLICIT_VR_LITTLE_ENDIAN):
                if stored in _NATIVE_LE:
                    return OCTET, EXPLICIT_VR_LITTLE_ENDIAN, None
                if stored == EXPLICIT_VR_BIG_ENDIAN:
                    return OCTET, EXPLICIT_VR_LITTLE_ENDIAN, "swap"
                return OCTET, EXPLICIT_VR_LITTLE_ENDIAN, "decode"
            continue
        media_type = FRAME_MEDIA_TYPES.get(stored)
        if part_type == media_type and asked in (None, "*", stored):
            return media_type, stored, None
    raise not_acceptable(f"the accepted media types: the frames are stored as {stored}, "
                         "available as application/octet-stream (as stored with "
                         "transfer-syntax=*, or Explicit VR Little Endian)"
                         + (f" or {FRAME_MEDIA_TYPES[stored]}" if stored in FRAME_MEDIA_TYPES
                            else ""))


def parse_frame_list(text):
    """1-based frame numbers from '1,2,3' (PS3.18 §10.4.1.1.6)."""
    if not _FRAME_LIST.match(text or "") or len(text) > 100000:
        raise HTTPError(400, f"{text[:60]!r} is not a comma-separated list of frame numbers")
    numbers = [int(n) for n in text.split(",")]
    if len(numbers) > MAX_FRAMES_PER_REQUEST:
        raise HTTPError(400, f"at most {MAX_FRAMES_PER_REQUEST} frames per request")
    if min(numbers) < 1:
        raise HTTPError(400, "frame numbers start at 1")
    return numbers


class Wado:
    """Read and delete services over the index and the blob store."""

    def __init__(self, index, blobs, cpu, metadata_cache=None):
        self._index = index
        self._blobs = blobs
        self._cpu = cpu  # cpu(fn, *args) -> Deferred, run in the CPU thread pool
        self.metadata_cache = metadata_cache if metadata_cache is not None else MemoryCache()
        self._rows = OrderedDict()

    def _instances(self, store_id, study, series=None, sop=None, columns=None):
        check_uids(study, series, sop)
        if sop is not None and columns is None:
            return [self.instance_row(store_id, study, series, sop)]
        kwargs = {"columns": columns} if columns else {}
        rows = self._index.instances_of(store_id, study, series, sop, **kwargs)
        if not rows:
            raise HTTPError(404, "no such " + ("instance" if sop else "series" if series
                                                else "study"))
        return rows

    def instance_row(self, store_id, study, series, sop):
        """One instance's row, 404 unless it is in that study and series.

        Rows are cached: a cached row is trusted only while its blob file exists, and
        every version of an instance has its own blob file, so a row made stale by a
        DELETE or a replacement (in this process or another) is noticed and re-read."""
        key = (store_id, sop)
        row = self._rows.get(key)
        if row is None or not os.path.exists(self._blobs.local_path(row["blob_key"])):
            row = self._index.instance(store_id, sop)
            if row is None:
                self._rows.pop(key, None)
                raise HTTPError(404, "no such instance")
            self._rows[key] = row
            if len(self._rows) > ROW_CACHE_SIZE:
                self._rows.popitem(last=False)
        if row["study_uid"] != study or row["series_uid"] != series:
            raise HTTPError(404, "no such instance")
        return row

    # Retrieve.

    def retrieve(self, store_id, ranges, study, series=None, sop=None):
        level = "instance" if sop else "series" if series else "study"
        kind, transfer_syntax = retrieve_choice(ranges, level)
        rows = self._instances(store_id, study, series, sop)
        for row in rows:
            if transfer_syntax not in ("*", row["transfer_syntax"], EXPLICIT_VR_LITTLE_ENDIAN):
                raise not_acceptable(f"transfer syntax {transfer_syntax}: instance "
                                     f"{row['sop_instance_uid']} is stored as "
                                     f"{row['transfer_syntax']}")
            if transfer_syntax == EXPLICIT_VR_LITTLE_ENDIAN and \
                    not can_convert(row["transfer_syntax"], row["number_of_frames"]):
                raise not_acceptable(f"Explicit VR Little Endian: instance "
                                     f"{row['sop_instance_uid']} is stored as "
                                     f"{row['transfer_syntax']}, which this server cannot "
                                     f"decode; ask for transfer-syntax=*")
        if kind == "part10":
            row = rows[0]
            if transfer_syntax in ("*", row["transfer_syntax"]):
                return Body(headers={"Content-Type": DICOM},
                            pieces=[self._instance_piece(row, transfer_syntax)],
                            length=row["size"])
            # Converted before the answer starts, so a codec failure is still a 406.
            d = self._cpu(to_explicit_little_endian, self._blobs.local_path(row["blob_key"]))
            return d.addCallbacks(lambda data: Body(headers={"Content-Type": DICOM},
                                                    pieces=[data]), _as_406)
        if kind == "zip":
            from litevna.http.zipstream import zip_pieces

            entries = [(f"{row['series_uid']}/{row['sop_instance_uid']}.dcm",
                        self._blobs.local_path(row["blob_key"])) for row in rows]
            return Body(headers={"Content-Type": "application/zip"},
                        pieces=zip_pieces(entries))
        boundary = new_boundary()
        headers = {"Content-Type": f'multipart/related; type="{DICOM}"; boundary={boundary}'}
        pieces = self._multipart_instances(rows, transfer_syntax, boundary)
        if all(transfer_syntax in ("*", row["transfer_syntax"]) for row in rows):
            pieces = list(pieces)  # only headers and file ranges: its length is known
            return Body(headers=headers, pieces=pieces, length=_length(pieces))
        return _first_converted(headers, pieces)

    def _instance_piece(self, row, transfer_syntax):
        path = self._blobs.local_path(row["blob_key"])
        if transfer_syntax in ("*", row["transfer_syntax"]):
            return FileRange(path, 0, row["size"])
        return self._cpu(to_explicit_little_endian, path)

    def _multipart_instances(self, rows, transfer_syntax, boundary):
        for i, row in enumerate(rows):
            stored = row["transfer_syntax"]
            out = stored if transfer_syntax in ("*", stored) else EXPLICIT_VR_LITTLE_ENDIAN
            yield part_head(boundary, f"{DICOM}; transfer-syntax={out}", first=i == 0)
            yield self._instance_piece(row, transfer_syntax)
        yield closing(boundary)

    # Metadata.

    def metadata_etag(self, store_id, base_url, gzip, study, series=None, sop=None):
        rows = self._instances(store_id, study, series, sop, columns="i.sha256")
        digest = hashlib.sha1(base_url.encode())
        for row in rows:
            digest.update(row["sha256"].encode())
        return f'"{digest.hexdigest()[:32]}{"-gz" if gzip else ""}"'

    def metadata(self, store_id, base_url, gzip, etag, study, series=None, sop=None):
        """Deferred bytes of the metadata document (cached by ETag)."""
        key = (store_id, etag)
        cached = self.metadata_cache.get(key)
        if cached is not None:
            return succeed(cached)

        def build():
            rows = self._index.instances_of(store_id, study, series, sop, columns="i.metadata")
            document = b"[" + b",".join(row["metadata"] for row in rows) + b"]"
            document = jsonmodel.absolute(document, base_url)
            return gzip_bytes(document) if gzip else document

        def keep(document):
            self.metadata_cache.put(key, document)
            return document

        def built():
            return self._cpu(build).addCallback(keep)

        remote = shared(self.metadata_cache, key)
        return built() if remote is None else or_build(remote, built)

    # Frames.

    def frames(self, store_id, ranges, study, series, sop, frame_list):
        check_uids(study, series, sop)
        numbers = parse_frame_list(frame_list)
        row = self.instance_row(store_id, study, series, sop)
        if not row["number_of_frames"]:
            raise HTTPError(404, "this instance has no pixel data")
        too_far = [n for n in numbers if n > row["number_of_frames"]]
        if too_far:
            raise HTTPError(404, f"frame {too_far[0]} is out of range: the instance has "
                                 f"{row['number_of_frames']} frame(s)")
        media_type, transfer_syntax, conversion = frames_choice(ranges, row["transfer_syntax"])
        path = self._blobs.local_path(row["blob_key"])
        boundary = new_boundary()
        part_type = f"{media_type}; transfer-syntax={transfer_syntax}"
        pieces = self._frame_pieces(row, path, numbers, conversion, part_type, boundary)
        headers = {"Content-Type": f'multipart/related; type="{media_type}"; '
                                   f"boundary={boundary}"}
        if conversion is None and row["frames"] is not None:
            pieces = list(pieces)  # range reads only: its length is known
            return Body(headers=headers, pieces=pieces, length=_length(pieces))
        return _first_converted(headers, pieces)

    def _frame_pieces(self, row, path, numbers, conversion, part_type, boundary):
        table = row["frames"]
        for i, number in enumerate(numbers):
            yield part_head(boundary, part_type, first=i == 0)
            if conversion == "decode" or table is None:
                yield self._cpu(decoded_frame, path, number - 1)
            elif conversion == "swap":
                yield self._cpu(_swapped, path, table[number - 1], row["bits_allocated"],
                                table[0][0][0])
            else:
                for offset, length in table[number - 1]:
                    yield FileRange(path, offset, length)
        yield closing(boundary)

    # Bulk data.

    def bulkdata(self, store_id, ranges, range_header, study, series, sop, tag_path):
        """Any BulkDataURI that metadata emits (PS3.18 §10.4.1.1.5); Range on single parts."""
        check_uids(study, series, sop)
        if not _TAG_PATH.match(tag_path):
            raise HTTPError(404, "no such bulk data")
        row = self.instance_row(store_id, study, series, sop)
        path = self._blobs.local_path(row["blob_key"])
        single = _single_part(ranges)
        table = row["frames"]
        if tag_path.upper() in _PIXEL_TAGS and table is not None:
            stored = row["transfer_syntax"]
            if stored not in ENCAPSULATED:
                # The whole value, as its header declares: padding after the last frame
                # (an odd length's pad byte, say) belongs to it.
                start = table[0][0][0]
                order = ">" if stored == EXPLICIT_VR_BIG_ENDIAN else "<"
                (length,) = struct.unpack(order + "I", read_range(path, start - 4, 4))
                return _octets(path, start, length, single, range_header, stored)
            media_type = FRAME_MEDIA_TYPES.get(stored, OCTET)
            return self.frames(store_id, [_AnyRange(media_type)], study, series, sop,
                               ",".join(str(n) for n in range(1, len(table) + 1)))
        d = self._cpu(element_value, path, tag_path)
        return d.addCallback(lambda data: _octets_bytes(data, single, range_header,
                                                        row["transfer_syntax"]))

    # Delete.

    def delete(self, store_id, study, series=None, sop=None):
        """Deferred firing with the number of instances removed once the level and
        everything under it is gone."""
        check_uids(study, series, sop)

        def remove():
            with self._index.write() as writer:
                keys = writer.delete(store_id, study, series, sop)
            self._rows.clear()
            for key in keys:
                self._blobs.delete(key)
            return len(keys)

        def done(count):
            if not count:
                raise HTTPError(404, "no such " + ("instance" if sop else "series" if series
                                                    else "study"))
            return count

        return self._cpu(remove).addCallback(done)


def _length(pieces):
    """The total length of pieces if every one is known now, else None.

    Only a list is measured: a generator would be used up by counting it."""
    if not isinstance(pieces, list):
        return None
    total = 0
    for piece in pieces:
        if isinstance(piece, bytes):
            total += len(piece)
        elif isinstance(piece, FileRange) and piece.length is not None:
            total += piece.length
        else:
            return None
    return total


def _swapped(path, fragments, bits_allocated, value_start):
    """A big-endian native frame as little-endian bytes.

    Samples of 8 bits or fewer in an OW value travel in 16-bit words, so their bytes
    are swapped in pairs, counted from the start of the value (a frame may start or
    end inside a word)."""
    import numpy

    if bits_allocated in (16, 32, 64):
        data = b"".join(read_range(path, offset, length) for offset, length in fragments)
        dtype = numpy.dtype(f">u{bits_allocated // 8}")
        return numpy.frombuffer(data, dtype).astype(dtype.newbyteorder("<")).tobytes()
    if read_range(path, value_start - 8, 2) != b"OW":
        return b"".join(read_range(path, offset, length) for offset, length in fragments)
    out = []
    for offset, length in fragments:
        lead = (offset - value_start) % 2
        span = lead + length + (lead + length) % 2
        words = read_range(path, offset - lead, span)
        words += b"\0" * (span - len(words))
        swapped = numpy.frombuffer(words, ">u2").astype("<u2").tobytes()
        out.append(swapped[lead:lead + length])
    return b"".join(out)


_TAG_PATH = re.compile(r"^[0-9A-Fa-f]{8}(/[0-9]{1,6}/[0-9A-Fa-f]{8}){0,16}$")
_PIXEL_TAGS = {"7FE00010", "7FE00008", "7FE00009"}


class _AnyRange:
    """A stand-in Accept range asking for frames as stored."""

    def __init__(self, media_type):
        self.type = "multipart/related"
        self.params = {"type": media_type, "transfer-syntax": "*"}


def _single_part(ranges):
    """True if the client prefers one bare octet stream to a multipart body."""
    for r in ranges:
        if r.type == OCTET:
            return True
        if r.type in ("multipart/related", "*/*", "multipart/*"):
            return False
    raise not_acceptable("the accepted media types: bulk data is application/octet-stream")


def element_value(path, tag_path):
    """The raw value of the element at tag_path ('TTTTTTTT[/item/TTTTTTTT...]')."""
    import pydicom

    parts = tag_path.upper().split("/")
    dataset = pydicom.dcmread(path, stop_before_pixels=int(parts[0], 16) < 0x7FE00008)
    try:
        for i in range(0, len(parts) - 1, 2):
            dataset = dataset[int(parts[i], 16)].value[int(parts[i + 1])]
        value = dataset[int(parts[-1], 16)].value
    except (KeyError, IndexError, TypeError):
        raise HTTPError(404, "no such bulk data") from None
    if not isinstance(value, bytes):
        raise HTTPError(404, "that element is not bulk data")
    return value


def _byte_range(header, size):
    """(start, length) of a single 'bytes=a-b' Range (RFC 9110 §14.1.2), None for all."""
    if header is None:
        return None
    match = re.match(rb"^bytes=(\d*)-(\d*)$", header.strip())
    if not match or match.groups() == (b"", b""):
        return None  # unsupported forms (several ranges) get the whole body
    first, last = match.groups()
    if first == b"":
        length = min(int(last), size)
        if length == 0:
            raise HTTPError(416, "an empty suffix range selects nothing",
                            {"Content-Range": f"bytes */{size}"})
        return size - length, length
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise HTTPError(416, f"the range is outside the {size} bytes",
                        {"Content-Range": f"bytes */{size}"})
    return start, end - start + 1


def _octets(path, offset, size, single, range_header, transfer_syntax):
    if not single:
        return _multipart_one(FileRange(path, offset, size), transfer_syntax)
    wanted = _byte_range(range_header, size)
    if wanted is None:
        return Body(headers={"Content-Type": OCTET, "Accept-Ranges": "bytes"},
                    pieces=[FileRange(path, offset, size)], length=size)
    start, length = wanted
    return Body(206, {"Content-Type": OCTET, "Accept-Ranges": "bytes",
                      "Content-Range": f"bytes {start}-{start + length - 1}/{size}"},
                [FileRange(path, offset + start, length)], length=length)


def _octets_bytes(data, single, range_header, transfer_syntax):
    if not single:
        return _multipart_one(data, transfer_syntax)
    wanted = _byte_range(range_header, len(data))
    if wanted is None:
        return Body(headers={"Content-Type": OCTET, "Accept-Ranges": "bytes"}, pieces=data)
    start, length = wanted
    return Body(206, {"Content-Type": OCTET, "Accept-Ranges": "bytes",
                      "Content-Range": f"bytes {start}-{start + length - 1}/{len(data)}"},
                data[start:start + length])


def _multipart_one(piece, transfer_syntax):
    boundary = new_boundary()
    return Body(headers={"Content-Type": f'multipart/related; type="{OCTET}"; '
                                         f"boundary={boundary}"},
                pieces=[part_head(boundary, f"{OCTET}; transfer-syntax={transfer_syntax}",
                                  first=True), piece, closing(boundary)])


def _first_converted(headers, pieces):
    """A Body (or a Deferred one) whose first converted part is done before the status
    line goes out, so that data that cannot be decoded is a 406 (always so for a single
    instance or frame); a later failure can only cut the connection. pieces is
    (part head, part) pairs then the closing delimiter; memory holds one part at a time."""
    first = [next(pieces), next(pieces)]
    if not isinstance(first[1], Deferred):
        return Body(headers=headers, pieces=itertools.chain(first, pieces))

    def started(data):
        return Body(headers=headers, pieces=itertools.chain([first[0], data], pieces))

    return first[1].addCallbacks(started, _as_406)


def _as_406(failure):
    failure.trap(CannotTranscode)
    raise HTTPError(406, str(failure.value))
