"""From a staged Part 10 file to everything the index keeps about it.

One read of the header with pydicom (never of the pixel data), one hashing
pass, then pure computation: validation (PS3.18 §10.5 STOW failure reasons),
the DICOM JSON model (PS3.18 Annex F) with bulk data as URIs, the query
attributes of each level and the frame table.
"""

import hashlib
import io
from dataclasses import dataclass

import pydicom

from litevna.dicom import frames as frame_table
from litevna.dicom import jsonmodel
from litevna.dicom.levels import SERIES_TAGS, STUDY_TAGS
from litevna.dicom.uids import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, ENCAPSULATED, KNOWN_TRANSFER_SYNTAXES, is_valid_uid,
)

# PS3.4 Annex GG.4-1 / PS3.18 Table 10.5.3-2 failure reasons.
CANNOT_UNDERSTAND = 0xC000
DATA_SET_MISMATCH = 0xA900
SOP_CLASS_NOT_SUPPORTED = 0x0122
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
OUT_OF_RESOURCES = 0xA700
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NOT_AUTHORIZED = 0x0124

_HASH_CHUNK = 1 << 20


class IngestFailure(Exception):
    """An instance the store refuses, with its STOW FailureReason (and, once it was
    parsed, the ParsedInstance, so the failure names the instance)."""

    def __init__(self, reason, message, parsed=None):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.parsed = parsed


@dataclass(frozen=True)
class ParsedInstance:
    """What ingest learned about one instance; all that the index needs."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    size: int
    sha256: str
    number_of_frames: int
    frames: tuple | None
    metadata: dict
    study: dict
    series: dict
    instance: dict


def parse_part10(path, study_uid=None):
    """Parse the Part 10 file at path; raise IngestFailure if it cannot be stored.

    ``study_uid`` is the Study Instance UID named by the STOW URL, if any.
    """
    with open(path, "rb") as fp:
        size, sha256, head = _digest(fp)
        # Parse the header from memory when it fits in the first chunk: a file object
        # costs a syscall per tell() and read(), each a chance to lose the GIL.
        dataset, pixel_position = None, None
        if size > len(head):
            source = fp
        else:
            source = io.BytesIO(head)
        dataset, pixel_position = _read_header(source)
        if source is not fp and pixel_position >= len(head) and size > len(head):
            dataset, pixel_position = _read_header(fp)
        meta = dataset.file_meta
        transfer_syntax = str(meta.get("TransferSyntaxUID", "") or "")
        if not transfer_syntax:
            raise IngestFailure(TRANSFER_SYNTAX_NOT_SUPPORTED,
                                "the File Meta Information has no TransferSyntaxUID")
        if transfer_syntax not in KNOWN_TRANSFER_SYNTAXES:
            raise IngestFailure(TRANSFER_SYNTAX_NOT_SUPPORTED,
                                f"transfer syntax {transfer_syntax} is not supported")
        _check_complete(dataset)
        uids = _identify(dataset, study_uid)
        bulk_prefix = jsonmodel.bulkdata_prefix(*uids[:2], uids[2])
        if transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
            # The body is one deflate stream: no byte offsets, so frames are decoded
            # (from the whole data set) when asked for.
            metadata, number_of_frames = _deflated(fp, dataset, bulk_prefix)
            frames = None
        else:
            pixel = _pixel_element(source, pixel_position, dataset, transfer_syntax)
            if pixel is None:
                _check_no_partial_header(dataset, size)
            metadata = _to_json(dataset, bulk_prefix)
            number_of_frames = _number_of_frames(dataset) if pixel is not None else 0
            frames = _frames(source if pixel is None or not pixel.encapsulated else fp, pixel,
                             dataset, transfer_syntax, size, number_of_frames)
            if pixel is not None:
                metadata[f"{pixel.tag:08X}"] = {
                    "vr": pixel.vr, "BulkDataURI": f"{bulk_prefix}/{pixel.tag:08X}"}
                _check_trailer(fp, pixel, dataset, size)
                metadata.update(_trailer(fp, pixel, dataset, size, bulk_prefix))
    study_uid, series_uid, sop_instance_uid, sop_class_uid = uids
    return ParsedInstance(
        study_uid=study_uid, series_uid=series_uid, sop_instance_uid=sop_instance_uid,
        sop_class_uid=sop_class_uid, transfer_syntax=transfer_syntax, size=size,
        sha256=sha256, number_of_frames=number_of_frames, frames=frames, metadata=metadata,
        study=_level(metadata, STUDY_TAGS), series=_level(metadata, SERIES_TAGS),
        instance=_instance_columns(metadata),
    )


def _digest(fp):
    """(size, sha256 hex, the first chunk) of a file."""
    hasher = hashlib.sha256()
    head = fp.read(_HASH_CHUNK)
    hasher.update(head)
    size = len(head)
    while chunk := fp.read(_HASH_CHUNK):
        hasher.update(chunk)
        size += len(chunk)
    return size, hasher.hexdigest(), head


def _read_header(fp):
    fp.seek(0)
    head = fp.read(132)
    if head[128:132] == b"DICM":
        force = False
    elif head[:2] == b"\x02\x00":
        force = True  # Part 10 without the preamble: File Meta Information first
    else:
        raise IngestFailure(CANNOT_UNDERSTAND,
                            "not a DICOM Part 10 file: no 'DICM' prefix and no File Meta Information")
    fp.seek(0)
    try:
        dataset = pydicom.dcmread(fp, stop_before_pixels=True, force=force)
    except Exception as exc:  # noqa: BLE001 - whatever pydicom raises, the bytes are unreadable
        raise IngestFailure(CANNOT_UNDERSTAND, f"cannot parse the data set: {exc}") from None
    if not dataset.file_meta:
        raise IngestFailure(CANNOT_UNDERSTAND, "the file has no File Meta Information")
    return dataset, fp.tell()


def _check_complete(dataset):
    """A value shorter than its declared length means the file was cut short."""
    for raw in dataset._dict.values():
        length = getattr(raw, "length", None)
        value = getattr(raw, "value", None)
        if length is not None and length != 0xFFFFFFFF and isinstance(value, bytes) \
                and len(value) < length:
            raise IngestFailure(CANNOT_UNDERSTAND,
                                f"the file is truncated inside element {raw.tag}")


def _check_no_partial_header(dataset, size):
    """pydicom reads past the last 1-7 bytes of a file that ends inside an element header
    without a word: when the last element ends that short of the end, the file was cut."""
    if not dataset._dict:
        return
    last = dataset._dict[max(dataset._dict)]
    tell, length = getattr(last, "value_tell", None), getattr(last, "length", None)
    if tell is None or length is None or length == 0xFFFFFFFF:
        return
    if 0 < size - (tell + length) < 8:
        raise IngestFailure(CANNOT_UNDERSTAND, "the file is truncated inside an element header "
                                               f"at byte {tell + length}")


def _identify(dataset, study_uid):
    sop_class_uid = _text(dataset, "SOPClassUID")
    if not sop_class_uid:
        raise IngestFailure(SOP_CLASS_NOT_SUPPORTED, "the data set has no SOPClassUID")
    if not is_valid_uid(sop_class_uid):
        raise IngestFailure(SOP_CLASS_NOT_SUPPORTED, f"SOPClassUID {sop_class_uid!r} is not a UID")
    found = []
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        value = _text(dataset, keyword)
        if not value:
            raise IngestFailure(DATA_SET_MISMATCH, f"the data set has no {keyword}")
        if not is_valid_uid(value):
            raise IngestFailure(DATA_SET_MISMATCH, f"{keyword} {value[:80]!r} is not a valid UID")
        found.append(value)
    check_study(found[0], study_uid)
    return found[0], found[1], found[2], sop_class_uid


def check_study(found, study_uid):
    """IngestFailure unless an instance of study found may be stored under the URL's study_uid
    (PS3.18 §10.5.1: every instance of a STOW to …/studies/{study} belongs to that study)."""
    if study_uid is not None and found != study_uid:
        raise IngestFailure(DATA_SET_MISMATCH,
                            f"StudyInstanceUID {found} does not match the URL's {study_uid}")


def _text(dataset, keyword):
    try:
        value = dataset.get(keyword)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for bad values
        raise IngestFailure(CANNOT_UNDERSTAND, f"cannot read {keyword}: {exc}") from None
    if value is None:
        return ""
    return str(value).strip("\x00 ")


def _to_json(dataset, bulk_prefix):
    try:
        return jsonmodel.dataset_to_json(dataset, bulk_prefix)
    except IngestFailure:
        raise
    except Exception as exc:  # noqa: BLE001 - any unconvertible value means "cannot understand"
        raise IngestFailure(CANNOT_UNDERSTAND, f"cannot convert the data set: {exc}") from None


def _pixel_element(fp, position, dataset, transfer_syntax):
    try:
        return frame_table.read_pixel_element(
            fp, position, implicit_vr=dataset.original_encoding[0] is True,
            little_endian=dataset.original_encoding[1] is not False)
    except frame_table.FrameTableError as exc:
        raise IngestFailure(CANNOT_UNDERSTAND, str(exc)) from None


def _number_of_frames(dataset):
    try:
        value = int(dataset.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        return 1
    return max(value, 1)


def _frames(fp, pixel, dataset, transfer_syntax, size, number_of_frames):
    if pixel is None:
        return None
    try:
        if pixel.encapsulated:
            if transfer_syntax not in ENCAPSULATED:
                raise IngestFailure(CANNOT_UNDERSTAND,
                                    f"encapsulated pixel data in native {transfer_syntax}")
            eot = dataset.get(0x7FE00001)
            return frame_table.encapsulated_frames(
                fp, pixel, size, number_of_frames, transfer_syntax,
                eot.value if eot is not None else None)
        rows, columns = dataset.get("Rows"), dataset.get("Columns")
        bits = dataset.get("BitsAllocated")
        if not rows or not columns or not bits:
            raise IngestFailure(DATA_SET_MISMATCH,
                                "pixel data without Rows, Columns and BitsAllocated")
        samples = int(dataset.get("SamplesPerPixel") or 1)
        photometric = str(dataset.get("PhotometricInterpretation", "")).strip()
        return frame_table.native_frames(pixel, size, number_of_frames, int(rows),
                                         int(columns), samples, int(bits), photometric)
    except frame_table.FrameTableError as exc:
        raise IngestFailure(CANNOT_UNDERSTAND, str(exc)) from None


def _level(metadata, tags):
    return {tag: metadata[tag] for tag in tags if tag in metadata}


def _instance_columns(metadata):
    return {
        "instance_number": _int(jsonmodel.first_value(metadata, "00200013")),
        "rows": _int(jsonmodel.first_value(metadata, "00280010")),
        "columns": _int(jsonmodel.first_value(metadata, "00280011")),
        "bits_allocated": _int(jsonmodel.first_value(metadata, "00280100")),
    }


def _int(value):
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


_PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)
_TRAILING_PADDING = 0xFFFCFFFC
_MAX_TRAILER = 64 << 20


def _deflated(fp, header, bulk_prefix):
    """(metadata, number of frames) of a Deflated Explicit VR Little Endian file."""
    fp.seek(0)
    try:
        dataset = pydicom.dcmread(fp, force=True)
    except Exception as exc:  # noqa: BLE001 - whatever pydicom raises, the bytes are unreadable
        raise IngestFailure(CANNOT_UNDERSTAND, f"cannot inflate the data set: {exc}") from None
    pixel = None
    for tag in _PIXEL_TAGS + (_TRAILING_PADDING,):
        if tag in dataset:
            element = dataset[tag]
            del dataset[tag]
            if tag != _TRAILING_PADDING:
                pixel = (tag, element.VR)
    metadata = _to_json(dataset, bulk_prefix)
    if pixel is None:
        return metadata, 0
    metadata[f"{pixel[0]:08X}"] = {"vr": pixel[1], "BulkDataURI": f"{bulk_prefix}/{pixel[0]:08X}"}
    return metadata, _number_of_frames(header)


def _trailer(fp, pixel, dataset, size, bulk_prefix):
    """The DICOM JSON of the elements after the pixel data (private groups such as
    (7FE1,xxxx) are metadata too); trailing padding (FFFC,FFFC) has no meaning."""
    end = frame_table.element_end(fp, pixel, size)
    if end >= size or size - end > _MAX_TRAILER:
        return {}
    fp.seek(end)
    data = fp.read(size - end)
    try:
        from pydicom.filereader import read_dataset

        trailer = read_dataset(io.BytesIO(data), dataset.original_encoding[0] is True,
                               dataset.original_encoding[1] is not False)
        trailer.pop(_TRAILING_PADDING, None)
        if not trailer:
            return {}
        if "SpecificCharacterSet" in dataset:  # the trailer's text is in the set's encoding
            trailer.SpecificCharacterSet = dataset.SpecificCharacterSet
        document = _to_json(trailer, bulk_prefix)
    except IngestFailure:
        raise
    except Exception as exc:  # noqa: BLE001 - unreadable trailer elements
        raise IngestFailure(CANNOT_UNDERSTAND,
                            f"cannot read the elements after the pixel data: {exc}") from None
    document.pop("00080005", None)
    return document


def _check_trailer(fp, pixel, dataset, size):
    """A file cut inside what follows the pixel data (padding, say) is truncated too."""
    try:
        frame_table.check_trailer(fp, frame_table.element_end(fp, pixel, size), size,
                                  implicit_vr=dataset.original_encoding[0] is True,
                                  little_endian=dataset.original_encoding[1] is not False)
    except frame_table.FrameTableError as exc:
        raise IngestFailure(CANNOT_UNDERSTAND, str(exc)) from None
