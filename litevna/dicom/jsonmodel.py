"""The DICOM JSON model (PS3.18 Annex F) of a stored instance.

Values come from pydicom's per-element conversion; this module adds what
pydicom cannot know: where each bulk data element lives, so that its
BulkDataURI (PS3.18 §F.2.6) can be resolved later. URIs are stored relative to
the store's DICOMweb root behind the ``litevna:`` prefix and made absolute
when a response is written, so stored metadata survives a change of host name.
"""

#: Binary values longer than this (in base64 characters) become BulkDataURIs.
BULK_DATA_THRESHOLD = 1024
URI_PREFIX = "litevna:"


def bulkdata_prefix(study_uid, series_uid, sop_instance_uid):
    """The relative BulkDataURI stem of one instance."""
    return (f"{URI_PREFIX}/studies/{study_uid}/series/{series_uid}"
            f"/instances/{sop_instance_uid}/bulkdata")


def dataset_to_json(dataset, bulk_prefix, _path=""):
    """The DICOM JSON dict of dataset; nested bulk data gets tag/item paths."""
    out = {}
    for element in dataset:
        tag = f"{element.tag:08X}"
        if element.tag.group == 0x0002:
            continue  # File Meta Information is not part of the data set (PS3.18 §F.2)
        if element.VR == "SQ":
            items = [dataset_to_json(item, bulk_prefix, f"{_path}{tag}/{index}/")
                     for index, item in enumerate(element.value)]
            out[tag] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
            continue
        uri = f"{bulk_prefix}/{_path}{tag}"
        out[tag] = element.to_json_dict(lambda _element, uri=uri: uri, BULK_DATA_THRESHOLD)
    return out


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
