"""The DICOM JSON model (PS3.18 Annex F) of a stored instance.

The converter reads pydicom's raw elements directly for the common, plain
cases (ASCII strings, numbers, binary) and hands everything else (character
sets, person names with groups, UN, AT, ambiguous VRs) to pydicom's own
per-element conversion, so the result equals ``Dataset.to_json_dict`` while
costing a fraction of it on the ingest hot path.

BulkDataURIs (PS3.18 §F.2.6) name the element's tag path in the instance.
They are stored relative to the store's DICOMweb root behind the
``litevna:`` prefix and made absolute when a response is written, so stored
metadata survives a change of host name.
"""

import base64
import re
import struct

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement

#: Binary values longer than this (in base64 characters) become BulkDataURIs.
BULK_DATA_THRESHOLD = 1024
URI_PREFIX = "litevna:"
_BULK_BYTES = (BULK_DATA_THRESHOLD // 4) * 3  # pydicom's rule: raw length vs threshold

_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
_NUMBERS = {"US": ("H", 2), "SS": ("h", 2), "UL": ("I", 4), "SL": ("i", 4),
            "FL": ("f", 4), "FD": ("d", 8), "SV": ("q", 8), "UV": ("Q", 8)}
# How pydicom strips and splits each string VR (pydicom.values).
_WHOLE_STRIP_SPLIT = frozenset({"AS", "CS", "DA", "DT", "TM", "UI"})
_SPLIT_STRIP_EACH = frozenset({"LO", "SH", "UC"})
_SINGLE = frozenset({"LT", "ST", "UT"})
_INT = re.compile(r"\s*[+-]?\d+\s*\Z", re.ASCII)
_FLOAT = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*\Z", re.ASCII)


def bulkdata_prefix(study_uid, series_uid, sop_instance_uid):
    """The relative BulkDataURI stem of one instance."""
    return (f"{URI_PREFIX}/studies/{study_uid}/series/{series_uid}"
            f"/instances/{sop_instance_uid}/bulkdata")


def dataset_to_json(dataset, bulk_prefix, _path=""):
    """The DICOM JSON dict of dataset; nested bulk data gets tag/item paths."""
    out = {}
    for tag, element in dataset._dict.items():
        if tag >> 16 == 0x0002:
            continue  # File Meta Information is not part of the data set (PS3.18 §F.2)
        key = f"{tag:08X}"
        uri = f"{bulk_prefix}/{_path}{key}"
        value = _fast(element, uri) if isinstance(element, RawDataElement) else None
        if value is None:
            element = dataset[tag]
            if element.VR == "SQ":
                items = [dataset_to_json(item, bulk_prefix, f"{_path}{key}/{index}/")
                         for index, item in enumerate(element.value)]
                value = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
            else:
                value = element.to_json_dict(lambda _element, uri=uri: uri, BULK_DATA_THRESHOLD)
        out[key] = value
    return out


def _fast(raw, uri):
    """The JSON of a plain raw element, or None to let pydicom convert it."""
    vr = raw.VR
    if vr is None:
        try:
            vr = dictionary_VR(raw.tag)
        except KeyError:
            return None
    value = raw.value
    if value is None or raw.length == 0xFFFFFFFF:
        return None
    if vr in _BINARY:
        if not value:
            return {"vr": vr}
        if len(value) > _BULK_BYTES:
            return {"vr": vr, "BulkDataURI": uri}
        return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}
    number = _NUMBERS.get(vr)
    if number is not None:
        code, size = number
        count, rest = divmod(len(value), size)
        if rest:
            return None
        if not count:
            return {"vr": vr}
        values = struct.unpack(("<" if raw.is_little_endian else ">") + code * count, value)
        if code in "fd" and any(v != v or v in (float("inf"), float("-inf")) for v in values):
            return None
        return {"vr": vr, "Value": list(values)}
    if not value.isascii() or b"\x1b" in value:
        return None
    text = value.decode("ascii")
    if vr in _WHOLE_STRIP_SPLIT:
        text = text.rstrip(" \x00")
        return {"vr": vr, "Value": text.split("\\")} if text else {"vr": vr}
    if vr in _SPLIT_STRIP_EACH:
        parts = [p.rstrip("\x00 ") for p in text.split("\\")]
        return {"vr": vr} if parts == [""] else {"vr": vr, "Value": parts}
    if vr in _SINGLE:
        text = text.rstrip("\x00 ")
        return {"vr": vr, "Value": [text]} if text else {"vr": vr}
    if vr == "AE":
        parts = [p.strip() for p in text.split("\\")]
        return {"vr": vr} if parts == [""] else {"vr": vr, "Value": parts}
    if vr == "IS":
        parts = text.strip().rstrip("\x00").split("\\") if text.strip(" \x00") else []
        if not all(_INT.match(p) for p in parts):
            return None
        return {"vr": vr, "Value": [int(p) for p in parts]} if parts else {"vr": vr}
    if vr == "DS":
        parts = text.strip().rstrip("\x00").split("\\") if text.strip(" \x00") else []
        if not all(_FLOAT.match(p) for p in parts):
            return None
        return {"vr": vr, "Value": [float(p) for p in parts]} if parts else {"vr": vr}
    if vr == "PN":
        text = text.rstrip("\x00 ")
        if not text:
            return {"vr": vr}
        parts = text.split("\\")
        if any("=" in p or not p for p in parts):
            return None
        return {"vr": vr, "Value": [{"Alphabetic": p} for p in parts]}
    return None


def absolute(document, base_url):
    """Replace the relative URI prefix in serialized JSON bytes with base_url."""
    return document.replace(b'"' + URI_PREFIX.encode(), b'"' + base_url.encode())


def first_value(attrs, tag):
    """The first value of tag in a DICOM JSON dict (a PN's Alphabetic group)."""
    values = attrs.get(tag, {}).get("Value")
    if not values:
        return None
    value = values[0]
    return value.get("Alphabetic") if isinstance(value, dict) else value
